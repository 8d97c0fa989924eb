"""Children die with their manager (kill -9 included), not with the thread that asked for them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from task_daemon_lib.spawner import guarded_argv

REPO_ROOT = Path(__file__).resolve().parents[2]

# A stand-in manager: a short-lived thread starts a task child; the manager prints its pid and
# waits to be killed.
MANAGER = """
import sys, threading, time
from pathlib import Path
from task_daemon_lib.runner import ChildProcess

started = []

def start():
    child = ChildProcess([sys.executable, "-c", "import time; time.sleep(60)"],
                         cwd=Path("."), name="sleeper")
    child.start()
    started.append(child.pid)

thread = threading.Thread(target=start)
thread.start()
thread.join()
print(started[0], flush=True)
time.sleep(60)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(guarded_argv(["x"]) == ["x"], reason="setpriv is not installed here")
def test_a_task_child_outlives_its_thread_but_not_its_killed_manager() -> None:
    manager = subprocess.Popen([sys.executable, "-c", MANAGER], cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, text=True)
    child = 0
    try:
        assert manager.stdout is not None
        child = int(manager.stdout.readline())
        # the thread that asked for the child has ended: the child must still run
        time.sleep(0.5)
        assert alive(child)
        manager.send_signal(signal.SIGKILL)
        manager.wait(10)
        assert wait_gone(child, 5), f"child {child} outlived its killed manager"
    finally:
        if manager.poll() is None:
            manager.kill()
            manager.wait(10)
        if child and alive(child):
            os.kill(child, signal.SIGKILL)
