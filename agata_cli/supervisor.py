"""Keeping a set of ``python -m`` services running: start, watch, restart, stop, and a state file.

Each service runs in its own process group, with the caller's environment less any variable
that would carry a secret's value (secrets reach services as files, see
:mod:`agata_cli.local_deployment`); its output comes through a pipe into its log file
(``LogPump``: its warnings and errors reach the supervisor's stderr while the file cannot be
written). One that exits while it
should run is restarted after a back-off that doubles from ``MIN_BACKOFF_S`` to
``MAX_BACKOFF_S``; after ``MAX_RESTARTS`` restarts inside ``RESTART_WINDOW_S`` it is given up
(state ``failed``). The state of every service is written atomically to a JSON file that
``agata status`` reads from another terminal; a state file that cannot be written (a full disk)
is logged and tried again at the next change, never the supervisor's end. Stopping terminates
every group, kills what is left after the grace period, and waits for each process.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agata_cli.local_deployment import Service
from agata_cli.log_pump import LogPump
from agata_common.config_loader import secret_env_names

logger = logging.getLogger(__name__)

MIN_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
WATCH_INTERVAL_S = 0.2


def pid_alive(pid: int | None) -> bool:
    """Whether a process with this pid exists (one of another user's counts)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def backoff_s(restarts: int) -> float:
    """The wait before restart number ``restarts`` (1-based)."""
    return float(min(MAX_BACKOFF_S, MIN_BACKOFF_S * 2 ** max(0, restarts - 1)))


@dataclass
class Watched:
    """A supervised service and what became of it."""

    service: Service
    process: subprocess.Popen[bytes] | None = None
    state: str = "starting"
    restarts: int = 0
    since: float = field(default_factory=time.time)
    restart_at: float | None = None
    recent: deque[float] = field(default_factory=deque)
    last_exit: int | None = None

    def summary(self) -> dict[str, Any]:
        """This service in the state file."""
        return {"name": self.service.name, "module": self.service.module,
                "state": self.state, "pid": self.process.pid if self.process else None,
                "restarts": self.restarts, "since": self.since, "last_exit": self.last_exit,
                "data_dir": self.service.environ.get("AGATA_STORAGE_DATA_DIR")}


def write_state(path: Path, state: Mapping[str, Any]) -> None:
    """Write the state file atomically (readers never see half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".state-")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as output:
            json.dump(state, output, indent=1)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class Supervisor:
    """Starts services, restarts them when they die, stops them all on request."""

    def __init__(self, services: Sequence[Service], log_dir: Path, state_file: Path, *,
                 base_environ: Mapping[str, str] | None = None, grace_s: float = 10.0,
                 extra_state: Mapping[str, Any] | None = None) -> None:
        self.watched = [Watched(service) for service in services]
        self.log_dir = log_dir
        self.state_file = state_file
        base = os.environ if base_environ is None else base_environ
        hidden = secret_env_names()
        self.base_environ = {name: value for name, value in base.items() if name not in hidden}
        self.grace_s = grace_s
        self.extra_state = dict(extra_state or {})
        self.stopping = threading.Event()
        self.state_unwritten: str | None = None
        """Why the state file could not be written last time (None: it was)."""
        self._pumps: list[LogPump] = []

    def _spawn(self, item: Watched) -> None:
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            logger.warning("log folder %s cannot be made: %s", self.log_dir, exc)
        environ = {**self.base_environ, **item.service.environ}
        item.process = subprocess.Popen(
            [sys.executable, "-m", item.service.module], env=environ, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        assert item.process.stdout is not None
        self._pumps.append(LogPump(item.service.name, item.process.stdout,
                                   self.log_dir / f"{item.service.name}.log"))
        item.state, item.since, item.restart_at = "running", time.time(), None
        logger.info("started %s (pid %d)", item.service.name, item.process.pid)

    def start(self) -> None:
        """Start every service, in order."""
        for item in self.watched:
            self._spawn(item)
        self.save()

    def add(self, services: Sequence[Service]) -> None:
        """Start more services (e.g. devices, once the cloud they join is up) and watch them."""
        for service in services:
            item = Watched(service)
            self.watched.append(item)
            self._spawn(item)
        self.save()

    def save(self) -> bool:
        """Write the state file; whether it could be (why not is logged once, and the services
        run on: the next change tries again)."""
        try:
            write_state(self.state_file, {
                **self.extra_state, "supervisor_pid": os.getpid(), "updated": time.time(),
                "services": [item.summary() for item in self.watched]})
        except OSError as exc:
            why = exc.strerror or str(exc)
            if self.state_unwritten != why:
                logger.error("state file %s cannot be written (%s); the services run on and "
                             "agata status shows the last state written", self.state_file, why)
            self.state_unwritten = why
            return False
        if self.state_unwritten is not None:
            logger.warning("state file %s written again", self.state_file)
        self.state_unwritten = None
        return True

    def check(self, now: float | None = None) -> bool:
        """Notice exits and due restarts; return whether anything changed."""
        now = time.monotonic() if now is None else now
        changed = False
        for item in self.watched:
            process = item.process
            if item.state == "running" and process is not None and process.poll() is not None:
                item.last_exit = process.returncode
                while item.recent and now - item.recent[0] > RESTART_WINDOW_S:
                    item.recent.popleft()
                if len(item.recent) >= MAX_RESTARTS:
                    item.state = "failed"
                    logger.error("%s exited (code %s) %d times within %.0f s; giving up (see "
                                 "%s)", item.service.name, process.returncode, MAX_RESTARTS + 1,
                                 RESTART_WINDOW_S, self.log_dir / f"{item.service.name}.log")
                else:
                    item.restarts += 1
                    item.recent.append(now)
                    wait = backoff_s(item.restarts)
                    item.state, item.restart_at = "restarting", now + wait
                    logger.warning("%s exited (code %s); restarting in %.1f s (restart %d)",
                                   item.service.name, process.returncode, wait, item.restarts)
                changed = True
            elif item.state == "restarting" and item.restart_at is not None \
                    and now >= item.restart_at and not self.stopping.is_set():
                self._spawn(item)
                changed = True
        if changed or self.state_unwritten is not None:
            self.save()
        return changed

    def watch(self) -> None:
        """Check every ``WATCH_INTERVAL_S`` until asked to stop."""
        while not self.stopping.wait(WATCH_INTERVAL_S):
            self.check()

    def stop(self) -> dict[str, int | None]:
        """Terminate every service (devices first, in reverse start order), kill what is left
        after the grace period, wait for each; return their exit codes."""
        self.stopping.set()
        running = [item for item in reversed(self.watched)
                   if item.process is not None and item.process.poll() is None]
        for item in running:
            _signal_group(item.process, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for item in running:
            assert item.process is not None
            try:
                item.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop in %.0f s; killing it", item.service.name,
                               self.grace_s)
                _signal_group(item.process, signal.SIGKILL)
                item.process.wait(5)
        codes: dict[str, int | None] = {}
        for item in self.watched:
            if item.process is not None:
                _signal_group(item.process, signal.SIGKILL)
                codes[item.service.name] = item.process.returncode
            item.state = "stopped"
        for pump in self._pumps:
            pump.join(2.0)
        self.save()
        return codes


def _signal_group(process: subprocess.Popen[bytes] | None, signum: int) -> None:
    if process is None:
        return
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass
