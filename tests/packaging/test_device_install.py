"""``pip install agata-flmngr`` is what a device needs: in a virtualenv holding the wheel and
exactly the distributions its plain requirements pull (no extra: no torch, psycopg, matplotlib
or docker), every device module imports, the client gateway starts and stops cleanly, and the
client task manager asked for the docker executor names the extra to install."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from support import CLIENT_TOKEN, REPO_ROOT, free_port, isolated_environ

EXTRAS_ONLY = {"torch", "psycopg", "psycopg-binary", "matplotlib", "docker"}
"""Distributions a device-only install must not have."""
EXTRAS_MODULES = ("docker", "matplotlib", "psycopg", "torch")
"""What they are imported as."""
DEVICE_PACKAGES = ("client_gateway", "client_task_manager", "task_daemon_lib", "flower_runtime",
                   "agata_contracts", "microservice_interconnect", "agata_common", "agata_cli")
NEEDS_AN_EXTRA = {"task_daemon_lib.containers", "task_daemon_lib.container_owners",
                  "task_daemon_lib.container_spec",
                  "agata_common.database", "agata_common.migrate"}
"""Device-package modules loaded only when an extra is installed (docker's executor, the
cloud's databases)."""


def project() -> dict[str, list[str]]:
    """The plain requirements and each extra's, from ``pyproject.toml``."""
    table = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return {"": table["dependencies"], **table["optional-dependencies"]}


def closure(requirements: list[str]) -> set[str]:
    """The installed distributions ``requirements`` pull, by canonical name (markers evaluated
    here, extras followed)."""
    found: set[str] = set()
    todo = [(Requirement(text), "") for text in requirements]
    while todo:
        requirement, extra = todo.pop()
        if requirement.marker and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        if name == "agata-flmngr":
            todo += [(Requirement(text), "") for wanted in requirement.extras
                     for text in project()[wanted]]
            continue
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue  # an optional dependency this environment does not have either
        new = name not in found
        found.add(name)
        for wanted in ("", *requirement.extras) if new else requirement.extras:
            todo += [(Requirement(text), wanted) for text in dist.requires or []]
    return found


def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True,
                          **kwargs)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory, project_wheel: Path) -> Path:
    """A fresh virtualenv with the project's wheel and, linked from this environment, only the
    distributions a plain ``pip install agata-flmngr`` brings."""
    root = tmp_path_factory.mktemp("device")
    venv = root / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    # without PYTHONPATH: the source tree's egg-info would pass for the installed project
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--quiet",
         str(project_wheel)], env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    deps = root / "deps"
    deps.mkdir()
    for name in closure(project()[""]):
        dist = distribution(name)
        for top in {Path(str(file)).parts[0] for file in dist.files or []} - {".."}:
            target = Path(str(dist.locate_file(top)))
            if target.exists() and not (deps / top).exists():
                (deps / top).symlink_to(target)
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                                        "['purelib'])"]).stdout.strip())
    (site / "zz_device_dependencies.pth").write_text(f"{deps}\n")
    return venv


def environ(tmp_path: Path, **overrides: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith(("AGATA_", "PYTHON", "VIRTUAL_ENV"))}
    return {**keep, **isolated_environ(tmp_path, AGATA_CLIENT_PARAMS_CLIENT_TOKEN=CLIENT_TOKEN,
                                       AGATA_CLIENT_PARAMS_CLOUD_URL=f"http://127.0.0.1:{free_port()}",
                                       **overrides)}


@pytest.mark.unit
def test_a_plain_install_pulls_no_extra_and_dev_pulls_every_extra() -> None:
    assert not closure(project()[""]) & EXTRAS_ONLY
    assert {"flwr", "pika", "aiohttp", "pydantic", "numpy"} <= closure(project()[""])
    dev = [Requirement(text) for text in project()["dev"]]
    pulled = {extra for r in dev if r.name == "agata-flmngr" for extra in r.extras}
    assert pulled == set(project()) - {"", "dev"}


def test_every_device_module_imports_without_the_extras(device: Path, tmp_path: Path) -> None:
    probe = (
        "import importlib, importlib.util, pkgutil, sys\n"
        f"skip = {sorted(NEEDS_AN_EXTRA)!r}\n"
        f"for package in {list(DEVICE_PACKAGES)!r}:\n"
        "    module = importlib.import_module(package)\n"
        "    assert module.__file__.startswith(sys.prefix), module.__file__\n"
        "    for info in pkgutil.walk_packages(module.__path__, package + '.'):\n"
        "        if info.name not in skip and not info.name.endswith('.__main__'):\n"
        "            importlib.import_module(info.name)\n"
        f"print([n for n in {list(EXTRAS_MODULES)!r} if importlib.util.find_spec(n)])\n"
    )
    result = subprocess.run([str(device / "bin" / "python"), "-c", probe], cwd=tmp_path,
                            env=environ(tmp_path), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result  # none of the extras' packages is there


def test_the_client_gateway_starts_and_stops_cleanly(device: Path, tmp_path: Path) -> None:
    log = tmp_path / "client_gateway.log"
    with log.open("wb") as out:
        process = subprocess.Popen([str(device / "bin" / "python"), "-m", "client_gateway"],
                                   cwd=tmp_path, env=environ(tmp_path), stdout=out,
                                   stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while "client_gateway running" not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(20)
    text = log.read_text()
    assert code == 0 and "Traceback" not in text, text


def test_the_docker_executor_without_its_extra_names_it(device: Path, tmp_path: Path) -> None:
    result = subprocess.run([str(device / "bin" / "python"), "-m", "client_task_manager"],
                            cwd=tmp_path, env=environ(tmp_path,
                                                      AGATA_CLIENT_PARAMS_EXECUTOR="docker"),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "pip install 'agata-flmngr[docker]'" in result.stderr
    assert "Traceback" not in result.stderr
