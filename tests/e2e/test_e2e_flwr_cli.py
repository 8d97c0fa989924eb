"""Flower's own CLI (the installed ``flwr``) against a running stack over HTTPS: ``flwr login``
approved as the signed-in web page approves it, ``flwr run --stream``, ``flwr ls``, ``flwr
log``, ``flwr stop`` of a long run and ``flwr pull``; the Control API refuses a call without a
CLI session's token, the operator token's included."""

from __future__ import annotations

import io
import json
import os
import re
import selectors
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import make_ca, make_server_cert, wait_for

from experiments.stack import TASKS_DIR, Stack, TlsFiles

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command")

FLWR = Path(sys.executable).parent / "flwr"
CONNECTION = "agata"


@pytest.fixture
def tls_stack(tmp_path: Path) -> Iterator[Stack]:
    certs = tmp_path / "certs"
    certs.mkdir()
    ca = make_ca(certs, "agata-ca")
    cert, key = make_server_cert(certs, "agata-ca")
    started = Stack(tmp_path / "stack", client_count=2,
                    client_params={"request_interval": "2", "task_retry_s": "300"},
                    tls=TlsFiles(cert, key, ca))
    try:
        yield started
    finally:
        codes = started.stop()
        assert all(code == 0 for code in codes.values()), codes


class Flwr:
    """The ``flwr`` command with a Flower home of its own naming our cloud."""

    def __init__(self, home: Path, address: str, ca: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "{address}"\nroot-certificates = "{ca}"\n')
        self.environ = {**os.environ, "FLWR_HOME": str(home), "BROWSER": "true",
                        "FLWR_TELEMETRY_ENABLED": "0", "PYTHONUNBUFFERED": "1",
                        "PATH": f"{FLWR.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.cwd = home

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(FLWR), *args], env=self.environ, cwd=self.cwd, text=True,
                              capture_output=True, timeout=timeout, check=False)

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([str(FLWR), *args], env=self.environ, cwd=self.cwd, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def read_until(process: subprocess.Popen[str], pattern: str,
               timeout: float = 60) -> tuple[re.Match[str], str]:
    """Read the process's output until ``pattern`` shows; its match and what was read."""
    assert process.stdout is not None
    seen = ""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout.fileno(), selectors.EVENT_READ)
        while (match := re.search(pattern, seen)) is None:
            assert time.monotonic() < deadline, f"no {pattern!r} within {timeout} s: {seen}"
            if selector.select(timeout=1):
                data = os.read(process.stdout.fileno(), 65536)
                assert data, f"the output ended without {pattern!r}: {seen}"
                seen += data.decode(errors="replace")
    return match, seen


def finish(process: subprocess.Popen[str], timeout: float) -> str:
    """The rest of the process's output once it exited on its own (killed if it did not)."""
    try:
        rest, _ = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return rest


def login(flwr: Flwr, approve: Any) -> None:
    """``flwr login``, approved by the operator as the web page does it."""
    process = flwr.start("login", CONNECTION)
    try:
        match, seen = read_until(process, r"flwr-login\.html\?code=([A-Z]{4}-[A-Z]{4})")
        assert approve(match.group(1)) == {"approved": True}
    finally:
        rest = finish(process, 60)
    assert process.returncode == 0, seen + rest
    assert "Login successful" in seen + rest


def runs(flwr: Flwr) -> dict[int, dict[str, Any]]:
    listed = flwr("ls", CONNECTION, "--format", "json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    return {int(run["run-id"]): run for run in json.loads(listed.stdout)["runs"]}


def post_control(url: str, ca: Path, method: str, token: str | None) -> int:
    """The HTTP status of an empty Control API call (a raw client, not the CLI)."""
    headers = {"Content-Type": "application/protobuf"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"{url}/v1/control/{method}", data=b"", headers=headers,
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10,  # noqa: S310 (the test's own URL)
                                    context=ssl.create_default_context(cafile=str(ca))) as r:
            return int(r.status)
    except urllib.error.HTTPError as error:
        assert error.headers.get("WWW-Authenticate") == "Bearer"
        return int(error.code)


def test_flwr_cli_logs_in_runs_lists_follows_stops_and_pulls_over_tls(
        tls_stack: Stack, tmp_path: Path) -> None:
    api = tls_stack.start_cloud()
    tls_stack.start_clients()
    assert tls_stack.tls is not None
    address = api.url.removeprefix("https://")
    flwr = Flwr(tmp_path / "flwr-home", address, tls_stack.tls.ca)
    app = tmp_path / "app_numpy"
    shutil.copytree(TASKS_DIR / "app_numpy", app,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))

    # nothing without a login: the CLI is refused, and so is a raw call with no token or
    # with the operator token (it never opens the Control API)
    refused = flwr("ls", CONNECTION)
    assert refused.returncode != 0
    assert "flwr login" in refused.stdout + refused.stderr
    for method in ("list-runs", "start-run", "stream-logs", "stop-run", "pull-artifacts"):
        assert post_control(api.url, tls_stack.tls.ca, method, None) == 401
        assert post_control(api.url, tls_stack.tls.ca, method, api.token) == 401

    login(flwr, lambda code: api.post("/api/flwr/logins/approve", {"user_code": code}))
    assert len(api.get("/api/flwr/sessions")["sessions"]) == 1

    refused = flwr("run", str(app), CONNECTION, "--run-config", "no-such-key=1")
    assert refused.returncode != 0 and "unknown run config key(s) no-such-key" in (
        refused.stdout + refused.stderr), refused
    assert api.get("/api/tasks")["total"] == 0  # nothing was created for it

    started = flwr("run", str(app), CONNECTION, "--run-config", "num-server-rounds=2",
                   "--stream", timeout=180)
    output = started.stdout + started.stderr
    assert started.returncode == 0, output
    run_id = int(re.search(r"Successfully started run (\d+)", output).group(1))  # type: ignore[union-attr]
    assert "final vector mean" in started.stdout, output  # the ServerApp's own log line

    task = api.get(f"/api/tasks/flwr-{run_id}")
    assert task["status"] == "finished", task
    assert task["devices"] == 2 and task["server_arguments"] == {"num-server-rounds": 2}
    assert [r["round"] for r in api.get(f"/api/tasks/flwr-{run_id}/metrics")["rounds"]] == [1, 2]
    listed = runs(flwr)[run_id]
    assert listed["status"] == "finished:completed"
    assert listed["fab-id"] == "agata/numpyapp"

    logged = flwr("log", str(run_id), CONNECTION, timeout=60)
    assert logged.returncode == 0, logged.stderr
    log_lines = [line for line in logged.stdout.splitlines() if "final vector mean" in line
                 or "joined as partition" in line]
    assert len(log_lines) == 3 and all(line in started.stdout for line in log_lines), logged

    pulled = flwr("pull", str(run_id), CONNECTION)
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    url = re.search(r"(https://\S+/api/flwr/artifacts/\S+)", pulled.stdout).group(1)  # type: ignore[union-attr]
    context = ssl.create_default_context(cafile=str(tls_stack.tls.ca))
    with urllib.request.urlopen(url, timeout=30, context=context) as response:  # noqa: S310
        names = zipfile.ZipFile(io.BytesIO(response.read())).namelist()
    assert any(name.endswith("server/final.npy") for name in names), names

    # a long run, stopped by flwr stop
    long = flwr("run", str(app), CONNECTION, "--run-config",
                "num-server-rounds=100000 train-delay-s=0.05")
    assert long.returncode == 0, long.stdout + long.stderr
    long_id = int(re.search(r"Successfully started run (\d+)", long.stdout).group(1))  # type: ignore[union-attr]
    wait_for(lambda: api.get(f"/api/tasks/flwr-{long_id}/metrics")["rounds"], 60,
             "the long run's first round")
    assert runs(flwr)[long_id]["status"] == "running"
    follower = flwr.start("log", str(long_id), CONNECTION)  # follows the live log
    try:
        read_until(follower, r"joined as partition 1")
        stopped = flwr("stop", str(long_id), CONNECTION)
    finally:
        finish(follower, 30)  # the stream ends by itself with the run
    assert follower.returncode == 0
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert wait_for(lambda: runs(flwr)[long_id]["status"] == "finished:stopped", 30,
                    "the long run to be recorded stopped")

    # revoked: the CLI is refused again
    assert api.post("/api/flwr/sessions/revoke", {})["revoked"] == 1
    again = flwr("ls", CONNECTION)
    assert again.returncode != 0
