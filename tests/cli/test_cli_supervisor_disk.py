"""The supervisor on a bad disk day: a state file it cannot write, log files it cannot write."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

from support import wait_for

from agata_cli.local_deployment import Service
from agata_cli.log_pump import LogPump
from agata_cli.supervisor import Supervisor


def test_an_unwritable_state_file_is_logged_and_the_services_run_on(tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the state folder should be")
    (tmp_path / "sleeper.py").write_text("import time\ntime.sleep(120)\n")
    supervisor = Supervisor([Service("sleeper", "sleeper", {"PYTHONPATH": str(tmp_path)})],
                            tmp_path / "logs", blocked / "up.json", grace_s=2)
    supervisor.start()
    try:
        assert supervisor.state_unwritten is not None
        item = supervisor.watched[0]
        assert item.process is not None and item.process.poll() is None
        supervisor.state_file = tmp_path / "up.json"  # space is back
        supervisor.check()
        assert supervisor.state_unwritten is None
        assert json.loads((tmp_path / "up.json").read_text())["services"][0]["state"] == \
            "running"
    finally:
        codes = supervisor.stop()
    assert set(codes) == {"sleeper"}


def test_a_services_errors_reach_stderr_when_its_log_cannot_be_written(tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the log folder should be")
    read, write = os.pipe()
    fallback = io.StringIO()
    pump = LogPump("cloud_gateway", os.fdopen(read, "rb"), blocked / "cloud_gateway.log",
                   fallback)
    with os.fdopen(write, "wb") as output:
        output.write(b"2026-12-07 INFO aiohttp.access: GET /health 200\n")
        output.write(b"2026-12-07 ERROR cloud_gateway.app: GET /api/tasks failed "
                     b"[error 0123456789ab]\n")
    pump.join(10)
    assert pump.failing
    assert "[cloud_gateway]" in fallback.getvalue()
    assert "[error 0123456789ab]" in fallback.getvalue()
    assert "GET /health" not in fallback.getvalue()


def test_a_log_pump_copies_every_line_into_its_file(tmp_path: Path) -> None:
    read, write = os.pipe()
    log = tmp_path / "service.log"
    pump = LogPump("service", os.fdopen(read, "rb"), log, io.StringIO())
    with os.fdopen(write, "wb") as output:
        output.write(b"one\ntwo\n")
    pump.join(10)
    wait_for(lambda: log.read_bytes() == b"one\ntwo\n", 5, "both lines in the log")
    assert not pump.failing


def test_agata_status_says_the_disk_is_full(tmp_path: Path) -> None:
    (tmp_path / "up.json").write_text(json.dumps({
        "supervisor_pid": os.getpid(), "url": "http://127.0.0.1:1", "services": []}))
    environ = {**os.environ, "AGATA_STORAGE_MIN_FREE_MB": str(2**30)}  # a floor of a PiB
    shown = subprocess.run([sys.executable, "-m", "agata_cli", "status", "--data-dir",
                            str(tmp_path)], capture_output=True, text=True, timeout=30,
                           env=environ)
    assert shown.returncode == 0, shown.stderr
    assert "disk full: " in shown.stdout and str(tmp_path) in shown.stdout
    quiet = subprocess.run([sys.executable, "-m", "agata_cli", "status", "--data-dir",
                            str(tmp_path), "--json"], capture_output=True, text=True,
                           timeout=30)
    assert json.loads(quiet.stdout)["disk"] == "ok"
