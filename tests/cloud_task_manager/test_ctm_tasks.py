"""Task records over RabbitMQ on SQLite and PostgreSQL: CRUD, criteria, metrics and offers."""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from support import Cloud

from agata_contracts.tasks import (
    CLIENT_REQUESTING_TASK,
    CREATE_TASK,
    DOWNLOAD_TASK_FILE,
    GET_TASK_BY_ID,
    GET_TASK_METRICS,
    LIST_TASKS,
    START_SERVER_TASK,
    STOP_SERVER_TASK,
    UPDATE_TASK,
    UPLOAD_TASK_FILE,
    Task,
)
from agata_contracts.users import UPDATE_USER_INFO
from cloud_task_manager.models import RoundMetricRecord, TaskRecord
from microservice_interconnect import Conflict, NotFound, wire

SLEEPING_SERVER = """\
import time
from task_daemon_lib import TaskReporter

TaskReporter()
time.sleep(120)
"""

METRICS_SERVER = """\
from task_daemon_lib import TaskReporter

reporter = TaskReporter()
for task_round in (1, 2, 3):
    reporter.send_stats(task_round, loss=1.0 / task_round, accuracy=0.5 + task_round / 10)
reporter.send_info("Finished")
"""

BAD_CRITERIA = [
    "unknown_name > 3",
    "len(sensors) > 0",
    "().__class__.__bases__",
    "__import__('os')",
    "id.__class__.__name__ == 'str'",
    "sensors.count('x') > 0",
    "(" * 40 + "true" + ")" * 40,
    " or ".join(["data_qnt > 1"] * 200),
]


def raw_call(cloud: Cloud, name: str, body: dict[str, Any]) -> tuple[int, Any, dict, str]:
    """Call without client-side validation; return (status, return, envelope, raw text)."""
    reply = cloud.client.call_raw(name, wire.dumps(body))
    status, result, envelope = wire.split_reply(reply)
    return status, result, envelope, reply.decode()


def upload(cloud: Cloud, task_id: str, name: str, content: bytes) -> None:
    cloud.client.call(UPLOAD_TASK_FILE, {"task_id": task_id, "filename": name,
                                         "content": base64.b64encode(content).decode()})


def wait_status(cloud: Cloud, task_id: str, *statuses: str, timeout: float = 20) -> Task:
    deadline = time.monotonic() + timeout
    while True:
        task = cloud.client.call(GET_TASK_BY_ID, {"task_id": task_id})
        if task.status.value in statuses:
            return task
        assert time.monotonic() < deadline, f"{task_id} stayed {task.status}: {task}"
        time.sleep(0.05)


def secrets_of(cloud: Cloud, task_id: str) -> tuple[str, str]:
    with Session(cloud.task_manager.records.engine) as session:
        record = session.get(TaskRecord, task_id)
        assert record is not None
        return record.credential_hash, record.credential_nonce


def test_create_generates_an_id_and_refuses_duplicates(cloud_on_each_db: Cloud) -> None:
    client = cloud_on_each_db.client
    generated = client.call(CREATE_TASK, {"port": 8080})
    assert generated.id and generated.host == "127.0.0.1" and generated.port == 8080
    assert (generated.status.value, generated.status_reason, generated.runs) == ("created", None, 0)
    assert generated.files == [] and generated.started_at is None and generated.ended_at is None
    other = client.call(CREATE_TASK, {"port": 8080})
    assert other.id != generated.id

    named = client.call(CREATE_TASK, {
        "task_id": "4fe5", "host": "10.0.0.7", "port": 9090,
        "selection_criteria": "data_qnt >= 30 and 'camera' in sensors",
        "server_arguments": {"rounds": 3, "fraction": 0.5, "verbose": True, "name": "x"},
        "client_arguments": {"epochs": 2}, "tags": ["vision", "demo"]})
    assert named.id == "4fe5"
    assert named.server_arguments == {"rounds": 3, "fraction": 0.5, "verbose": True, "name": "x"}
    assert named.client_arguments == {"epochs": 2} and named.tags == ["vision", "demo"]
    with pytest.raises(Conflict) as info:
        client.call(CREATE_TASK, {"task_id": "4fe5", "port": 1})
    assert "4fe5" in info.value.message and "already exists" in info.value.message
    assert client.call(GET_TASK_BY_ID, {"task_id": "4fe5"}).port == 9090


def test_get_and_list_with_status_filter_and_paging(cloud_on_each_db: Cloud) -> None:
    client = cloud_on_each_db.client
    ids = [client.call(CREATE_TASK, {"task_id": f"t{index}", "port": 7000 + index}).id
           for index in range(4)]
    with Session(cloud_on_each_db.task_manager.records.engine) as session, session.begin():
        session.execute(update(TaskRecord).where(TaskRecord.id == "t1")
                        .values(status="finished"))

    everything = client.call(LIST_TASKS, {})
    assert everything.total == 4
    assert [task.id for task in everything.tasks] == list(reversed(ids))  # newest first
    pages = [client.call(LIST_TASKS, {"limit": 3, "offset": offset}) for offset in (0, 3)]
    assert [[t.id for t in page.tasks] for page in pages] == [["t3", "t2", "t1"], ["t0"]]
    assert {page.total for page in pages} == {4}

    finished = client.call(LIST_TASKS, {"status": "finished"})
    assert ([t.id for t in finished.tasks], finished.total) == (["t1"], 1)
    created = client.call(LIST_TASKS, {"status": "created", "limit": 1, "offset": 1})
    assert ([t.id for t in created.tasks], created.total) == (["t2"], 3)
    assert client.call(LIST_TASKS, {"status": "running"}).total == 0

    assert client.call(GET_TASK_BY_ID, {"task_id": "t1"}).status.value == "finished"
    with pytest.raises(NotFound) as info:
        client.call(GET_TASK_BY_ID, {"task_id": "nope"})
    assert "nope" in info.value.message
    status, _, envelope, _ = raw_call(cloud_on_each_db, LIST_TASKS.name, {"status": "sleeping"})
    assert status == 400 and envelope["errors"][0]["field"] == "status"
    status, _, envelope, _ = raw_call(cloud_on_each_db, GET_TASK_BY_ID.name,
                                      {"task_id": "../etc"})
    assert status == 400 and envelope["errors"][0]["field"] == "task_id"


def test_update_changes_given_fields_and_refuses_moving_a_running_task(
        cloud_on_each_db: Cloud) -> None:
    client = cloud_on_each_db.client
    task = client.call(CREATE_TASK, {"task_id": "upd", "port": 7100, "tags": ["a"],
                                     "server_arguments": {"rounds": 1}})
    changed = client.call(UPDATE_TASK, {"task_id": "upd", "host": "10.1.2.3", "port": 7101,
                                        "selection_criteria": "data_qnt > 5",
                                        "client_arguments": {"lr": 0.1}})
    assert (changed.host, changed.port, changed.selection_criteria) == (
        "10.1.2.3", 7101, "data_qnt > 5")
    assert changed.client_arguments == {"lr": 0.1}
    assert changed.tags == ["a"] and changed.server_arguments == {"rounds": 1}
    assert changed.modified > task.modified and changed.created == task.created
    cleared = client.call(UPDATE_TASK, {"task_id": "upd", "tags": [], "selection_criteria": ""})
    assert cleared.tags == [] and cleared.selection_criteria == ""

    upload(cloud_on_each_db, "upd", "server.py", SLEEPING_SERVER.encode())
    assert client.call(START_SERVER_TASK, {"task_id": "upd"}).status.value == "running"
    for change in ({"host": "10.9.9.9"}, {"port": 7102}, {"host": "10.9.9.9", "port": 1}):
        with pytest.raises(Conflict) as info:
            client.call(UPDATE_TASK, {"task_id": "upd", **change})
        assert "running" in info.value.message
        assert all(name in info.value.message for name in change)
    same_place = client.call(UPDATE_TASK, {"task_id": "upd", "host": "10.1.2.3", "port": 7101,
                                           "tags": ["live"]})
    assert same_place.tags == ["live"] and same_place.status.value == "running"
    stopped = client.call(STOP_SERVER_TASK, {"task_id": "upd"})
    assert stopped.status.value == "stopped"
    assert client.call(UPDATE_TASK, {"task_id": "upd", "port": 7102}).port == 7102
    with pytest.raises(NotFound):
        client.call(UPDATE_TASK, {"task_id": "ghost", "port": 1})


def test_criteria_are_checked_at_create_and_at_update(cloud_on_each_db: Cloud) -> None:
    cloud_on_each_db.client.call(CREATE_TASK, {"task_id": "crit", "port": 7200,
                                               "selection_criteria": "data_qnt > 1"})
    for criteria in BAD_CRITERIA:
        for name, body in ((CREATE_TASK.name, {"port": 7201}),
                           (UPDATE_TASK.name, {"task_id": "crit"})):
            status, _, envelope, _ = raw_call(cloud_on_each_db, name,
                                              {**body, "selection_criteria": criteria})
            assert status == 400, (name, criteria, envelope)
            assert [p["field"] for p in envelope["errors"]] == ["selection_criteria"], envelope
            assert "selection_criteria" in envelope["exception"]
    listed = cloud_on_each_db.client.call(LIST_TASKS, {})
    assert [(t.id, t.selection_criteria) for t in listed.tasks] == [("crit", "data_qnt > 1")]


def test_host_and_port_are_not_argument_names(cloud_on_each_db: Cloud) -> None:
    cloud_on_each_db.client.call(CREATE_TASK, {"task_id": "args", "port": 7300})
    for name, body, field in [
        (CREATE_TASK.name, {"port": 7301, "server_arguments": {"host": "x"}}, "server_arguments"),
        (CREATE_TASK.name, {"port": 7301, "client_arguments": {"port": 1}}, "client_arguments"),
        (UPDATE_TASK.name, {"task_id": "args", "server_arguments": {"port": 2}},
         "server_arguments"),
        (UPDATE_TASK.name, {"task_id": "args", "client_arguments": {"host": "h", "a": 1}},
         "client_arguments"),
        (START_SERVER_TASK.name, {"task_id": "args", "server_arguments": {"host": "h"}},
         "server_arguments"),
        (CREATE_TASK.name, {"port": 7301, "server_arguments": {"--x": 1}}, "server_arguments"),
    ]:
        status, _, envelope, _ = raw_call(cloud_on_each_db, name, body)
        assert status == 400, (body, envelope)
        assert any(p["field"].startswith(field) for p in envelope["errors"]), envelope
    task = cloud_on_each_db.client.call(GET_TASK_BY_ID, {"task_id": "args"})
    assert (task.server_arguments, task.client_arguments, task.status.value) == ({}, {},
                                                                                "created")


def test_round_metrics_are_stored_per_round_in_their_own_table(cloud_on_each_db: Cloud) -> None:
    client = cloud_on_each_db.client
    client.call(CREATE_TASK, {"task_id": "met", "port": 7400})
    assert client.call(GET_TASK_METRICS, {"task_id": "met"}).rounds == []
    upload(cloud_on_each_db, "met", "server.py", METRICS_SERVER.encode())
    client.call(START_SERVER_TASK, {"task_id": "met"})
    finished = wait_status(cloud_on_each_db, "met", "finished", "failed")
    assert (finished.status.value, finished.status_reason) == ("finished", None)

    metrics = client.call(GET_TASK_METRICS, {"task_id": "met"})
    assert (metrics.task_id, metrics.run) == ("met", 1)
    assert [r.round for r in metrics.rounds] == [1, 2, 3]
    for entry in metrics.rounds:
        assert entry.metrics == pytest.approx({"loss": 1.0 / entry.round,
                                               "accuracy": 0.5 + entry.round / 10})
    assert client.call(GET_TASK_METRICS, {"task_id": "met", "run": 1}) == metrics
    assert client.call(GET_TASK_METRICS, {"task_id": "met", "run": 2}).rounds == []
    with pytest.raises(NotFound):
        client.call(GET_TASK_METRICS, {"task_id": "ghost"})

    with Session(cloud_on_each_db.task_manager.records.engine) as session:
        rows = session.scalars(select(RoundMetricRecord).where(
            RoundMetricRecord.task_id == "met").order_by(RoundMetricRecord.round)).all()
    assert [(row.run, row.round) for row in rows] == [(1, 1), (1, 2), (1, 3)]
    assert rows[2].metrics == pytest.approx({"loss": 1 / 3, "accuracy": 0.8})


def test_offers_running_matching_tasks_without_any_stored_secret(
        cloud_on_each_db: Cloud) -> None:
    cloud = cloud_on_each_db
    client = cloud.client
    client.call(UPDATE_USER_INFO, {"user_id": "cam", "data_qnt": 50, "sensors": ["camera"]})
    client.call(UPDATE_USER_INFO, {"user_id": "small", "data_qnt": 5, "sensors": ["camera"]})
    replies: list[str] = []

    def record(name: str, body: dict[str, Any]) -> Any:
        status, result, envelope, text = raw_call(cloud, name, body)
        assert status == 200, envelope
        replies.append(text)
        if name != CLIENT_REQUESTING_TASK.name:
            assert "credential" not in text  # operators never see any credential
        return result

    record(CREATE_TASK.name, {"task_id": "vision", "host": "10.0.0.5", "port": 7500,
                              "selection_criteria": "data_qnt >= 30 and 'camera' in sensors",
                              "client_arguments": {"epochs": 2, "lr": 0.01},
                              "tags": ["vision"]})
    record(CREATE_TASK.name, {"task_id": "open"})  # no port of its own
    record(CREATE_TASK.name, {"task_id": "idle", "port": 7502})  # never started
    model = b"weights" * 100
    for task_id in ("vision", "open", "idle"):
        upload(cloud, task_id, "server.py", SLEEPING_SERVER.encode())
    upload(cloud, "vision", "client.py", model)
    for task_id in ("vision", "open"):
        record(START_SERVER_TASK.name, {"task_id": task_id})

    cam = record(CLIENT_REQUESTING_TASK.name, {"client_id": "cam"})["tasks"]
    small = record(CLIENT_REQUESTING_TASK.name, {"client_id": "small"})["tasks"]
    assert sorted(offer["task_id"] for offer in cam) == ["open", "vision"]
    assert [offer["task_id"] for offer in small] == ["open"]
    # a script task without a port of its own: its run's server got a free one, offered
    assert small[0]["host"] == "127.0.0.1" and isinstance(small[0]["port"], int)
    vision = next(offer for offer in cam if offer["task_id"] == "vision")
    assert (vision["host"], vision["port"]) == ("10.0.0.5", 7500)
    assert vision["client_arguments"] == {"epochs": 2, "lr": 0.01}
    assert vision["tags"] == ["vision"]
    files = {f["name"]: f for f in vision["files"]}
    assert files["client.py"] == {"name": "client.py", "size": len(model),
                                  "sha256": hashlib.sha256(model).hexdigest()}
    assert set(files) == {"client.py", "server.py"}
    assert vision["download_credential"]
    got = client.call(DOWNLOAD_TASK_FILE, {"task_id": "vision", "filename": "client.py",
                                           "credential": vision["download_credential"],
                                           "client_id": "cam"})
    assert got.content == model and got.sha256 == files["client.py"]["sha256"]

    # Newly matching stats take effect on the next request; a stopped task is no longer offered.
    client.call(UPDATE_USER_INFO, {"user_id": "small", "data_qnt": 31})
    assert {o["task_id"] for o in record(CLIENT_REQUESTING_TASK.name,
                                         {"client_id": "small"})["tasks"]} == {"open", "vision"}
    record(STOP_SERVER_TASK.name, {"task_id": "open"})
    assert [o["task_id"] for o in record(CLIENT_REQUESTING_TASK.name,
                                         {"client_id": "cam"})["tasks"]] == ["vision"]
    with pytest.raises(NotFound) as info:
        client.call(CLIENT_REQUESTING_TASK, {"client_id": "stranger"})
    assert "stranger" in info.value.message

    record(GET_TASK_BY_ID.name, {"task_id": "vision"})
    record(LIST_TASKS.name, {})
    record(UPDATE_TASK.name, {"task_id": "idle", "tags": ["x"]})
    for task_id in ("vision", "open", "idle"):
        stored_hash, nonce = secrets_of(cloud, task_id)
        for text in replies:
            assert stored_hash not in text and nonce not in text
    for text in replies:
        for key in ("credential_hash", "credential_nonce", "server_pid", "nonce"):
            assert key not in text
