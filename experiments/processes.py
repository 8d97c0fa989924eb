"""Starting and stopping the services an experiment needs, by pid, leaving no orphan."""

from __future__ import annotations

import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from task_daemon_lib.spawner import guarded_argv, wait_armed

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def owned(argv: Sequence[str]) -> list[str]:
    """``argv`` made to get SIGTERM when the process that starts it dies (``setpriv
    --pdeathsig``, where util-linux has it): a killed experiment or test run leaves no service
    behind (they run in their own sessions, out of reach of the terminal's signals)."""
    return guarded_argv(argv, "TERM")


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_http(url: str, timeout: float, ca_file: str = "") -> None:
    """Wait until ``url`` answers 200 (an https one verified against ``ca_file`` when given),
    or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    context = ssl.create_default_context(cafile=ca_file) if ca_file else None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1,  # noqa: S310 (local URL)
                                        context=context) as response:
                if response.status == 200:
                    return
                last = f"status {response.status}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s ({last})")


@dataclass
class ProcessGroup:
    """``python -m`` services started for an experiment; each in its own process group."""

    environ: Mapping[str, str]
    log_dir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list)

    def start(self, name: str, *argv: str,
              prefix: Sequence[str] = ()) -> subprocess.Popen[bytes]:
        """Start ``python -m <argv>`` logging to ``<log_dir>/<name>.log``, with ``prefix`` in
        front of the command when given (e.g. ``ip netns exec NS`` to run it in a namespace)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{name}.log").open("ab")
        self._logs.append(log)
        process = subprocess.Popen(
            owned([*prefix, sys.executable, "-m", *argv]), cwd=REPO_ROOT,
            env=dict(self.environ),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_armed(process.pid)
        self.processes[name] = process
        logger.info("started %s (pid %d)", name, process.pid)
        return process

    def stop(self, name: str, timeout: float = 15.0) -> int | None:
        """SIGTERM one service (and its process group), SIGKILL after ``timeout``."""
        return self.stop_together([name], timeout).get(name)

    def stop_together(self, names: Sequence[str], timeout: float = 15.0
                      ) -> dict[str, int | None]:
        """SIGTERM the named services at once, wait for them all (SIGKILL any still there
        after ``timeout``), then SIGKILL what is left of their process groups; their exit
        codes."""
        stopping = {name: process for name in names
                    if (process := self.processes.pop(name, None)) is not None}
        for process in stopping.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name, process in stopping.items():
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop in %.0f s; killing it", name, timeout)
                process.kill()
                process.wait()
        for process in stopping.values():
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except OSError:
                pass
        return {name: process.returncode for name, process in stopping.items()}

    def stop_all(self) -> dict[str, int | None]:
        """Stop every service, newest first; return their exit codes."""
        codes = {name: self.stop(name) for name in reversed(list(self.processes))}
        for log in self._logs:
            log.close()
        return codes
