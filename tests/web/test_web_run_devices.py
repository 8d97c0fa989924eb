"""The task page lists the run's devices in a real browser: who is in, who replaced whom."""

from __future__ import annotations

import uuid

from support import free_port

ROSTER_SERVER_PY = """\
import time
from task_daemon_lib import TaskReporter

reporter = TaskReporter()
lost = {"client_id": "device-0", "partition_id": 0, "joined": 1.0, "left": 2.0,
        "left_after_round": 3, "why_left": "did not answer round 4 within 5 s",
        "rounds_trained": 3, "replaced_by": "device-2"}
spare = {"client_id": "device-2", "partition_id": 0, "joined": 2.5, "joined_after_round": 3,
         "rounds_trained": 7, "replaced": "device-0"}
reporter.send_roster({"devices": [lost, spare]})
time.sleep(60)
"""


def test_the_task_page_shows_who_replaced_whom(ui, tmp_path):
    stack = ui.stack
    task_id = f"roster-{uuid.uuid4().hex[:6]}"
    stack.api.post("/api/tasks", {"task_id": task_id, "port": free_port(), "min_devices": 1})
    ui.signed_in(f"task.html?id={task_id}")
    ui.wait(lambda: "No device has joined" in ui.text("#devices"), "an empty devices list")
    (tmp_path / "server.py").write_text(ROSTER_SERVER_PY)
    stack.api.upload_files(task_id, [tmp_path / "server.py"])
    stack.api.post(f"/api/tasks/{task_id}/start", {})
    ui.wait(lambda: "device-2" in ui.text("#devices"), "the run's devices", timeout=20)
    table = ui.text("#devices-table")
    assert "replaced by device-2" in table and "replaced device-0" in table
    assert "1 of 2 device(s) in, at least 1 needed" in ui.text("#devices-note")
    assert "Fewest devices" in ui.text("#definition")
    stack.api.post(f"/api/tasks/{task_id}/stop", {})
    assert not [line for line in ui.console() if "SEVERE" in line], ui.console()
