"""The cloud task manager's database as the releases before migrations made it (``create_all``
of their models, frozen here as they were), with a few rows, for the migration tests."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    insert,
)

RELEASES = ("first", "before-elastic-runs", "last")
"""The first release, the one before elastic runs, and the last before migrations."""
ELASTIC_RUNS = ("min_devices", "run_devices")
"""Columns of ``tasks`` added by elastic runs."""
FIRST_RELEASE_MISSING = ("devices", "deadline_s", "previous_nonce", "owner", "door",
                         *ELASTIC_RUNS)
"""Columns of ``tasks`` the first release did not have (its ``port`` was required, too)."""
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _time(name: str, nullable: bool = False, index: bool = False) -> Column[datetime]:
    return Column(name, DateTime(timezone=True), nullable=nullable, index=index)


def _task_id() -> Column[str]:
    return Column("task_id", String(64), ForeignKey("tasks.id", ondelete="CASCADE"),
                  nullable=False, index=True)


def previous_release(release: str = "last") -> MetaData:
    """The tables of a release of :data:`RELEASES` (the first: ``tasks`` without the later
    columns and with a required port, no content tables)."""
    first = release == "first"
    metadata = MetaData()
    tasks = [
        Column("id", String(64), primary_key=True), Column("host", String(253), nullable=False),
        Column("port", Integer, nullable=first), Column("selection_criteria", Text, nullable=False),
        Column("server_arguments", JSON, nullable=False),
        Column("client_arguments", JSON, nullable=False), Column("tags", JSON, nullable=False),
        Column("devices", Integer, nullable=False, server_default="2"),
        Column("min_devices", Integer), Column("run_devices", JSON),
        Column("deadline_s", Integer), Column("status", String(16), nullable=False, index=True),
        Column("status_reason", Text), Column("runs", Integer, nullable=False),
        Column("server_pid", Integer), Column("owner", String(64)), Column("door", String(300)),
        Column("credential_hash", String(64), nullable=False),
        Column("credential_nonce", String(64), nullable=False),
        Column("previous_nonce", String(64)), _time("created", index=True), _time("modified"),
        _time("started_at", True), _time("ended_at", True),
    ]
    if first:
        tasks = [column for column in tasks if column.name not in FIRST_RELEASE_MISSING]
        tasks[2].nullable = False
    elif release != "last":
        tasks = [column for column in tasks if column.name not in ELASTIC_RUNS]
    Table("tasks", metadata, *tasks)
    Table("task_files", metadata, Column("id", Integer, primary_key=True), _task_id(),
          Column("name", String(128), nullable=False), Column("size", Integer, nullable=False),
          Column("sha256", String(64), nullable=False), _time("uploaded"),
          UniqueConstraint("task_id", "name"))
    Table("run_results", metadata, Column("id", Integer, primary_key=True), _task_id(),
          Column("run", Integer, nullable=False), Column("path", String(700), nullable=False),
          Column("client_id", String(64)), Column("size", Integer, nullable=False),
          Column("sha256", String(64), nullable=False), _time("stored_at"),
          UniqueConstraint("task_id", "run", "path"))
    if first:
        return metadata
    Table("task_round_metrics", metadata, Column("id", Integer, primary_key=True), _task_id(),
          Column("run", Integer, nullable=False), Column("round", Integer, nullable=False),
          Column("metrics", JSON, nullable=False), _time("reported_at"),
          UniqueConstraint("task_id", "run", "round"))
    Table("client_task_reports", metadata, Column("id", Integer, primary_key=True), _task_id(),
          Column("client_id", String(64), nullable=False, index=True),
          Column("status", String(16), nullable=False), Column("reason", Text),
          _time("reported_at"))
    Table("run_states", metadata,
          Column("task_id", String(64), ForeignKey("tasks.id", ondelete="CASCADE"),
                 primary_key=True),
          Column("run", Integer, nullable=False), Column("arguments", JSON, nullable=False),
          Column("checkpoint_round", Integer), Column("checkpoint", LargeBinary),
          _time("checkpoint_at", True))
    Table("replicas", metadata, Column("id", String(64), primary_key=True), _time("seen_at"),
          _time("started_at"))
    Table("task_file_contents", metadata, Column("id", Integer, primary_key=True), _task_id(),
          Column("name", String(512), nullable=False),
          Column("sha256", String(64), nullable=False),
          Column("content", LargeBinary, nullable=False), UniqueConstraint("task_id", "name"))
    Table("run_result_contents", metadata, Column("id", Integer, primary_key=True), _task_id(),
          Column("run", Integer, nullable=False), Column("path", String(700), nullable=False),
          Column("sha256", String(64), nullable=False),
          Column("content", LargeBinary, nullable=False),
          UniqueConstraint("task_id", "run", "path"))
    return metadata


def build(engine: Engine, release: str = "last") -> None:
    """Make the release's tables on an empty database and store one task with a file and a
    result, as that release would have."""
    first = release == "first"
    metadata = previous_release(release)
    metadata.create_all(engine)
    tables = metadata.tables
    task = {"id": "old", "host": "127.0.0.1", "port": 8090, "selection_criteria": "",
            "server_arguments": {"num-server-rounds": 3}, "client_arguments": {},
            "tags": ["kept"], "status": "finished", "runs": 1, "credential_hash": "h",
            "credential_nonce": "n", "created": NOW, "modified": NOW}
    if release == "last":
        task["min_devices"] = 1
    with engine.begin() as connection:
        connection.execute(insert(tables["tasks"]).values(task))
        connection.execute(insert(tables["task_files"]).values(
            task_id="old", name="server.py", size=3, sha256="a" * 64, uploaded=NOW))
        connection.execute(insert(tables["run_results"]).values(
            task_id="old", run=1, path="server/model.npz", size=4, sha256="b" * 64,
            stored_at=NOW))
        if not first:
            connection.execute(insert(tables["task_file_contents"]).values(
                task_id="old", name="server.py", sha256="a" * 64, content=b"abc"))
