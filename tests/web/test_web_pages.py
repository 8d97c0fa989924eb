"""The other pages in a real browser: start with arguments, stop, update, upload, clients."""

from __future__ import annotations

import json
import uuid

import pytest
from support import free_port

from agata_cli.client import ApiError
from experiments.stack import Api


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def fill(ui, values: dict[str, str]) -> None:
    for field_id, value in values.items():
        element = ui.find(f"#{field_id}")
        element.clear()
        element.send_keys(value)


def test_start_with_arguments_then_update_and_stop(ui):
    stack = ui.stack
    task_id = unique("runs")
    stack.create_task(task_id, rounds=3, pause=0.1)

    # Start with arguments for this run only: the server reports two rounds, not three.
    ui.signed_in(f"start.html?id={task_id}")
    assert ui.js("return document.getElementById('task_id').value") == task_id
    fill(ui, {"server_arguments": "9rounds=2"})  # argument names are checked by the schema
    ui.find("#start-form button[type=submit]").click()
    ui.wait(lambda: ui.field_error("server_arguments"), "the argument name's error")
    assert "9rounds" in ui.field_error("server_arguments")
    fill(ui, {"server_arguments": "rounds=2\npause=0.1"})
    ui.find("#start-form button[type=submit]").click()
    ui.wait(lambda: f"task.html?id={task_id}" in ui.driver.current_url, "the task page")
    ui.wait(lambda: "started (run 1)" in ui.text("#status"), "the start's status")
    ui.wait(lambda: ui.text("#task-status") == "finished", "status finished", timeout=15)
    ui.wait(lambda: ui.js("return document.querySelectorAll("
                          "'.chart[data-metric=accuracy] circle').length") == 2, "two rounds")
    assert stack.api.get(f"/api/tasks/{task_id}")["server_arguments"] == {}

    # A long run, then an update of its port: refused while it runs, next to the port.
    ui.open(f"start.html?id={task_id}")
    fill(ui, {"server_arguments": "rounds=200\npause=0.2"})
    ui.find("#start-form button[type=submit]").click()
    ui.wait(lambda: ui.text("#task-status") == "running", "status running")
    ui.open(f"update.html?id={task_id}")
    assert ui.visible("#update-form")
    assert ui.js("return document.getElementById('tags').value") == ""
    old_port = int(ui.js("return document.getElementById('port').value"))
    fill(ui, {"port": str(old_port + 1 if old_port < 65535 else old_port - 1),
              "tags": "edited, web"})
    ui.find("#update-form button[type=submit]").click()
    ui.wait(lambda: ui.field_error("port"), "the port's conflict error")
    assert "running" in ui.field_error("port")
    ui.no_alert()

    # The stop page stops it.
    ui.open(f"stop.html?id={task_id}")
    ui.find("#stop-form button[type=submit]").click()
    ui.wait(lambda: "stopped" in ui.text("#stop-result"), "the stop result", timeout=15)
    assert stack.api.get(f"/api/tasks/{task_id}")["status"] == "stopped"
    ui.find("#stop-form button[type=submit]").click()  # not running any more: 409 at the id
    ui.wait(lambda: ui.field_error("task_id"), "the task id's error")
    assert "not running" in ui.field_error("task_id")

    # Now the update goes through; only changed fields are sent.
    ui.open(f"update.html?id={task_id}")
    assert ui.visible("#update-form")
    new_port = int(ui.js("return document.getElementById('port').value")) + 1
    fill(ui, {"port": str(new_port), "tags": "edited, web",
              "client_arguments": "epochs=3\nname=\"007\""})
    ui.find("#update-form button[type=submit]").click()
    ui.wait(lambda: f"task.html?id={task_id}" in ui.driver.current_url, "the task page")
    # the task page writes its status once its script ran, a moment after the URL changed
    ui.wait(lambda: "updated (port, client arguments, tags)" in ui.text("#status"),
            "the update's status on the task page")
    task = stack.api.get(f"/api/tasks/{task_id}")
    assert task["port"] == new_port and task["tags"] == ["edited", "web"]
    assert task["client_arguments"] == {"epochs": 3, "name": "007"}
    assert task["status"] == "stopped"


def test_upload_page_and_its_errors(ui):
    stack = ui.stack
    task_id = unique("files")
    stack.api.post("/api/tasks", {"task_id": task_id, "port": free_port()})
    folder = stack.files_dir / "upload"
    folder.mkdir(parents=True, exist_ok=True)
    good = folder / "weights.bin"
    good.write_bytes(b"\x00" * 2048)
    bad = folder / "bad name.txt"
    bad.write_text("x")

    ui.signed_in("upload.html")
    fill(ui, {"task_id": task_id})
    ui.find("#upload-form button[type=submit]").click()
    ui.wait(lambda: ui.field_error("files"), "the missing files error")
    assert "at least one file" in ui.field_error("files")
    ui.find("#files").send_keys(str(bad))
    ui.find("#upload-form button[type=submit]").click()
    ui.wait(lambda: "bad name.txt" in ui.field_error("files"), "the file name error")

    ui.open(f"upload.html?id=nosuch-{task_id}")
    ui.find("#files").send_keys(str(good))
    ui.find("#upload-form button[type=submit]").click()
    ui.wait(lambda: ui.field_error("task_id"), "the unknown task error")
    assert "does not exist" in ui.field_error("task_id")

    fill(ui, {"task_id": task_id})
    ui.find("#files").clear()
    ui.find("#files").send_keys(str(good))
    ui.find("#upload-form button[type=submit]").click()
    ui.wait(lambda: "weights.bin" in ui.text("#upload-result"), "the stored files")
    assert "2.0 KiB" in ui.text("#upload-result")
    assert [f["name"] for f in stack.api.get(f"/api/tasks/{task_id}")["files"]] == ["weights.bin"]


def test_client_reports_and_client_detail(ui):
    stack = ui.stack
    task_id = unique("reports")
    client_id = unique("device")
    stack.api.post("/api/tasks", {"task_id": task_id, "port": free_port()})
    stack.client_api.post("/rpc_exec_update_user_info", {
        "user_id": client_id, "data_qnt": 321, "avg_acc_contrib": 0.25,
        "sensors": ["camera", "gps"]})
    stack.client_api.post("/rpc_exec_report_client_task", {
        "task_id": task_id, "client_id": client_id, "status": "failed",
        "reason": "RuntimeError: simulated task failure"})

    ui.signed_in(f"task.html?id={task_id}")
    ui.wait(lambda: "simulated task failure" in ui.text("#reports"), "the client's reason")
    assert "failed" in ui.text("#reports-table .badge")
    ui.find("#reports-table a").click()
    ui.wait(lambda: f"client.html?id={client_id}" in ui.driver.current_url, "the client page")
    ui.wait(lambda: "321" in ui.text("#client-details"), "the client's stats")
    assert "camera" in ui.text("#client-details") and "0.25" in ui.text("#client-details")

    ui.open("client.html?id=nobody-here")
    ui.wait(lambda: "not registered" in ui.text("#client-details"), "the unknown client")
    ui.open("task.html?id=nosuch-task")
    ui.wait(lambda: "There is no task nosuch-task" in ui.text("#content"), "the unknown task")


RESULT_SERVER_PY = """\
import os
import struct
import zlib
from pathlib import Path

from task_daemon_lib import TaskReporter


def chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


reporter = TaskReporter()
pixels = b"".join(b"\\x00" + bytes(c for x in range(8) for c in (x * 32, y * 32, 128))
                  for y in range(8))
png = (b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0))
       + chunk(b"IDAT", zlib.compress(pixels)) + chunk(b"IEND", b""))
results = Path(os.environ["AGATA_RESULTS_DIR"])
(results / "samples").mkdir()
(results / "samples" / "grid.png").write_bytes(png)
(results / "summary.txt").write_text("done\\n")
print("server wrote its results")
reporter.send_stats(1, loss=0.5)
reporter.send_info("Finished")
"""


def test_the_task_page_lists_a_runs_results_and_shows_its_images(ui, tmp_path):
    stack = ui.stack
    task_id = unique("results")
    stack.api.post("/api/tasks", {"task_id": task_id, "port": free_port()})
    (tmp_path / "server.py").write_text(RESULT_SERVER_PY)
    (tmp_path / "client.py").write_text("print('client')\n")
    stack.api.upload_files(task_id, [tmp_path / "server.py", tmp_path / "client.py"])
    stack.api.post(f"/api/tasks/{task_id}/start", {})

    ui.signed_in(f"task.html?id={task_id}")
    ui.wait(lambda: "server/samples/grid.png" in ui.text("#results"), "the run's results",
            timeout=20)
    table = ui.text("#results-table")
    assert "server/summary.txt" in table and "server/output-server.txt" in table
    assert "Download all" in ui.text("#results-zip")
    ui.wait(lambda: ui.js("const i = document.querySelector('#result-images img');"
                          "return i !== null && i.complete && i.naturalWidth === 8;"),
            "the PNG result shown on the page")
    assert not [line for line in ui.console() if "SEVERE" in line], ui.console()
    log = stack.api.download(f"/api/tasks/{task_id}/runs/1/results/server/output-server.txt")
    assert b"server wrote its results" in log


def test_enroll_a_device_then_revoke_it_from_its_page(ui):
    stack = ui.stack
    device = unique("dev")
    ui.signed_in("enroll.html")
    fill(ui, {"client_id": device, "ttl_s": "600"})
    ui.find("#enroll-form button[type=submit]").click()
    token = ui.wait(lambda: ui.text("#join-token").strip(), "the join token")
    assert device in ui.text("#join-token-panel")
    # the device joins with it and proves itself with its own secret from then on
    joined = stack.api._request(
        "POST", "/api/client/join", auth=False, content_type="application/json",
        data=json.dumps({"join_token": token, "client_id": device}).encode())
    own = Api(stack.url, f"{device}:{joined['secret']}")
    assert own.post("/rpc_exec_update_user_info", {"user_id": device})["id"] == device

    ui.open(f"client.html?id={device}")
    ui.wait(lambda: "Enrolled" in ui.text("#client-credential"), "the enrolled state")
    ui.js("window.confirm = () => true")
    ui.find("#revoke-button").click()
    ui.wait(lambda: "Revoked" in ui.text("#client-credential"), "the revoked state")
    assert not ui.visible("#revoke-button")
    with pytest.raises(ApiError) as refused:
        own.post("/rpc_exec_update_user_info", {"user_id": device})
    assert refused.value.status == 401

    # a bad device id is refused next to its field
    ui.open("enroll.html")
    fill(ui, {"client_id": "no spaces/allowed"})
    ui.find("#enroll-form button[type=submit]").click()
    ui.wait(lambda: ui.field_error("client_id"), "the id's error")
    ui.no_alert()
