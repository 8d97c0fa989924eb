"""A run's server output log (``output-server.txt``), read piece by piece from a byte offset.

While the run goes, the log grows in the run's scratch folder on the replica that runs its
server; once it ended, the log is one of the run's stored results. The log only grows (the
runtime appends and stops at ``MAX_OUTPUT_LOG_BYTES``), so a byte offset names the same place
in both. A replica that does not run the server answers a live read with nothing new: the
next read may land on the owner.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sqlalchemy.orm import Session

from agata_contracts.lifecycle import output_log_name
from agata_contracts.results import SERVER_FOLDER, RunLogChunk, RunLogRequest
from agata_contracts.tasks import TaskStatus
from cloud_task_manager.results import RunResultsStore
from microservice_interconnect import NotFound

SERVER_LOG = output_log_name("server")


def complete_text(data: bytes, *, ended: bool) -> tuple[str, int]:
    """``data`` decoded, and how many of its bytes that is: a UTF-8 character cut at the end
    is left for the next read, unless the log has ended (then it is replaced)."""
    if ended:
        return data.decode("utf-8", errors="replace"), len(data)
    for cut in range(min(3, len(data)) + 1):
        try:
            kept = data[:len(data) - cut]
            return kept.decode("utf-8"), len(kept)
        except UnicodeDecodeError:
            continue
    return data.decode("utf-8", errors="replace"), len(data)


def read_plain_file(path: Path, offset: int, limit: int) -> bytes:
    """Up to ``limit`` bytes of ``path`` from ``offset``; nothing when it is missing, a link or
    not a plain file (task code writes beside it and must not point it elsewhere)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return b""
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return b""
        return os.pread(descriptor, limit, offset)
    finally:
        os.close(descriptor)


class RunLogs:
    """Reads runs' server output logs for the Control API's log stream."""

    def __init__(self, results: RunResultsStore) -> None:
        self.results = results

    def read(self, request: RunLogRequest) -> RunLogChunk:
        """The log from ``request.offset``: live from the scratch folder while the run goes,
        else from the run's stored results (an empty piece when it left no log)."""
        with Session(self.results.records.engine) as session:
            record = self.results.records.get(session, request.task_id)
            if record.runs == 0:
                raise NotFound(f"task {request.task_id!r} has not run yet")
            run = request.run or record.runs
            if run > record.runs:
                raise NotFound(f"task {request.task_id!r} has no run {run}")
            live = run == record.runs and record.status == TaskStatus.RUNNING.value
        if live:
            folder = self.results.scratch_path(request.task_id, run)
            data = read_plain_file(folder / SERVER_LOG, request.offset, request.max_bytes)
        else:
            data = self._stored(request.task_id, run, request.offset, request.max_bytes)
        text, used = complete_text(data, ended=not live)
        return RunLogChunk(task_id=request.task_id, run=run, offset=request.offset,
                           next_offset=request.offset + used, text=text, ended=not live)

    def _stored(self, task_id: str, run: int, offset: int, limit: int) -> bytes:
        try:
            item = self.results.contents.read(task_id, run, f"{SERVER_FOLDER}/{SERVER_LOG}")
        except NotFound:
            return b""
        return item.content[offset:offset + limit]
