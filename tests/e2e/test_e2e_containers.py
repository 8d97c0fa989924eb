"""The docker executor end to end: the NumPy app with every task process in a container (the
ServerApp host on the cloud, each device's ClientApp worker), on a real Docker engine.

Skipped, with the reason printed, only where no engine answers (``scripts/docker_engine.sh``
starts one and builds the image; ``scripts/test.sh`` runs it first).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import REPO_ROOT, wait_for

from agata_common.device_identity import load_secret
from experiments.processes import free_port
from experiments.stack import TASKS_DIR, Stack
from task_daemon_lib.containers import DEFAULT_IMAGE, engine_available, running_containers

REASON = engine_available(DEFAULT_IMAGE)
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

PROBE = '''

def _leave_probe(context: Context) -> None:
    import os
    from pathlib import Path

    results = Path(os.environ["AGATA_RESULTS_DIR"])
    lines = [f"{key}={value}" for key, value in sorted(os.environ.items())]
    lines.append(f"in-container={Path('/.dockerenv').exists()}")
    lines.append(f"project-folder-visible={Path('REPO_ROOT', 'README.md').exists()}")
    own = (Path(__file__).resolve().parents[1], Path(os.environ["AGATA_RESULTS_DIR"]))
    work = own[0].parents[1]
    others = [str(p) for p in work.rglob("*")
              if p.is_file() and not any(p.is_relative_to(o) for o in own)]
    lines.append(f"other-files-visible={others}")
    try:
        Path(__file__).with_name("written.txt").write_text("x")
        lines.append("app-folder=writable")
    except OSError:
        lines.append("app-folder=read-only")
    (results / "probe.txt").write_text("\\n".join(lines) + "\\n")
'''


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    started = Stack(tmp_path / "stack", client_count=2,
                    client_params={"request_interval": "1", "executor": "docker",
                                   "container_memory_mb": "1024"},
                    cloud_overrides={"AGATA_CLOUD_TASK_MANAGER_EXECUTOR": "docker"})
    try:
        yield started
    finally:
        codes = started.stop()
        assert all(code == 0 for code in codes.values()), codes


def probe_app(folder: Path) -> Path:
    """The NumPy app whose ClientApp also writes what it sees into its results."""
    app = folder / "probe_app"
    shutil.copytree(TASKS_DIR / "app_numpy", app, ignore=shutil.ignore_patterns("__pycache__"))
    client = app / "numpyapp" / "client_app.py"
    source = client.read_text().replace(
        '    server_round = int(msg.content["config"]["server-round"])',
        '    _leave_probe(context)\n    server_round = int(msg.content["config"]["server-round"])')
    client.write_text(source + PROBE.replace("REPO_ROOT", str(REPO_ROOT)))
    manifest = app / "pyproject.toml"
    manifest.write_text(manifest.read_text().replace('results = ["final.npy"]',
                                                     'results = ["final.npy", "probe.txt"]'))
    return app


def test_the_numpy_app_runs_in_containers_with_no_host_secret_inside(
        stack: Stack, tmp_path: Path) -> None:
    api = stack.start_cloud()
    devices = stack.start_clients()
    for device in devices:  # another task's files on the device, which no container may see
        decoy = stack.out_dir / device / "client_tasks" / "task_other" / "run_1" / "data.txt"
        decoy.parent.mkdir(parents=True)
        decoy.write_text("another task's data")
    stack.create_task("boxed", probe_app(tmp_path), free_port(), devices=2,
                      server_arguments={"num-server-rounds": 2})
    api.post("/rpc_exec_start_server_task", {"task_id": "boxed"})
    task = api.wait_until_ended("boxed", 120)
    assert task["status"] == "finished", task

    def probes() -> list[str] | None:
        files = api.get("/api/tasks/boxed/results")["files"]
        found = [f["path"] for f in files if f["path"].endswith("/probe.txt")]
        return found if len(found) == 2 else None

    paths = wait_for(probes, 30, "both devices' probes")
    assert stack.deployment is not None
    secrets = {stack.deployment.api_token,
               *(load_secret(stack.out_dir / device, device) for device in devices)}
    assert None not in secrets
    for path in paths:
        probe = api.download(f"/api/tasks/boxed/runs/1/results/{path}").decode()
        assert "in-container=True" in probe, probe
        assert "app-folder=read-only" in probe, probe
        # another task's files (a decoy put there), other runs' results: not there at all
        assert "other-files-visible=[]" in probe, probe
        # the runtime's packages are mounted, never the folder around them (data may be there)
        assert "project-folder-visible=False" in probe, probe
        assert "AGATA_RESULTS_DIR=" in probe
        assert not any(secret in probe for secret in secrets), probe
        assert "TOKEN" not in probe and "DATABASE" not in probe, probe
    assert sorted(r["client_id"] for r in api.get("/api/tasks/boxed/reports")["reports"]
                  if r["status"] == "finished") == sorted(devices)
    # a container serves one run (no spares: it sees only that run's folders); none is left
    assert stack.processes is not None
    owners = {p.pid for name, p in stack.processes.processes.items()
              if name.endswith("task_manager")}
    codes = stack.stop()
    assert all(code == 0 for code in codes.values()), codes
    assert wait_for(lambda: not any(running_containers(owner) for owner in owners), 15,
                    "the managers' containers to be removed")
