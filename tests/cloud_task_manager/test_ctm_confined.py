"""The cloud task manager's default executor on real processes: a script task's ``server.py``
runs confined, writes its results, and reaches neither the task folder (read only), the
cloud's database and data directory, nor the manager's processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ctm_support import new_task
from support import Cloud, wait_for

from agata_contracts.results import LIST_RESULTS, READ_RESULT
from agata_contracts.tasks import GET_TASK_BY_ID, START_SERVER_TASK
from task_daemon_lib import confinement
from task_daemon_lib.confinement import Mechanism

pytestmark = pytest.mark.skipif(confinement.choose().mechanism is not Mechanism.BWRAP,
                                reason="bubblewrap cannot start a sandbox here")

LOOKING_SERVER = """\
import json, os, sys
from pathlib import Path
from task_daemon_lib import TaskReporter

reporter = TaskReporter()
secrets = sys.argv[sys.argv.index("--secrets") + 1].split(",")
seen = {"pids": len([p for p in os.listdir("/proc") if p.isdigit()]),
        "secrets": [path for path in secrets if os.path.exists(path)]}
try:
    Path("mark.txt").write_text("x")
    seen["task_folder_written"] = True
except OSError:
    seen["task_folder_written"] = False
results = Path(os.environ["AGATA_RESULTS_DIR"])
(results / "seen.json").write_text(json.dumps(seen))
reporter.send_info("Finished")
"""

def test_a_script_server_runs_confined_and_returns_its_results(cloud: Cloud,
                                                               tmp_path: Path) -> None:
    data_dir = cloud.settings.storage.resolved_data_dir()
    assert cloud.task_manager.runs.servers.executor.confinement.mechanism is Mechanism.BWRAP
    assert (confinement.read(data_dir) or {}).get("mechanism") == "bwrap"
    secrets = [tmp_path / "cloud.db", data_dir / confinement.STATUS_FILE]
    assert all(path.exists() for path in secrets)
    new_task(cloud, "looking", LOOKING_SERVER,
             server_arguments={"secrets": ",".join(str(path) for path in secrets)})
    cloud.client.call(START_SERVER_TASK, {"task_id": "looking"})
    wait_for(lambda: cloud.client.call(GET_TASK_BY_ID, {"task_id": "looking"})
             .status.value != "running", 30, "the confined server to end")
    task = cloud.client.call(GET_TASK_BY_ID, {"task_id": "looking"})
    assert (task.status.value, task.status_reason) == ("finished", None)
    wait_for(lambda: "server/seen.json" in {f.path for f in cloud.client.call(
        LIST_RESULTS, {"task_id": "looking", "run": 1}).files}, 30, "its results")
    content = cloud.client.call(READ_RESULT, {"task_id": "looking", "run": 1,
                                              "path": "server/seen.json"}).content
    seen = json.loads(content)
    assert seen == {"pids": seen["pids"], "secrets": [], "task_folder_written": False}
    assert seen["pids"] <= 3  # its own PID namespace
    assert not (cloud.task_manager.storage.task_dir("looking") / "mark.txt").exists()
