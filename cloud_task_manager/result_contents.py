"""Run results' bytes in the shared database, so that every cloud task manager replica reads
and archives the results any of them stored.

A result's row in ``run_results`` says what the operator sees; its bytes live in
``run_result_contents``, written in the same transaction. Results stored before the database
kept their bytes exist only under the ``results/`` folder of the replica that stored them: a
read that finds no bytes in the database serves that local copy when its sha256 matches the row,
and copies it into the database so every replica has it from then on.
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Engine,
    Insert,
    Select,
    delete,
    insert,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from agata_common.database import upsert_builder
from agata_common.paths import resolve_inside
from agata_contracts.common import check_task_path, is_task_id
from cloud_task_manager.models import ResultContentRecord, ResultRecord
from microservice_interconnect import BadRequest, NotFound

logger = logging.getLogger(__name__)

ARCHIVE_ROWS_PER_FETCH = 4
"""How many results' bytes building an archive holds from the database at once."""


@dataclass(frozen=True)
class StoredResult:
    """A result file with its bytes."""

    path: str
    sha256: str
    content: bytes



def check_result_path(owner: str, name: str, others: Iterable[str]) -> str:
    """The stored path of ``name`` in ``owner``'s results folder; 400 when ``name`` is not a
    task path, or a result of ``others`` (the owner's other paths in the run) would be a folder
    of it or it a folder of one (an archive could not be unpacked)."""
    try:
        check_task_path(name)
    except ValueError as exc:
        raise BadRequest(f"cannot store {name!r}: {exc}") from None
    path = f"{owner}/{name}"
    for other in others:
        if path.startswith(f"{other}/"):
            raise BadRequest(f"cannot store {name!r}: {other.removeprefix(f'{owner}/')} is a "
                             "file, not a folder")
        if other.startswith(f"{path}/"):
            raise BadRequest(f"cannot store {name!r}: {name} is a folder, not a file")
    return path


def _with_contents(task_id: str, run: int) -> Select[str, str, str, bytes]:
    """A run's results (path, sha256) with the sha256 and bytes the database holds for them
    (both None: none, stored before the database kept results' bytes), in one statement."""
    return (select(ResultRecord.path, ResultRecord.sha256, ResultContentRecord.sha256,
                   ResultContentRecord.content)
            .outerjoin(ResultContentRecord,
                       (ResultContentRecord.task_id == ResultRecord.task_id)
                       & (ResultContentRecord.run == ResultRecord.run)
                       & (ResultContentRecord.path == ResultRecord.path))
            .where(ResultRecord.task_id == task_id, ResultRecord.run == run))


class ResultContents:
    """Reads and writes results' bytes; ``legacy_root`` is this replica's ``results/`` folder
    (``task_<id>/run_<n>/<path>``), read only for results stored before the database kept
    their bytes."""

    def __init__(self, engine: Engine, legacy_root: Path) -> None:
        self.engine = engine
        self.legacy_root = legacy_root
        self._insert = upsert_builder(engine)

    # -- writing ---------------------------------------------------------------------------

    def put(self, session: Session, task_id: str, run: int, path: str, sha256: str,
            content: bytes) -> None:
        """Store a result's bytes in ``session``'s transaction (with its ``run_results`` row),
        replacing those of the same path."""
        key = {"task_id": task_id, "run": run, "path": path}
        values = {**key, "sha256": sha256, "content": content}
        if self._insert is None:
            session.execute(delete(ResultContentRecord).where(
                ResultContentRecord.task_id == task_id, ResultContentRecord.run == run,
                ResultContentRecord.path == path))
            session.execute(insert(ResultContentRecord).values(values))
            return
        session.execute(self._insert(ResultContentRecord).values(values).on_conflict_do_update(
            index_elements=list(key), set_={"sha256": sha256, "content": content}))

    def _adopt(self, task_id: str, run: int, item: StoredResult) -> None:
        """Copy a verified local result into the database unless it has bytes for that path
        already (a newer upload through any replica wins)."""
        values = {"task_id": task_id, "run": run, "path": item.path, "sha256": item.sha256,
                  "content": item.content}
        statement: Insert = insert(ResultContentRecord).values(values)
        if self._insert is not None:
            statement = self._insert(ResultContentRecord).values(values).on_conflict_do_nothing(
                index_elements=["task_id", "run", "path"])
        try:
            with self.engine.begin() as connection:
                connection.execute(statement)
        except IntegrityError:
            return  # the bytes are there already (or the task is gone): nothing to add
        logger.info("task %s run %d: copied this replica's bytes of result %s into the "
                    "database", task_id, run, item.path)

    # -- reading ---------------------------------------------------------------------------

    def read(self, task_id: str, run: int, path: str) -> StoredResult:
        """One result with its bytes; 404 when the run has no such result or its bytes are
        neither in the database nor in a matching local copy."""
        with self.engine.connect() as connection:
            found = connection.execute(
                _with_contents(task_id, run).where(ResultRecord.path == path)).first()
        if found is None:
            raise NotFound(f"run {run} of task {task_id!r} has no result {path!r}")
        item, legacy = self._complete(task_id, run, found)
        if legacy:
            self._adopt(task_id, run, item)
        return item

    def write_archive(self, archive: zipfile.ZipFile, top: str, task_id: str, run: int) -> int:
        """Add every result of a run to ``archive`` as ``<top>/<path>``, by path, holding only
        a few results' bytes at a time; return how many were added (404 when one's bytes are
        nowhere)."""
        legacy: list[StoredResult] = []
        count = 0
        with self.engine.connect() as connection:
            rows = connection.execution_options(yield_per=ARCHIVE_ROWS_PER_FETCH).execute(
                _with_contents(task_id, run).order_by(ResultRecord.path))
            for row in rows:
                item, from_disk = self._complete(task_id, run, row)
                archive.writestr(f"{top}/{item.path}", item.content)
                count += 1
                if from_disk:
                    legacy.append(item)
        for item in legacy:
            self._adopt(task_id, run, item)
        return count

    def _complete(self, task_id: str, run: int,
                  row: Sequence[Any]) -> tuple[StoredResult, bool]:
        """The bytes of a row of ``_with_contents`` from the database, else from a local copy
        matching the row's sha256 (then True: copy it into the database); 404 when neither
        has them."""
        path, sha256, stored_sha256, content = row
        if content is not None and stored_sha256 == sha256:
            return StoredResult(path, sha256, bytes(content)), False
        if content is not None:
            logger.warning("task %s run %d: the database's bytes of %s do not match its row",
                           task_id, run, path)
        local = self._local_copy(task_id, run, path, sha256)
        if local is None:
            raise NotFound(f"result {path!r} of run {run} is missing from storage")
        return StoredResult(path, sha256, local), True

    def _local_copy(self, task_id: str, run: int, path: str, sha256: str) -> bytes | None:
        """The bytes of this replica's copy of a result when they match ``sha256``."""
        if not is_task_id(task_id):
            return None
        try:
            local = resolve_inside(self.legacy_root / f"task_{task_id}" / f"run_{run}", path)
            content = local.read_bytes()
        except (ValueError, OSError):
            return None
        if hashlib.sha256(content).hexdigest() != sha256:
            logger.warning("task %s run %d: not serving the local copy of %s: its sha256 differs "
                           "from the stored result's", task_id, run, path)
            return None
        return content
