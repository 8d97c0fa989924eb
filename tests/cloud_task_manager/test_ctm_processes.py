"""Task servers as real child processes: outcomes, stop, triggers, reconcile and task files."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ctm_support import SLEEPING_SERVER, new_task, upload, wait_for
from sqlalchemy import update
from sqlalchemy.orm import Session
from support import Cloud, start_cloud

from agata_common.config import Settings
from agata_contracts.tasks import (
    CLIENT_REQUESTING_TASK,
    DOWNLOAD_TASK_FILE,
    GET_TASK_BY_ID,
    READ_TASK_FILE,
    START_SERVER_TASK,
    STOP_SERVER_TASK,
    UPLOAD_TASK_FILE,
    Task,
)
from agata_contracts.users import UPDATE_USER_INFO
from cloud_task_manager.models import TaskRecord
from cloud_task_manager.runs import RESTART_REASON, SHUTDOWN_REASON, RunController, RunTimings
from microservice_interconnect import BadRequest, Conflict, NotFound, Unauthorized, wire

FINISHING_SERVER = """\
import json, os, sys, time
from pathlib import Path
from task_daemon_lib import TaskReporter

reporter = TaskReporter()
Path("argv.json").write_text(json.dumps(
    {"argv": sys.argv[1:], "task": os.environ.get("AGATA_TASK_ID")}))
time.sleep(0.5)
reporter.send_info("Finished")
"""

ERROR_SERVER = """\
import sys
from task_daemon_lib import TaskReporter

TaskReporter().send_error("boom: the model diverged")
sys.exit(1)
"""

CRASHING_SERVER = """\
import sys

sys.stderr.write("loading data\\nthe disk is on fire\\n")
sys.exit(3)
"""

STUBBORN_SERVER = """\
import signal, time
from pathlib import Path

signal.signal(signal.SIGTERM, signal.SIG_IGN)
Path("ready").write_text("yes")
while True:
    time.sleep(1)
"""


TRIGGERING_SERVER = """\
import time
from pathlib import Path
from task_daemon_lib import TaskReporter

reporter = TaskReporter()
for name in ("../evil", "/bin/sh", "missing", "evil", "a b", "", "server.py"):
    reporter.trigger(name, "y")
reporter.trigger("after", "x")
deadline = time.monotonic() + 10
while not Path("after.done").exists() and time.monotonic() < deadline:
    time.sleep(0.05)
reporter.send_info("Finished")
"""

AFTER_SCRIPT = """\
import sys
from pathlib import Path

Path("after.done").write_text(" ".join(sys.argv[1:]))
"""


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """Plain child processes: these servers leave marks in their task folder for the test to
    read, which a confined process cannot (tests/task_daemon_lib/test_tdl_confinement.py and
    tests/e2e/test_e2e_confinement.py cover the default executor)."""
    return make_settings(AGATA_CLOUD_TASK_MANAGER_EXECUTOR="subprocess")


def wait_status(cloud: Cloud, task_id: str, *statuses: str, timeout: float = 20) -> Task:
    deadline = time.monotonic() + timeout
    while True:
        task = cloud.client.call(GET_TASK_BY_ID, {"task_id": task_id})
        if task.status.value in statuses:
            return task
        assert time.monotonic() < deadline, f"{task_id} stayed {task.status}: {task}"
        time.sleep(0.05)


def folder(cloud: Cloud, task_id: str) -> Path:
    return cloud.task_manager.storage.task_dir(task_id)


def set_running(cloud: Cloud, task_id: str, pid: int) -> None:
    with Session(cloud.task_manager.records.engine) as session, session.begin():
        session.execute(update(TaskRecord).where(TaskRecord.id == task_id)
                        .values(status="running", server_pid=pid, runs=1))


def raw_call(cloud: Cloud, name: str, body: dict[str, Any]) -> tuple[int, dict]:
    status, _, envelope = wire.split_reply(cloud.client.call_raw(name, wire.dumps(body)))
    return status, envelope


def test_server_runs_with_its_arguments_until_finished(cloud: Cloud) -> None:
    new_task(cloud, "fin", FINISHING_SERVER, host="127.0.0.1", port=8123,
             server_arguments={"rounds": 3, "fraction": 0.5, "verbose": True})
    started = cloud.client.call(START_SERVER_TASK, {"task_id": "fin",
                                                    "server_arguments": {"rounds": 5}})
    assert (started.status.value, started.runs, started.status_reason) == ("running", 1, None)
    assert started.started_at is not None and started.ended_at is None
    finished = wait_status(cloud, "fin", "finished", "failed")
    assert (finished.status.value, finished.status_reason) == ("finished", None)
    assert finished.ended_at is not None and finished.ended_at >= finished.started_at
    seen = json.loads((folder(cloud, "fin") / "argv.json").read_text())
    assert seen["task"] == "fin"
    assert seen["argv"] == ["--host", "127.0.0.1", "--port", "8123", "--rounds", "5",
                            "--fraction", "0.5", "--verbose", "true"]
    # The override was for that run only; a second run counts up.
    assert cloud.client.call(GET_TASK_BY_ID, {"task_id": "fin"}).server_arguments["rounds"] == 3
    assert cloud.client.call(START_SERVER_TASK, {"task_id": "fin"}).runs == 2
    assert wait_status(cloud, "fin", "finished", "failed").status.value == "finished"


def test_reported_error_fails_the_task_with_its_reason(cloud: Cloud) -> None:
    new_task(cloud, "err", ERROR_SERVER)
    cloud.client.call(START_SERVER_TASK, {"task_id": "err"})
    failed = wait_status(cloud, "err", "finished", "failed")
    assert failed.status.value == "failed"
    assert "boom" in failed.status_reason


def test_exit_code_fails_the_task_with_the_stderr_tail(cloud: Cloud) -> None:
    new_task(cloud, "crash", CRASHING_SERVER)
    cloud.client.call(START_SERVER_TASK, {"task_id": "crash"})
    failed = wait_status(cloud, "crash", "finished", "failed")
    assert failed.status.value == "failed"
    assert "exited with code 3" in failed.status_reason
    assert "the disk is on fire" in failed.status_reason


def test_start_conflicts(cloud: Cloud) -> None:
    new_task(cloud, "bare")
    with pytest.raises(Conflict) as info:
        cloud.client.call(START_SERVER_TASK, {"task_id": "bare"})
    assert "server.py" in info.value.message and "upload" in info.value.message
    task = cloud.client.call(GET_TASK_BY_ID, {"task_id": "bare"})
    assert (task.status.value, task.runs) == ("created", 0)
    with pytest.raises(NotFound):
        cloud.client.call(START_SERVER_TASK, {"task_id": "ghost"})

    upload(cloud, "bare", "server.py", SLEEPING_SERVER)
    assert cloud.client.call(START_SERVER_TASK, {"task_id": "bare"}).status.value == "running"
    with pytest.raises(Conflict) as info:
        cloud.client.call(START_SERVER_TASK, {"task_id": "bare"})
    assert "already running" in info.value.message
    assert cloud.client.call(GET_TASK_BY_ID, {"task_id": "bare"}).runs == 1
    stopped = cloud.client.call(STOP_SERVER_TASK, {"task_id": "bare"})
    assert (stopped.status.value, stopped.status_reason) == ("stopped", "stopped by the operator")
    with pytest.raises(Conflict) as info:
        cloud.client.call(STOP_SERVER_TASK, {"task_id": "bare"})
    assert "not running" in info.value.message


def test_stop_kills_a_server_ignoring_sigterm_after_the_grace_period(cloud: Cloud) -> None:
    assert cloud.settings.cloud_task_manager.stop_grace_s == 2
    new_task(cloud, "stubborn", STUBBORN_SERVER)
    cloud.client.call(START_SERVER_TASK, {"task_id": "stubborn"})
    wait_for(lambda: (folder(cloud, "stubborn") / "ready").exists())
    with Session(cloud.task_manager.records.engine) as session:
        pid = session.get(TaskRecord, "stubborn").server_pid
    assert pid is not None
    began = time.monotonic()
    stopped = cloud.client.call(STOP_SERVER_TASK, {"task_id": "stubborn"})
    elapsed = time.monotonic() - began
    assert stopped.status.value == "stopped"
    assert stopped.status_reason == "stopped by the operator"
    assert 1.5 <= elapsed < 8, elapsed
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with Session(cloud.task_manager.records.engine) as session:
        assert session.get(TaskRecord, "stubborn").server_pid is None


def test_a_run_past_its_deadline_is_stopped_and_recorded_failed(cloud: Cloud) -> None:
    new_task(cloud, "late", STUBBORN_SERVER, deadline_s=1)
    started = cloud.client.call(START_SERVER_TASK, {"task_id": "late"})
    assert started.deadline_s == 1
    wait_for(lambda: (folder(cloud, "late") / "ready").exists())
    with Session(cloud.task_manager.records.engine) as session:
        pid = session.get(TaskRecord, "late").server_pid
    # 1 s deadline, then SIGTERM (ignored) and SIGKILL after the 2 s grace
    task = wait_status(cloud, "late", "failed", "finished", "stopped", timeout=15)
    assert task.status.value == "failed", task
    assert task.status_reason is not None
    assert "deadline of 1 s" in task.status_reason and "0 round(s)" in task.status_reason
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_run_that_ends_in_time_keeps_its_outcome(cloud: Cloud) -> None:
    new_task(cloud, "quick", FINISHING_SERVER, deadline_s=30)
    cloud.client.call(START_SERVER_TASK, {"task_id": "quick"})
    task = wait_status(cloud, "quick", "failed", "finished", "stopped")
    assert (task.status.value, task.status_reason) == ("finished", None)


def test_shutdown_stops_running_servers_with_the_shutdown_reason(cloud: Cloud) -> None:
    new_task(cloud, "down", SLEEPING_SERVER)
    cloud.client.call(START_SERVER_TASK, {"task_id": "down"})
    cloud.task_manager.runs.shutdown()
    task = cloud.client.call(GET_TASK_BY_ID, {"task_id": "down"})
    assert (task.status.value, task.status_reason) == ("stopped", SHUTDOWN_REASON)
    assert not cloud.task_manager.runs.servers.is_running("down")


def test_triggers_run_only_scripts_of_the_task_folder(cloud: Cloud, tmp_path: Path) -> None:
    marker = tmp_path / "evil-ran"
    evil = f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
    new_task(cloud, "trig", TRIGGERING_SERVER)
    upload(cloud, "trig", "after.py", AFTER_SCRIPT)
    storage_root = cloud.task_manager.storage.root
    (storage_root / "evil.py").write_text(evil)  # what "../evil" would name
    (tmp_path / "evil.py").write_text(evil)
    cloud.client.call(START_SERVER_TASK, {"task_id": "trig"})
    finished = wait_status(cloud, "trig", "finished", "failed")
    assert (finished.status.value, finished.status_reason) == ("finished", None)
    assert (folder(cloud, "trig") / "after.done").read_text() == "x"
    time.sleep(0.5)
    assert not marker.exists()


def test_reconcile_fails_tasks_left_running_without_killing_strangers(cloud: Cloud) -> None:
    new_task(cloud, "stale", SLEEPING_SERVER)
    new_task(cloud, "other", SLEEPING_SERVER)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stranger = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        set_running(cloud, "stale", gone.pid)
        set_running(cloud, "other", stranger.pid)
        assert cloud.task_manager.runs.reconcile() == 2
        for task_id in ("stale", "other"):
            task = cloud.client.call(GET_TASK_BY_ID, {"task_id": task_id})
            assert (task.status.value, task.status_reason) == ("failed", RESTART_REASON)
            assert task.ended_at is not None
        assert stranger.poll() is None, "a process not running the task's server was killed"
        assert cloud.task_manager.runs.reconcile() == 0
        # The task can be started again afterwards.
        assert cloud.client.call(START_SERVER_TASK, {"task_id": "stale"}).runs == 2
    finally:
        stranger.kill()
        stranger.wait()


def test_a_restarted_manager_kills_the_orphaned_server(cloud: Cloud) -> None:
    new_task(cloud, "orphan", SLEEPING_SERVER)
    task_folder = folder(cloud, "orphan")
    orphan = subprocess.Popen([sys.executable, "-u", str(task_folder / "server.py"),
                               "--host", "127.0.0.1", "--port", "8000"],
                              cwd=task_folder, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        set_running(cloud, "orphan", orphan.pid)
        manager = cloud.task_manager
        restarted = RunController(manager.records, manager.storage, manager.results,
                                   timings=RunTimings(stop_grace_s=2))
        try:
            restarted.reconcile()
            assert orphan.wait(10) < 0, "the orphan was not killed"
            task = cloud.client.call(GET_TASK_BY_ID, {"task_id": "orphan"})
            assert (task.status.value, task.status_reason) == ("failed", RESTART_REASON)
        finally:
            restarted.shutdown()
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()


def test_upload_refuses_bad_file_names_and_unknown_tasks(cloud: Cloud) -> None:
    new_task(cloud, "files")
    for name in ("a//b.py", "a/../b.py", "a\\b.py", "..", "../x.py", "x..py", "/etc/passwd", "",
                 ".hidden", "-rf", "a b.py", "nul\x00.py", "x" * 129):
        status, envelope = raw_call(cloud, UPLOAD_TASK_FILE.name, {
            "task_id": "files", "filename": name, "content": base64.b64encode(b"1").decode()})
        assert status == 400, (name, envelope)
        assert "file" in envelope["exception"] or "path" in envelope["exception"], envelope
    status, envelope = raw_call(cloud, UPLOAD_TASK_FILE.name, {
        "task_id": "files", "filename": "ok.py", "content": "***not base64***"})
    assert status == 400 and envelope["errors"][0]["field"] == "content"
    with pytest.raises(NotFound):
        upload(cloud, "ghost", "ok.py", b"1")
    assert cloud.client.call(GET_TASK_BY_ID, {"task_id": "files"}).files == []
    assert sorted(p.name for p in folder(cloud, "files").iterdir()) == []

    first = upload(cloud, "files", "model.bin", b"\x00\x01\xff" * 10)
    assert (first.name, first.size) == ("model.bin", 30)
    assert first.sha256 == hashlib.sha256(b"\x00\x01\xff" * 10).hexdigest()
    second = upload(cloud, "files", "model.bin", b"v2")
    assert second.sha256 == hashlib.sha256(b"v2").hexdigest()
    files = cloud.client.call(GET_TASK_BY_ID, {"task_id": "files"}).files
    assert [(f.name, f.size, f.sha256) for f in files] == [("model.bin", 2, second.sha256)]
    assert (folder(cloud, "files") / "model.bin").read_bytes() == b"v2"


def test_upload_size_limit(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    small = start_cloud(make_settings(AGATA_CLOUD_TASK_MANAGER_MAX_FILE_MB="0.001"),
                        f"sqlite:///{tmp_path / 'small.db'}")
    try:
        limit = int(0.001 * 1024 * 1024)
        new_task(small, "lim")
        assert upload(small, "lim", "fits.bin", b"a" * limit).size == limit
        with pytest.raises(BadRequest) as info:
            upload(small, "lim", "big.bin", b"a" * (limit + 1))
        assert "limit" in info.value.message and "big.bin" in info.value.message
        names = [f.name for f in small.client.call(GET_TASK_BY_ID, {"task_id": "lim"}).files]
        assert names == ["fits.bin"]
        assert not (small.task_manager.storage.task_dir("lim") / "big.bin").exists()
    finally:
        small.stop()


def test_download_needs_the_task_credential(cloud: Cloud) -> None:
    new_task(cloud, "dl", SLEEPING_SERVER)
    new_task(cloud, "dl2", SLEEPING_SERVER)
    content = bytes(range(256)) * 8
    upload(cloud, "dl", "client.py", content)
    upload(cloud, "dl2", "client.py", b"other")
    for task_id in ("dl", "dl2"):
        cloud.client.call(START_SERVER_TASK, {"task_id": task_id})
    cloud.client.call(UPDATE_USER_INFO, {"user_id": "dev"})
    offers = {o.task_id: o for o in cloud.client.call(CLIENT_REQUESTING_TASK,
                                                      {"client_id": "dev"}).tasks}
    credential = offers["dl"].download_credential
    assert credential != offers["dl2"].download_credential
    # each device has its own credential for a run, worth nothing to another device
    cloud.client.call(UPDATE_USER_INFO, {"user_id": "dev2"})
    (other,) = [o for o in cloud.client.call(CLIENT_REQUESTING_TASK,
                                             {"client_id": "dev2"}).tasks if o.task_id == "dl"]
    assert other.download_credential != credential
    for who, given in (("dev2", credential), ("dev", other.download_credential)):
        with pytest.raises(Unauthorized):
            cloud.client.call(DOWNLOAD_TASK_FILE, {"task_id": "dl", "filename": "client.py",
                                                   "credential": given, "client_id": who})

    got = cloud.client.call(DOWNLOAD_TASK_FILE, {"task_id": "dl", "filename": "client.py",
                                                 "credential": credential, "client_id": "dev"})
    assert got.content == content and got.size == len(content)
    assert got.sha256 == hashlib.sha256(content).hexdigest()
    as_operator = cloud.client.call(READ_TASK_FILE, {"task_id": "dl", "filename": "client.py"})
    assert as_operator.content == content
    # no flag in a body grants more than the credential does
    status, envelope = raw_call(cloud, DOWNLOAD_TASK_FILE.name, {
        "task_id": "dl", "filename": "client.py", "operator": True})
    assert status == 400 and "operator" in str(envelope), envelope

    for credential_given in (None, "", "0" * 64, offers["dl2"].download_credential):
        with pytest.raises(Unauthorized):
            cloud.client.call(DOWNLOAD_TASK_FILE, {"task_id": "dl", "filename": "client.py",
                                                   "credential": credential_given,
                                                   "client_id": "dev"})
    with pytest.raises(Unauthorized):  # whose credential it is must be said
        cloud.client.call(DOWNLOAD_TASK_FILE, {"task_id": "dl", "filename": "client.py",
                                               "credential": credential})
    with pytest.raises(NotFound) as info:
        cloud.client.call(DOWNLOAD_TASK_FILE, {"task_id": "dl", "filename": "missing.py",
                                               "credential": credential, "client_id": "dev"})
    assert "missing.py" in info.value.message
    with pytest.raises(NotFound):
        cloud.client.call(DOWNLOAD_TASK_FILE, {"task_id": "ghost", "filename": "client.py",
                                               "credential": credential, "client_id": "dev"})
    for name in ("../dl2/client.py", "..", "/etc/passwd"):
        status, envelope = raw_call(cloud, READ_TASK_FILE.name, {
            "task_id": "dl", "filename": name})
        assert status == 400, envelope

    # a credential lives as long as its run
    def download(with_credential: str) -> Any:
        return cloud.client.call(DOWNLOAD_TASK_FILE, {"task_id": "dl", "filename": "client.py",
                                                      "credential": with_credential,
                                                      "client_id": "dev"})

    cloud.client.call(STOP_SERVER_TASK, {"task_id": "dl"})
    with pytest.raises(Unauthorized) as ended:
        download(credential)
    assert "not running" in ended.value.message
    cloud.client.call(START_SERVER_TASK, {"task_id": "dl"})
    with pytest.raises(Unauthorized):
        download(credential)
    offers = {o.task_id: o for o in cloud.client.call(CLIENT_REQUESTING_TASK,
                                                      {"client_id": "dev"}).tasks}
    assert offers["dl"].download_credential != credential
    assert download(offers["dl"].download_credential).content == content


ENV_DUMPING_SERVER = """\
import json, os
from pathlib import Path
from task_daemon_lib import TaskReporter

Path("environ.json").write_text(json.dumps(dict(os.environ)))
TaskReporter().send_info("Finished")
"""


def test_a_task_server_gets_no_secret_of_its_manager(cloud: Cloud,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {"AGATA_SERVER_GATEWAY_API_TOKEN": "operator-secret-0123456789",
               "AGATA_CLIENT_PARAMS_CLIENT_TOKEN": "device-secret-0123456789",
               "AGATA_CLOUD_TASK_MANAGER_DOWNLOAD_SECRET": "download-secret-0123456789",
               "AGATA_CLOUD_TASK_MANAGER_DATABASE_URL": "postgresql://u:pw@db/x",
               "AWS_SECRET_ACCESS_KEY": "cloud-key"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    new_task(cloud, "envtask", ENV_DUMPING_SERVER)
    cloud.client.call(START_SERVER_TASK, {"task_id": "envtask"})
    assert wait_status(cloud, "envtask", "finished", "failed").status.value == "finished"
    seen = json.loads((folder(cloud, "envtask") / "environ.json").read_text())
    assert not set(secrets) & set(seen), sorted(seen)
    assert not any(value in json.dumps(seen) for value in secrets.values())
    assert seen["AGATA_TASK_ID"] == "envtask" and "PATH" in seen
