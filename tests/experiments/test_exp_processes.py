"""An experiment's services do not outlive it: killed with SIGKILL, the process that started them
takes them along (they get SIGTERM)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support import REPO_ROOT, wait_for

from experiments.processes import alive
from task_daemon_lib.spawner import SETPRIV

pytestmark = pytest.mark.skipif(SETPRIV is None, reason="setpriv is not installed")

STARTER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from experiments.processes import ProcessGroup
    group = ProcessGroup({}, Path(sys.argv[1]))
    service = group.start("sleeper", "http.server", "--bind", "127.0.0.1", "0")
    print(service.pid, flush=True)
    time.sleep(120)
""")


def test_a_killed_starter_takes_its_services_along(tmp_path: Path) -> None:
    starter = subprocess.Popen([sys.executable, "-c", STARTER, str(tmp_path / "logs")],
                               cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        assert starter.stdout is not None
        service = int(starter.stdout.readline())
        assert alive(service)
        starter.send_signal(signal.SIGKILL)
        starter.wait(10)
        wait_for(lambda: not alive(service), 10, "the service to end with its starter")
    finally:
        starter.kill()
        starter.wait(10)
