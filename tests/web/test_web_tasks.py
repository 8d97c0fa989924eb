"""Tasks through the web interface in a real browser: create with files, start, follow, errors."""

from __future__ import annotations

import hashlib
import shutil
import uuid
import zipfile
from pathlib import Path

import pytest
from support import REPO_ROOT, free_port

from agata_cli.app_archive import zip_folder
from experiments.stack import ApiError


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def fill(ui, values: dict[str, str]) -> None:
    for field_id, value in values.items():
        ui.js("const fold = document.getElementById(arguments[0]).closest('details');"
              "if (fold) fold.open = true;", field_id)  # an optional field folded away
        element = ui.find(f"#{field_id}")
        element.clear()
        element.send_keys(value)


def submit(ui, form: str) -> None:
    ui.find(f"#{form} button[type=submit]").click()


def chart_points(ui, metric: str) -> int:
    return ui.js("return document.querySelectorAll("
                 "'.chart[data-metric=\"' + arguments[0] + '\"] circle.series-point').length",
                 metric)


def test_create_with_files_start_and_follow_the_run(ui):
    stack = ui.stack
    task_id = unique("webflow")
    server_py, client_py = stack.task_files(rounds=5, pause=0.8)
    ui.signed_in("create.html")
    # The port is optional and folded away: the task is created without one.
    assert ui.js("return document.getElementById('port').checkVisibility()") is False
    fill(ui, {
        "task_id": task_id,
        "selection_criteria": "data_qnt >= 10 and 'camera' in sensors",
        "server_arguments": "rounds=5\nlearning-rate=0.01",
        "client_arguments": '{"epochs": 2, "note": "web"}',
        "tags": "web, browser",
    })
    ui.find("#files").send_keys(f"{server_py}\n{client_py}")
    submit(ui, "create-form")

    ui.wait(lambda: f"task.html?id={task_id}" in ui.driver.current_url, "the task page")
    ui.wait(lambda: ui.text("#task-status") == "created", "status created")
    ui.wait(lambda: "created with 2 files" in ui.text("#status"), "the created message")
    task = stack.api.get(f"/api/tasks/{task_id}")
    assert task["server_arguments"] == {"rounds": 5, "learning-rate": 0.01}
    assert task["client_arguments"] == {"epochs": 2, "note": "web"}
    assert task["tags"] == ["web", "browser"]
    assert sorted(f["name"] for f in task["files"]) == ["client.py", "server.py"]
    assert "server.py" in ui.text("#task-files")
    assert task["port"] is None and "null" not in ui.text("#content")

    ui.find("#start-button").click()
    ui.wait(lambda: ui.text("#task-status") == "running", "status running")
    # The chart fills in while the task runs (polled every 2 s).
    seen = ui.wait(lambda: ui.js(
        "const n = document.querySelectorAll('.chart[data-metric=accuracy] circle').length;"
        "return n > 0 ? [n, document.getElementById('task-status').innerText] : null"),
        "a first round on the chart", timeout=12)
    assert seen[1] == "running", seen
    ui.wait(lambda: ui.text("#task-status") == "finished", "status finished", timeout=20)
    ui.wait(lambda: chart_points(ui, "accuracy") == 5, "five rounds of accuracy")
    assert chart_points(ui, "loss") == 5
    assert ui.js("return document.querySelector('.chart[data-metric=loss] figcaption').innerText"
                 ) == "Loss per round"
    assert "5 rounds" in ui.text("#metrics-note")
    assert "finished" in ui.text("#status")  # the change was announced (aria-live)
    assert ui.js("return document.getElementById('start-button').disabled") is False
    assert ui.js("return document.getElementById('stop-button').disabled") is True
    # The table behind the chart holds the same numbers.
    rows = ui.js("return [...document.querySelectorAll('.metrics-table tbody tr')]"
                 ".map(r => r.querySelector('th').textContent)")
    assert rows == ["1", "2", "3", "4", "5"]

    ui.open("index.html")
    ui.wait(lambda: ui.js("return !!document.querySelector('tr[data-task-id=\"' + arguments[0]"
                          " + '\"]')", task_id), "the task on the dashboard")
    assert ui.js("return document.querySelector('tr[data-task-id=\"' + arguments[0] + '\"] "
                 ".badge').innerText", task_id) == "finished"
    ui.no_alert()


def test_invalid_port_is_shown_next_to_the_field_before_any_request(ui):
    task_id = unique("badport")
    ui.signed_in("create.html")
    fill(ui, {"task_id": task_id, "port": "70000"})
    submit(ui, "create-form")
    ui.wait(lambda: ui.field_error("port"), "the port's field error")
    assert "65535" in ui.field_error("port")
    assert ui.js("return document.activeElement.id") == "port"
    assert ui.js("return document.getElementById('port').getAttribute('aria-invalid')") == "true"
    described = ui.js("return document.getElementById('port').getAttribute('aria-describedby')")
    assert "port-error" in described.split()
    # The message sits right under the input, inside the port's field.
    assert ui.js("const e = document.getElementById('port-error');"
                 "return e.previousElementSibling.id === 'port'"
                 " && e.parentElement.contains(document.querySelector('label[for=port]'))")
    assert ui.field_error("task_id") == ""
    ui.no_alert()
    with pytest.raises(ApiError) as missing:  # nothing was sent
        ui.stack.api.get(f"/api/tasks/{task_id}")
    assert missing.value.status == 404

    # Other schema rules: a bad task id pattern and a non-number port.
    fill(ui, {"task_id": "-bad id", "port": "eighty"})
    submit(ui, "create-form")
    ui.wait(lambda: ui.field_error("task_id"), "the task id's field error")
    assert "letters, digits" in ui.field_error("task_id")
    assert "whole number" in ui.field_error("port")
    assert ui.js("return document.activeElement.id") == "task_id"
    fill(ui, {"task_id": task_id, "port": "8080", "server_arguments": "epochs"})
    submit(ui, "create-form")
    ui.wait(lambda: ui.field_error("server_arguments"), "the arguments' field error")
    assert "name=value" in ui.field_error("server_arguments")
    assert ui.field_error("port") == ""


def test_server_side_errors_are_shown_next_to_their_field(ui):
    stack = ui.stack
    taken = unique("taken")
    stack.api.post("/api/tasks", {"task_id": taken, "port": free_port()})
    ui.signed_in("create.html")

    # The criteria pass the schema (a string) but the server's parser refuses them: 400.
    fill(ui, {"task_id": unique("crit"), "port": "8080",
              "selection_criteria": "__import__('os')"})
    submit(ui, "create-form")
    ui.wait(lambda: ui.field_error("selection_criteria"), "the criteria's field error")
    assert ui.field_error("port") == "" and ui.field_error("task_id") == ""
    assert ui.js("return document.activeElement.id") == "selection_criteria"
    ui.no_alert()

    # A taken id: the server answers 409, shown at the task id.
    fill(ui, {"task_id": taken, "selection_criteria": ""})
    submit(ui, "create-form")
    ui.wait(lambda: ui.field_error("task_id"), "the task id's field error")
    assert "already exists" in ui.field_error("task_id")
    assert ui.field_error("selection_criteria") == ""
    ui.no_alert()

    # Reserved argument names are refused by the server, shown at the arguments.
    fill(ui, {"task_id": unique("args"), "server_arguments": "port=9"})
    submit(ui, "create-form")
    ui.wait(lambda: ui.field_error("server_arguments"), "the arguments' field error")
    assert "host and port" in ui.field_error("server_arguments") or \
        "port" in ui.field_error("server_arguments")


def test_create_form_works_with_the_keyboard_only(ui):
    from selenium.webdriver.common.keys import Keys

    task_id = unique("keys")
    ui.signed_in("create.html")
    ui.js("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0)")
    body = ui.find("body")
    body.send_keys(Keys.TAB)
    for _ in range(40):  # TAB through the skip link and the navigation to the first field
        if ui.js("return document.activeElement.id") == "task_id":
            break
        ui.driver.switch_to.active_element.send_keys(Keys.TAB)
    assert ui.js("return document.activeElement.id") == "task_id"
    # Keyboard focus is visible.
    assert ui.js("return getComputedStyle(document.activeElement).outlineStyle") != "none"

    def type_here(text: str) -> None:
        ui.driver.switch_to.active_element.send_keys(text)

    def tab_to(field_id: str) -> None:
        ui.driver.switch_to.active_element.send_keys(Keys.TAB)
        assert ui.js("return document.activeElement.id") == field_id

    type_here(task_id)
    tab_to("host")  # keeps its default 127.0.0.1
    ui.driver.switch_to.active_element.send_keys(Keys.TAB)  # the optional port's fold
    assert ui.js("return document.activeElement.tagName") == "SUMMARY"
    type_here(Keys.ENTER)  # unfolds it
    tab_to("port")
    type_here("70000")
    type_here(Keys.ENTER)  # Enter in a text field submits the form
    ui.wait(lambda: ui.field_error("port"), "the port's field error")
    assert ui.js("return document.activeElement.id") == "port"  # focus moved to the problem
    ui.driver.switch_to.active_element.send_keys(Keys.CONTROL, "a")
    type_here(str(free_port()))
    tab_to("devices")  # keeps its default 2
    tab_to("deadline_s")
    tab_to("selection_criteria")
    type_here("data_qnt >= 0")
    tab_to("server_arguments")
    tab_to("client_arguments")
    tab_to("tags")
    type_here("keyboard")
    type_here(Keys.ENTER)
    ui.wait(lambda: f"task.html?id={task_id}" in ui.driver.current_url, "the new task's page")
    task = ui.stack.api.get(f"/api/tasks/{task_id}")
    assert task["tags"] == ["keyboard"] and task["selection_criteria"] == "data_qnt >= 0"


def app_archives(stack) -> tuple[Path, Path]:
    """A zip of tasks/app_numpy built here, and a zip with an entry leading out (../evil.py)."""
    folder = stack.files_dir / "apps"
    folder.mkdir(parents=True, exist_ok=True)
    app_zip = folder / "app_numpy.zip"
    app_zip.write_bytes(zip_folder(REPO_ROOT / "tasks" / "app_numpy"))
    evil_zip = folder / "evil.zip"
    with zipfile.ZipFile(evil_zip, "w") as archive:
        archive.writestr("pyproject.toml", "[project]\n")
        archive.writestr("../evil.py", "x = 1\n")
    return app_zip, evil_zip


def app_folder(stack, name: str, extra: dict[str, str] | None = None) -> Path:
    """A copy of tasks/app_numpy with a hidden file, a Python cache and ``extra`` files."""
    folder = stack.files_dir / name / "my_app"
    shutil.copytree(REPO_ROOT / "tasks" / "app_numpy", folder,
                    ignore=shutil.ignore_patterns("__pycache__", ".*"))
    (folder / ".gitignore").write_text("*.pyc\n")
    cache = folder / "numpyapp" / "__pycache__"
    cache.mkdir()
    (cache / "client_app.cpython-311.pyc").write_bytes(b"\0")
    for path, content in (extra or {}).items():
        (folder / path).write_text(content)
    return folder


APP_FILES = ["numpyapp/__init__.py", "numpyapp/client_app.py", "numpyapp/server_app.py",
             "pyproject.toml"]


def test_create_a_flower_app_from_its_archive_and_refuse_a_bad_one(ui):
    stack = ui.stack
    task_id = unique("webapp")
    app_zip, evil_zip = app_archives(stack)
    loose = stack.files_dir / "apps" / "server.py"
    loose.write_text("x = 1\n")

    ui.signed_in("create.html")
    fill(ui, {"task_id": task_id, "port": str(free_port()), "devices": "3",
              "deadline_s": "600", "server_arguments": "num-server-rounds=2"})
    ui.find("#archive").send_keys(str(app_zip))
    ui.find("#files").send_keys(str(loose))
    submit(ui, "create-form")
    ui.wait(lambda: "only one" in ui.field_error("archive"), "the both-chosen error")
    assert "an app archive and files are chosen" in ui.field_error("archive")
    assert ui.js("return document.activeElement.id") == "archive"
    with pytest.raises(ApiError):
        stack.api.get(f"/api/tasks/{task_id}")  # nothing was sent

    ui.find("#files").clear()
    submit(ui, "create-form")
    ui.wait(lambda: f"task.html?id={task_id}" in ui.driver.current_url, "the task page")
    ui.wait(lambda: "created with 4 files" in ui.text("#status"), "the created message")
    task = stack.api.get(f"/api/tasks/{task_id}")
    assert (task["kind"], task["devices"], task["deadline_s"]) == ("flower_app", 3, 600)
    assert sorted(f["name"] for f in task["files"]) == APP_FILES
    ui.wait(lambda: "numpyapp/client_app.py" in ui.text("#task-files"), "the app's files")
    assert ui.text("#task-kind") == "Flower App"

    ui.open(f"upload.html?id={task_id}")
    ui.find("#archive").send_keys(str(evil_zip))
    ui.find("#upload-form button[type=submit]").click()
    ui.wait(lambda: "evil.py" in ui.field_error("archive"), "the bad archive error")
    assert "'..'" in ui.field_error("archive")
    assert ui.field_error("files") == "" and ui.field_error("folder") == ""
    assert len(stack.api.get(f"/api/tasks/{task_id}")["files"]) == 4
    ui.no_alert()


def test_a_bad_archive_on_the_create_page_is_shown_at_its_field_and_nothing_stored(ui):
    stack = ui.stack
    task_id = unique("evilapp")
    _, evil_zip = app_archives(stack)
    not_zip = stack.files_dir / "apps" / "not-a-zip.fab"
    not_zip.write_text("plain text\n")

    ui.signed_in("create.html")
    fill(ui, {"task_id": task_id, "port": str(free_port())})
    ui.find("#archive").send_keys(str(evil_zip))
    submit(ui, "create-form")
    ui.wait(lambda: "evil.py" in ui.field_error("archive"), "the bad archive error")
    error = ui.field_error("archive")
    assert "'..'" in error and f"Task {task_id} was created" in error, error
    assert ui.js("return document.getElementById('archive').getAttribute('aria-invalid')") == "true"
    assert "create.html" in ui.driver.current_url
    task = stack.api.get(f"/api/tasks/{task_id}")
    assert task["files"] == [] and task["kind"] is None

    # Not a zip at all: refused by the server too, and the task's files stay as they were.
    ui.open(f"upload.html?id={task_id}")
    ui.find("#archive").send_keys(str(not_zip))
    ui.find("#upload-form button[type=submit]").click()
    ui.wait(lambda: "not a zip" in ui.field_error("archive"), "the not-a-zip error")
    assert stack.api.get(f"/api/tasks/{task_id}")["files"] == []
    ui.no_alert()


def test_create_a_flower_app_from_its_folder(ui):
    stack = ui.stack
    task_id = unique("webdir")
    folder = app_folder(stack, task_id)

    ui.signed_in("create.html")
    fill(ui, {"task_id": task_id, "port": str(free_port())})
    ui.find("#folder").send_keys(str(folder))
    submit(ui, "create-form")
    ui.wait(lambda: f"task.html?id={task_id}" in ui.driver.current_url, "the task page")
    ui.wait(lambda: "created with 4 files (2 left out" in ui.text("#status"),
            "the created message")
    task = stack.api.get(f"/api/tasks/{task_id}")
    assert task["kind"] == "flower_app"
    # the chosen folder's own name is not part of the paths; hidden files and caches stay out
    assert sorted(f["name"] for f in task["files"]) == APP_FILES
    source = (REPO_ROOT / "tasks" / "app_numpy" / "numpyapp" / "client_app.py").read_bytes()
    stored = {f["name"]: f["sha256"] for f in task["files"]}
    assert stored["numpyapp/client_app.py"] == hashlib.sha256(source).hexdigest()
    ui.wait(lambda: ui.text("#task-kind") == "Flower App", "the task's kind")
    assert "numpyapp/server_app.py" in ui.text("#task-files")

    # The upload page adds a folder's files under their paths, keeping the others.
    extra = app_folder(stack, f"{task_id}-extra", {"numpyapp/extra.py": "x = 2\n"})
    ui.open(f"upload.html?id={task_id}")
    ui.find("#folder").send_keys(str(extra))
    ui.find("#upload-form button[type=submit]").click()
    ui.wait(lambda: "Uploaded 5 file(s)" in ui.text("#status"), "the uploaded message")
    assert "2 left out" in ui.text("#status")
    assert "numpyapp/extra.py" in ui.text("#upload-result")
    assert ui.js("return document.getElementById('folder').files.length") == 0
    names = sorted(f["name"] for f in stack.api.get(f"/api/tasks/{task_id}")["files"])
    assert names == sorted([*APP_FILES, "numpyapp/extra.py"])
    ui.no_alert()


def test_a_folder_is_checked_before_anything_is_sent(ui):
    stack = ui.stack
    task_id = unique("baddir")
    bad = app_folder(stack, task_id, {"numpyapp/bad name.py": "x = 1\n"})
    app_zip, _ = app_archives(stack)

    ui.signed_in("create.html")
    fill(ui, {"task_id": task_id, "port": str(free_port())})
    ui.find("#folder").send_keys(str(bad))
    submit(ui, "create-form")
    ui.wait(lambda: "numpyapp/bad name.py" in ui.field_error("folder"), "the folder's error")
    assert ui.field_error("archive") == "" and ui.field_error("files") == ""
    assert ui.js("return document.activeElement.id") == "folder"

    ui.find("#archive").send_keys(str(app_zip))
    submit(ui, "create-form")
    ui.wait(lambda: "an app archive and a folder are chosen" in ui.field_error("archive"),
            "the archive-and-folder error")
    assert ui.field_error("folder") == ""
    with pytest.raises(ApiError) as missing:  # nothing was sent
        stack.api.get(f"/api/tasks/{task_id}")
    assert missing.value.status == 404

    ui.open(f"upload.html?id={task_id}")
    ui.find("#upload-form button[type=submit]").click()
    ui.wait(lambda: "a folder or at least one file" in ui.field_error("files"),
            "the nothing-chosen error")
    ui.no_alert()


LIST_METRIC_SERVER = """\
from task_daemon_lib import TaskReporter

reporter = TaskReporter()
for task_round in (1, 2):
    # A Flower App's list metric arrives element by element (flower_runtime.metrics).
    reporter.send_stats(task_round, accuracy=0.4 * task_round, **{
        "evaluate.recall[0]": 0.1 * task_round, "evaluate.recall[1]": 0.2 * task_round,
        "evaluate.recall[10]": 0.3 * task_round, "evaluate.recall[1]@dev-a": 0.5})
reporter.send_info("Finished")
"""


def test_a_list_metric_is_one_chart_with_a_series_per_element(ui):
    stack = ui.stack
    task_id = unique("weblist")
    stack.api.post("/api/tasks", {"task_id": task_id})
    server = stack.files_dir / task_id / "server.py"
    server.parent.mkdir(parents=True)
    server.write_text(LIST_METRIC_SERVER)
    stack.api.upload_files(task_id, [server])
    stack.api.post(f"/api/tasks/{task_id}/start", {})
    ui.signed_in(f"task.html?id={task_id}")
    ui.wait(lambda: ui.text("#task-status") == "finished", "status finished", timeout=20)
    ui.wait(lambda: chart_points(ui, "accuracy") == 2, "two rounds of accuracy")
    charts = ui.js("return [...document.querySelectorAll('.chart')].map(c => c.dataset.metric)")
    assert charts == ["accuracy", "evaluate.recall", "evaluate.recall@dev-a"]
    recall = ".chart[data-metric='evaluate.recall']"
    assert ui.js(f"return [...document.querySelectorAll(\"{recall} path.series-line\")]"
                 ".map(p => p.dataset.series)") == [
        "evaluate.recall[0]", "evaluate.recall[1]", "evaluate.recall[10]"]
    assert ui.js(f"return [...document.querySelectorAll(\"{recall} .chart-legend li\")]"
                 ".map(li => li.innerText.trim())") == [
        "evaluate.recall[0]", "evaluate.recall[1]", "evaluate.recall[10]"]
    assert ui.js(f"return document.querySelectorAll(\"{recall} circle.series-point\").length"
                 ) == 6
    assert ui.js("return document.querySelector(\"" + recall + " circle[data-series="
                 "'evaluate.recall[1]'][data-round='2']\").dataset.value") == "0.4"
    ui.no_alert()
