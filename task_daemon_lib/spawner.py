"""Starting child processes that die with their manager.

A manager killed with ``kill -9`` cannot stop its children, so each child is started under
util-linux's ``setpriv --pdeathsig KILL``: the kernel kills it when its parent goes. The kernel
ties that signal to the parent *thread* that forked the child, so every child is forked by one
long-lived spawner thread, never by a short-lived worker or reader thread whose end would kill
it. Where ``setpriv`` is missing, children start unguarded (logged once).
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
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

logger = logging.getLogger(__name__)

_SETPRIV = shutil.which("setpriv") if sys.platform.startswith("linux") else None


def guarded_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` wrapped so that the kernel kills the process when its parent dies."""
    if _SETPRIV is None:
        return list(argv)
    return [_SETPRIV, "--pdeathsig", "KILL", "--", *argv]


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
        """``subprocess.Popen(guarded_argv(argv), **options)``, forked on the spawner thread."""
        if argv and _SETPRIV is not None:
            _require_executable(argv[0], options.get("cwd"))
        guarded = guarded_argv(argv)
        if threading.current_thread() is self._thread:
            return subprocess.Popen(guarded, **options)
        self._ensure_thread()
        future: Future[subprocess.Popen[bytes]] = Future()
        self._requests.put((lambda: subprocess.Popen(guarded, **options), future))
        return future.result()


_SPAWNER = _Spawner()

if _SETPRIV is None:
    logger.warning("setpriv not found: task processes will not die with their manager")


def popen(argv: Sequence[str], **options: Any) -> subprocess.Popen[bytes]:
    """Start a child that the kernel kills when this process dies (see the module doc)."""
    return _SPAWNER.popen(argv, **options)
