"""A service stops on SIGTERM whichever of its threads the kernel hands the signal to (it picks
another thread when the main one still has a signal pending, as right after a SIGCONT)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from support import REPO_ROOT

SERVICE = textwrap.dedent("""
    import signal, sys, threading, time
    from agata_common.process import run_service

    def signal_this_thread(signum):
        while signal.getsignal(signum) is signal.SIG_DFL:
            time.sleep(0.01)
        time.sleep(0.3)
        signal.pthread_kill(threading.get_ident(), signum)

    def start():
        threading.Thread(target=signal_this_thread, args=(signal.{name},), daemon=True).start()
        return lambda: None

    sys.exit(run_service("probe", start))
""")


def stop_by_a_worker_thread(name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SERVICE.format(name=name)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=30)


def test_a_sigterm_taken_by_a_worker_thread_stops_the_service_at_once() -> None:
    done = stop_by_a_worker_thread("SIGTERM")
    assert done.returncode == 0, done.stderr
    assert "probe stopping (SIGTERM)" in done.stderr and "probe stopped" in done.stderr


def test_a_sigint_taken_by_a_worker_thread_stops_the_service_too() -> None:
    done = stop_by_a_worker_thread("SIGINT")
    assert done.returncode == 0, done.stderr
    assert "probe stopping (SIGINT)" in done.stderr
