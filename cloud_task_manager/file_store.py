"""Task files' bytes in the shared database, so that every cloud task manager replica can
serve and materialize them (each replica's ``tasks/`` folder is only its cache)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import (
    Engine,
    Insert,
    delete,
    exists,
    insert,
    select,
)
from sqlalchemy.exc import IntegrityError

from agata_common.database import upsert_builder
from cloud_task_manager.models import FileContentRecord, FileRecord
from microservice_interconnect import NotFound


@dataclass(frozen=True)
class FileContent:
    """A task file as the database holds it."""

    name: str
    sha256: str
    content: bytes



class FileStore:
    """Reads and writes task files' bytes; every method is one short transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._insert = upsert_builder(engine)

    def put(self, task_id: str, name: str, sha256: str, content: bytes) -> None:
        """Store a file's bytes, replacing those of the same name, in one transaction;
        404 when the task does not exist."""
        values = {"task_id": task_id, "name": name, "sha256": sha256, "content": content}
        try:
            with self.engine.begin() as connection:
                if self._insert is None:
                    connection.execute(delete(FileContentRecord).where(
                        FileContentRecord.task_id == task_id, FileContentRecord.name == name))
                    connection.execute(insert(FileContentRecord).values(values))
                else:
                    statement = self._insert(FileContentRecord).values(values)
                    connection.execute(statement.on_conflict_do_update(
                        index_elements=["task_id", "name"],
                        set_={"sha256": sha256, "content": content}))
        except IntegrityError:
            raise NotFound(f"task {task_id!r} does not exist") from None

    def put_if_absent(self, task_id: str, name: str, sha256: str, content: bytes) -> None:
        """Store a file's bytes unless the database has the file already (a newer upload
        through another replica wins)."""
        values = {"task_id": task_id, "name": name, "sha256": sha256, "content": content}
        statement: Insert = insert(FileContentRecord).values(values)
        if self._insert is not None:
            statement = self._insert(FileContentRecord).values(values).on_conflict_do_nothing(
                index_elements=["task_id", "name"])
        try:
            with self.engine.begin() as connection:
                connection.execute(statement)
        except IntegrityError:
            pass  # the file is there already (or its task is gone): nothing to add

    def delete(self, task_id: str, name: str) -> None:
        """Forget a file's bytes (nothing when there are none)."""
        with self.engine.begin() as connection:
            connection.execute(delete(FileContentRecord).where(
                FileContentRecord.task_id == task_id, FileContentRecord.name == name))

    def digests(self, task_id: str) -> dict[str, str]:
        """Name → sha256 of every file of a task, without reading their bytes."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(FileContentRecord.name, FileContentRecord.sha256)
                .where(FileContentRecord.task_id == task_id))
            return {name: digest for name, digest in rows}

    def digest(self, task_id: str, name: str) -> str | None:
        """The sha256 of one file, or None when the database does not have it."""
        with self.engine.connect() as connection:
            return connection.scalar(
                select(FileContentRecord.sha256)
                .where(FileContentRecord.task_id == task_id, FileContentRecord.name == name))

    def contents(self, task_id: str, names: Collection[str]) -> list[FileContent]:
        """The files of ``names`` the database has, with their bytes."""
        if not names:
            return []
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(FileContentRecord.name, FileContentRecord.sha256,
                       FileContentRecord.content)
                .where(FileContentRecord.task_id == task_id,
                       FileContentRecord.name.in_(list(names))))
            return [FileContent(name, digest, bytes(content)) for name, digest, content in rows]

    def unbacked(self, task_id: str) -> dict[str, str]:
        """Name → sha256 of the task's recorded files whose bytes are not in the database
        (stored before the bytes went there: only the replica that wrote them has them)."""
        backed = exists().where(FileContentRecord.task_id == FileRecord.task_id,
                                FileContentRecord.name == FileRecord.name)
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(FileRecord.name, FileRecord.sha256)
                .where(FileRecord.task_id == task_id, ~backed))
            return {name: digest for name, digest in rows}
