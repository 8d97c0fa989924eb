"""Starting child processes that die with their manager.

A manager killed with ``kill -9`` cannot stop its children, so each child is started under
util-linux's ``setpriv --pdeathsig KILL``: the kernel kills it when its parent goes. The kernel
ties that signal to the parent *thread* that forked the child, so every child is forked by one
long-lived spawner thread, never by a short-lived worker or reader thread whose end would kill
it. The signal is armed only once ``setpriv`` has run, so ``popen`` returns after that (a
parent killed in between would otherwise leave its child behind). Where ``setpriv`` is missing,
children start unguarded (logged once).
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SETPRIV = shutil.which("setpriv") if sys.platform.startswith("linux") else None
"""util-linux's ``setpriv``, where this machine has it."""


ARMING_TIMEOUT_S = 5.0
"""How long a start waits for ``setpriv`` to arm the death signal and run the program."""


def guarded_argv(argv: Sequence[str], death_signal: str = "KILL") -> list[str]:
    """``argv`` wrapped so that the kernel sends ``death_signal`` (a name such as ``KILL`` or
    ``TERM``) to the process when its parent dies."""
    if SETPRIV is None:
        return list(argv)
    return [SETPRIV, "--pdeathsig", death_signal, "--", *argv]


def wait_armed(pid: int, timeout: float = ARMING_TIMEOUT_S) -> None:
    """Return once child ``pid``, started with ``guarded_argv``, has its death signal armed:
    ``setpriv`` arms it, then runs the program, so the child no longer runs ``setpriv`` (or it
    has ended). Gives up quietly after ``timeout`` seconds."""
    if SETPRIV is None:
        return
    deadline = time.monotonic() + timeout
    pause = 0.0005
    while time.monotonic() < deadline:
        try:
            program = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
        except OSError:
            return
        if program != SETPRIV.encode():
            return
        time.sleep(pause)
        pause = min(pause * 2, 0.01)
    logger.warning("child %d did not leave setpriv within %.0f s", pid, timeout)


def _require_executable(program: str, cwd: Any) -> None:
    """Raise what ``Popen`` would (FileNotFoundError) when ``program`` cannot be executed: the
    wrapper would only fail after the fork, as an exit status."""
    if "/" in program:
        path: str | None = os.path.join(os.fspath(cwd), program) if cwd is not None else program
    else:
        path = shutil.which(program)
    if path is None or not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", program)


class _Spawner:
    """One daemon thread that performs every fork of this process."""

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = (
            queue.SimpleQueue())
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="child-spawner",
                                                daemon=True)
                self._thread.start()

    def _serve(self) -> None:
        while True:
            work, future = self._requests.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(work())
            except BaseException as exc:
                future.set_exception(exc)

    def popen(self, argv: Sequence[str], **options: Any) -> subprocess.Popen[bytes]:
        """``subprocess.Popen(guarded_argv(argv), **options)``, forked on the spawner thread,
        returned once its death signal is armed."""
        if argv and SETPRIV is not None:
            _require_executable(argv[0], options.get("cwd"))
        guarded = guarded_argv(argv)
        if threading.current_thread() is self._thread:
            process = subprocess.Popen(guarded, **options)
        else:
            self._ensure_thread()
            future: Future[subprocess.Popen[bytes]] = Future()
            self._requests.put((lambda: subprocess.Popen(guarded, **options), future))
            process = future.result()
        wait_armed(process.pid)
        return process


_SPAWNER = _Spawner()

if SETPRIV is None:
    logger.warning("setpriv not found: task processes will not die with their manager")


def popen(argv: Sequence[str], **options: Any) -> subprocess.Popen[bytes]:
    """Start a child that the kernel kills when this process dies (see the module doc)."""
    return _SPAWNER.popen(argv, **options)
