"""A task's own port is optional (issue 21): created without one, shown as null, kept through
an older database's upgrade, and picked free when a run of a portless task starts."""

from __future__ import annotations

import socket
from pathlib import Path

from sqlalchemy import MetaData, insert, inspect, select
from sqlalchemy.orm import Session
from support import Cloud

from agata_common.database import make_engine
from agata_contracts.tasks import CREATE_TASK, GET_TASK_BY_ID, UPDATE_TASK, CreateTaskRequest
from cloud_task_manager.doors import address, allocate_port, split_address
from cloud_task_manager.models import TaskRecord
from cloud_task_manager.records import TaskRecords
from cloud_task_manager.storage import Credentials


def test_a_task_is_created_without_a_port_and_may_get_one_later(cloud_on_each_db: Cloud) -> None:
    client = cloud_on_each_db.client
    created = client.call(CREATE_TASK, {"task_id": "portless"})
    assert created.port is None
    assert client.call(GET_TASK_BY_ID, {"task_id": "portless"}).port is None
    assert client.call(UPDATE_TASK, {"task_id": "portless", "port": 8123}).port == 8123
    assert client.call(CREATE_TASK, {"task_id": "own", "port": 8124}).port == 8124


def test_an_older_database_whose_port_is_required_is_upgraded(database_url: str,
                                                               tmp_path: Path) -> None:
    engine = make_engine(database_url, tmp_path / "unused.db")
    try:
        older = MetaData()
        tasks = TaskRecord.__table__.to_metadata(older)
        tasks.c.port.nullable = False
        older.create_all(engine)
        with engine.begin() as connection:
            connection.execute(insert(tasks).values(
                id="old", host="127.0.0.1", port=8090, selection_criteria="",
                server_arguments={}, client_arguments={}, tags=[], devices=2, status="created",
                runs=0, credential_hash="h", credential_nonce="n"))
        with engine.connect() as connection:
            assert not {c["name"]: c for c in inspect(connection).get_columns("tasks")}[
                "port"]["nullable"]

        records = TaskRecords(engine, Credentials(b"k" * 32))
        records.create_schema()
        records.create_schema()  # a second start finds nothing left to do
        with engine.connect() as connection:
            assert {c["name"]: c for c in inspect(connection).get_columns("tasks")}[
                "port"]["nullable"]
        assert records.create(CreateTaskRequest(task_id="new")).port is None
        assert records.task("old").port == 8090
        with Session(engine) as session:
            assert session.scalars(select(TaskRecord.own_port).order_by(TaskRecord.id)).all() \
                == [None, 8090]
    finally:
        engine.dispose()


def test_a_door_is_a_free_port_on_its_host_and_an_address_splits_back() -> None:
    port = allocate_port("127.0.0.1")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))  # it was free
    assert split_address(address("127.0.0.1", port)) == ("127.0.0.1", port)
    assert split_address(address("::1", 8080)) == ("::1", 8080)
