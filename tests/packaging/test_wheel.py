"""The wheel serves the web interface and loads its default configuration when installed in a
fresh virtualenv and run from outside the source tree."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from support import REPO_ROOT, free_port


def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True,
                          **kwargs)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, project_wheel: Path) -> Path:
    """A fresh virtualenv holding the project's wheel; its dependencies come from this
    environment's site-packages (read-only), the project itself only from the wheel."""
    root = tmp_path_factory.mktemp("wheel")
    wheel = project_wheel
    venv = root / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                                        "['purelib'])"]).stdout.strip())
    # a plain path entry: the dependencies, without the editable install's finder
    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # without PYTHONPATH: a source tree's egg-info on it would pass for the installed project
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--quiet", str(wheel)], env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    return venv


def clean_environ(tmp: Path, **extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith(("AGATA_", "PYTHON", "VIRTUAL_ENV"))}
    return {**keep, "AGATA_STORAGE_DATA_DIR": str(tmp / "data"), **extra}


def test_the_installed_package_comes_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    probe = ("import agata_common.config as c, cloud_gateway, cloud_web_interface as w;"
             "print(cloud_gateway.__file__); print(c.DEFAULT_CONFIG_PATH); print(w.WEB_DIR);"
             "s = c.load_settings(environ={}); print(s.server_gateway.port, s.source)")
    lines = run([str(installed / "bin" / "python"), "-c", probe], cwd=tmp_path,
                env=clean_environ(tmp_path)).stdout.splitlines()
    for line in lines[:3]:
        assert line.startswith(str(installed)), lines
    assert (Path(lines[2]) / "index.html").is_file()
    assert lines[3].startswith("9001 ") and lines[3].endswith("config.ini"), lines


def test_the_installed_gateway_serves_the_web_interface(installed: Path, tmp_path: Path) -> None:
    port = free_port()
    environ = clean_environ(tmp_path, AGATA_SERVER_GATEWAY_PORT=str(port),
                            AGATA_SERVER_BROKER_QUEUE_PREFIX=f"wheel-{port}.")
    gateway = subprocess.Popen([str(installed / "bin" / "python"), "-m", "cloud_gateway"],
                               cwd=tmp_path, env=environ, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        pages: dict[str, bytes] = {}
        deadline = time.monotonic() + 60
        for path in ("/ui/", "/ui/css/app.css", "/ui/js/app.js", "/ui/js/pages/dashboard.js"):
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}",
                                                timeout=5) as response:
                        assert response.status == 200
                        pages[path] = response.read()
                        break
                except (urllib.error.URLError, ConnectionError):
                    if time.monotonic() > deadline or gateway.poll() is not None:
                        raise
                    time.sleep(0.1)
        assert b"<html" in pages["/ui/"] and b"js/pages/dashboard.js" in pages["/ui/"]
        assert b"export" in pages["/ui/js/app.js"]
    finally:
        gateway.terminate()
        _, errors = gateway.communicate(timeout=20)
    assert "Traceback" not in errors, errors


def test_the_wheel_carries_the_top_level_config_as_a_file(installed: Path,
                                                          tmp_path: Path) -> None:
    probe = "import agata_common.config as c; print(c.DEFAULT_CONFIG_PATH)"
    shipped = Path(run([str(installed / "bin" / "python"), "-c", probe], cwd=tmp_path,
                       env=clean_environ(tmp_path)).stdout.strip())
    assert not shipped.is_symlink()
    assert shipped.read_text() == (REPO_ROOT / "config.ini").read_text()


def test_the_wheel_carries_the_schema_migrations(installed: Path, tmp_path: Path) -> None:
    probe = ("import sys; from pathlib import Path; from agata_common.database import make_engine;"
             "from cloud_task_manager import migrations as t; from user_manager import migrations"
             " as u; e = make_engine('', Path(sys.argv[1])); t.upgrade(e); u.upgrade(e);"
             "print(t.__file__); print(sorted(e.connect().exec_driver_sql(\"SELECT name FROM "
             "sqlite_master WHERE name LIKE 'alembic_version%'\").scalars()))")
    lines = run([str(installed / "bin" / "python"), "-c", probe, str(tmp_path / "db.sqlite")],
                cwd=tmp_path, env=clean_environ(tmp_path)).stdout.splitlines()
    assert lines[0].startswith(str(installed)), lines
    assert lines[1] == "['alembic_version_task_manager', 'alembic_version_user_manager']"
