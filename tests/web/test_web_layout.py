"""Every page on a narrow screen (375 px) without horizontal scrolling, labelled inputs, no
script errors; and the dashboard screenshot for the README."""

from __future__ import annotations

import os
import struct
import uuid

from support import REPO_ROOT, free_port

SCREENSHOT = REPO_ROOT / "docs" / "dashboard.png"

LABELS_MISSING = """
return [...document.querySelectorAll('input, select, textarea')]
  .filter(e => e.type !== 'hidden' && !e.closest('[hidden]'))
  .filter(e => e.labels.length === 0 && !e.getAttribute('aria-label'))
  .map(e => e.outerHTML);
"""
WIDTHS = """
return [document.documentElement.scrollWidth, document.body.scrollWidth,
        document.documentElement.clientWidth];
"""


def console_errors(ui) -> list[str]:
    return [line for line in ui.console() if "SEVERE" in line or "Uncaught" in line]


def test_pages_fit_a_narrow_screen_and_label_every_input(ui):
    stack = ui.stack
    task_id = f"narrow-{uuid.uuid4().hex[:6]}-" + "x" * 40  # long ids must wrap, not overflow
    client_id = f"phone-{uuid.uuid4().hex[:6]}-" + "y" * 40
    stack.create_task(task_id, rounds=3, pause=0.05, tags=["a-rather-long-tag-name"] * 3,
                      selection_criteria="data_qnt >= 1 and 'camera' in sensors",
                      server_arguments={"learning_rate_schedule": "cosine-with-restarts" * 3})
    stack.api.post(f"/api/tasks/{task_id}/start")
    stack.client_api.post("/rpc_exec_update_user_info", {
        "user_id": client_id, "data_qnt": 123456789, "sensors": ["camera"] * 6})
    stack.client_api.post("/rpc_exec_report_client_task", {
        "task_id": task_id, "client_id": client_id, "status": "failed",
        "reason": "Traceback-free reason: " + "z" * 200})

    ui.sign_out_storage()
    ui.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": 375, "height": 800, "deviceScaleFactor": 1, "mobile": True})
    ui.open("index.html")  # the sign-in form first
    ui.wait(lambda: ui.visible("#api-token"), "the sign-in form")
    assert ui.js(WIDTHS)[0] <= 375, ui.js(WIDTHS)
    assert ui.js(LABELS_MISSING) == []
    ui.sign_in()
    ui.wait(lambda: ui.visible("#content"), "the dashboard")
    ui.wait(lambda: stack.api.get(f"/api/tasks/{task_id}")["status"] == "finished",
            "the task to finish", timeout=15)

    pages = {
        "index.html": "#clients-table",
        "create.html": "#create-form",
        f"task.html?id={task_id}": ".chart[data-metric=accuracy] circle",
        f"start.html?id={task_id}": "#start-form",
        "stop.html": "#stop-form",
        f"update.html?id={task_id}": "#update-form:not([hidden])",
        "upload.html": "#upload-form",
        f"client.html?id={client_id}": "#client-details dl",
    }
    for page, ready in pages.items():
        ui.open(page)
        ui.wait(lambda ready=ready: ui.visible(ready), f"{ready} on {page}")
        widths = ui.js(WIDTHS)
        assert widths[0] <= 375 and widths[1] <= 375, (page, widths)
        assert ui.js(LABELS_MISSING) == [], page
        assert console_errors(ui) == [], (page, ui.console())

    # Field errors wrap too.
    ui.open("create.html")
    ui.find("#port-details summary").click()  # the optional port is folded away
    ui.find("#port").send_keys("70000")
    ui.find("#server_arguments").send_keys("a" * 80 + "=1")
    ui.find("#create-submit").click()
    ui.wait(lambda: ui.field_error("server_arguments"), "the arguments' error")
    assert ui.js(WIDTHS)[0] <= 375, ui.js(WIDTHS)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def test_dashboard_screenshot(fresh_ui, tmp_path):
    """A dashboard screenshot: a few tasks in different states and a registered client.

    Written to docs/dashboard.png only with AGATA_UPDATE_SCREENSHOT=1 (tests leave the source
    tree alone otherwise).
    """
    ui, stack = fresh_ui, fresh_ui.stack
    stack.create_task("digits-fedavg", rounds=3, pause=0.05, tags=["digits", "fedavg"],
                      selection_criteria="data_qnt >= 30",
                      server_arguments={"rounds": 3}, client_arguments={"epochs": 1})
    stack.api.post("/api/tasks/digits-fedavg/start")
    stack.create_task("camera-survey", rounds=400, pause=0.5, tags=["camera"],
                      selection_criteria="'camera' in sensors")
    stack.api.post("/api/tasks", {"task_id": "gps-trial", "port": free_port(),
                                  "tags": ["gps"]})
    stack.client_api.post("/rpc_exec_update_user_info", {
        "user_id": "device-0", "data_qnt": 1797, "avg_acc_contrib": 0.12,
        "avg_disconnection_per_round": 0.05, "sensors": ["camera", "gps"]})
    ui.wait(lambda: stack.api.get("/api/tasks/digits-fedavg")["status"] == "finished",
            "the first task to finish", timeout=15)
    stack.api.post("/api/tasks/camera-survey/start")

    ui.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": 1200, "height": 760, "deviceScaleFactor": 1, "mobile": False})
    ui.signed_in("index.html")
    ui.wait(lambda: ui.js("return document.querySelectorAll('#tasks-table tbody tr').length")
            == 3, "three tasks")
    ui.wait(lambda: ui.visible("#clients-table"), "the client")
    ui.js("document.activeElement && document.activeElement.blur()")
    png = ui.driver.get_screenshot_as_png()
    width, height = png_size(png)
    assert (width, height) == (1200, 760)
    target = SCREENSHOT if os.environ.get("AGATA_UPDATE_SCREENSHOT") == "1" else (
        tmp_path / "dashboard.png")
    target.write_bytes(png)
