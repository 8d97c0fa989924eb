"""The cloud task manager's tables: every table of its database is declared here (its
schema changes are Alembic revisions in ``cloud_task_manager/migrations``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from agata_common.database import UtcDateTime, utcnow
from agata_contracts.common import MAX_PATH_LENGTH


class Base(DeclarativeBase):
    """Declarative base of the task manager's schema."""


class TaskRecord(Base):
    """A federated task."""

    __tablename__ = "tasks"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(253))
    own_port: Mapped[int | None] = mapped_column("port", Integer, nullable=True)
    """The port the operator gave the task; None: it has none of its own."""
    selection_criteria: Mapped[str] = mapped_column(Text, default="")
    server_arguments: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    client_arguments: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    devices: Mapped[int] = mapped_column(Integer, default=2, server_default="2")
    min_devices: Mapped[int | None] = mapped_column(Integer, nullable=True)
    deadline_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="created", index=True)
    status_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    runs: Mapped[int] = mapped_column(Integer, default=0)
    server_pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    door: Mapped[str | None] = mapped_column(String(300), nullable=True)
    run_devices: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    """The current run's devices as its host last reported them (``run_devices``)."""
    credential_hash: Mapped[str] = mapped_column(String(64))
    credential_nonce: Mapped[str] = mapped_column(String(64))
    previous_nonce: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    modified: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)

    files: Mapped[list[FileRecord]] = relationship(
        back_populates="task", cascade="all, delete-orphan", order_by="FileRecord.name",
        lazy="selectin",
    )


class FileRecord(Base):
    """A file uploaded for a task."""

    __tablename__ = "task_files"
    __table_args__ = (UniqueConstraint("task_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    uploaded: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    task: Mapped[TaskRecord] = relationship(back_populates="files")


class RoundMetricRecord(Base):
    """Metrics the task's server reported for one round of one run."""

    __tablename__ = "task_round_metrics"
    __table_args__ = (UniqueConstraint("task_id", "run", "round"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    run: Mapped[int] = mapped_column(Integer)
    round: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    reported_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ClientReportRecord(Base):
    """What a client reported about a task on its side."""

    __tablename__ = "client_task_reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    client_id: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    reported_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ResultRecord(Base):
    """A result file of one run: left by the task's server or uploaded by a device."""

    __tablename__ = "run_results"
    __table_args__ = (UniqueConstraint("task_id", "run", "path"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    run: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(700))
    client_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    stored_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class RunStateRecord(Base):
    """What it takes to start a task's latest run again: its server arguments, and its last
    checkpoint (the global model after ``checkpoint_round`` rounds, ``.npz``)."""

    __tablename__ = "run_states"

    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"),
                                         primary_key=True)
    run: Mapped[int] = mapped_column(Integer)
    arguments: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    checkpoint_round: Mapped[int | None] = mapped_column(Integer, nullable=True)
    checkpoint: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    checkpoint_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class ReplicaRecord(Base):
    """A cloud task manager process sharing the database: alive while its lease is renewed."""

    __tablename__ = "replicas"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class FileContentRecord(Base):
    """The bytes of one task file (its row in ``task_files`` says what the operator sees)."""

    __tablename__ = "task_file_contents"
    __table_args__ = (UniqueConstraint("task_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(MAX_PATH_LENGTH))
    sha256: Mapped[str] = mapped_column(String(64))
    content: Mapped[bytes] = mapped_column(LargeBinary)


class ResultContentRecord(Base):
    """The bytes of one result file (its row in ``run_results`` says what the operator sees)."""

    __tablename__ = "run_result_contents"
    __table_args__ = (UniqueConstraint("task_id", "run", "path"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    run: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(700))
    sha256: Mapped[str] = mapped_column(String(64))
    content: Mapped[bytes] = mapped_column(LargeBinary)
