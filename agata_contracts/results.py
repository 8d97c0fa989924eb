"""Results of a run: the files its server and each device leave, and the RPCs that store and
read them.

A run's results form one tree: ``server/<path>`` for what the task's server left, and
``devices/<device>/<path>`` for each device's (``device`` is the client id, with characters a
folder name may not hold replaced, see :func:`device_folder`).
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Final

from pydantic import Base64Bytes, BaseModel, ConfigDict, Field

from agata_contracts.common import MAX_RUN, ClientId, TaskId, TaskPath
from agata_contracts.rpc import Audience, RpcSpec
from agata_contracts.tasks import SERVICE

SERVER_FOLDER: Final = "server"
DEVICES_FOLDER: Final = "devices"
MAX_RESULT_FILES: Final = 64
"""The most files one process (the server, or one device) leaves per run."""
MAX_RESULT_FILE_BYTES: Final = 8 * 1024 * 1024
"""The largest result file."""
MAX_RESULT_BYTES: Final = 32 * 1024 * 1024
"""All of one process's result files of one run together."""
MAX_OUTPUT_LOG_BYTES: Final = 1024 * 1024
"""The runtime keeps at most this much of a task process's output in its log file."""

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_HASHED = re.compile(r"-[0-9a-f]{8}$")


def device_folder(client_id: str) -> str:
    """The folder of a device's results: its id when that is a plain name, else the id with
    the other characters replaced and a short hash of the id (an id that already ends like
    such a hash gets one too, so two ids never share a folder)."""
    if not _UNSAFE.search(client_id) and not _HASHED.search(client_id):
        return client_id
    digest = hashlib.sha256(client_id.encode()).hexdigest()[:8]
    return f"{_UNSAFE.sub('_', client_id)}-{digest}"


class UploadResultRequest(BaseModel):
    """One result file of a device for a run, proven by the run's download credential."""

    model_config = ConfigDict(extra="forbid")

    task_id: TaskId
    run: int = Field(ge=1, le=MAX_RUN)
    client_id: ClientId
    name: TaskPath = Field(description="The file's path inside the device's results folder.")
    content: Base64Bytes
    credential: str = Field(min_length=1, max_length=256)


class ResultFile(BaseModel):
    """A stored result file."""

    path: str = Field(description="Inside the run's results: server/<name> or "
                      "devices/<device>/<name>.")
    client_id: str | None = Field(description="The device that left it; null: the server.")
    size: int
    sha256: str
    stored_at: datetime


class RunResultsRequest(BaseModel):
    """Which run's results (0: the latest run)."""

    model_config = ConfigDict(extra="forbid")

    task_id: TaskId
    run: int = Field(0, ge=0, le=MAX_RUN)


class RunResults(BaseModel):
    """The result files of one run, by path."""

    task_id: str
    run: int
    files: list[ResultFile]
    total_bytes: int


class ReadResultRequest(BaseModel):
    """One result file of a run."""

    model_config = ConfigDict(extra="forbid")

    task_id: TaskId
    run: int = Field(0, ge=0, le=MAX_RUN)
    path: TaskPath


class ResultContent(BaseModel):
    """A result file and its bytes, base64-encoded."""

    path: str
    size: int
    sha256: str
    content: Base64Bytes


class ResultsArchive(BaseModel):
    """Every result file of a run as one zip archive, base64-encoded."""

    name: str
    files: int
    content: Base64Bytes


MAX_LOG_CHUNK_BYTES: Final = 64 * 1024
"""The most bytes of a server's output log one read returns."""


class RunLogRequest(BaseModel):
    """A piece of a run's server output log (``output-server.txt``) from a byte offset."""

    model_config = ConfigDict(extra="forbid")

    task_id: TaskId
    run: int = Field(0, ge=0, le=MAX_RUN, description="0: the latest run.")
    offset: int = Field(0, ge=0, le=MAX_OUTPUT_LOG_BYTES * 2)
    max_bytes: int = Field(MAX_LOG_CHUNK_BYTES, ge=1, le=MAX_LOG_CHUNK_BYTES)


class RunLogChunk(BaseModel):
    """What the log holds from the offset asked for, and whether more may come."""

    task_id: str
    run: int
    offset: int = Field(description="Where ``text`` starts in the log, in bytes.")
    next_offset: int = Field(description="The offset to ask for next.")
    text: str = Field(description="The log's bytes from ``offset``, decoded as UTF-8.")
    ended: bool = Field(description="The run has ended: the log will not grow any more.")


UPLOAD_RESULT: RpcSpec[UploadResultRequest, ResultFile] = RpcSpec(
    "rpc_exec_upload_result", SERVICE, UploadResultRequest, ResultFile,
    "A device stores one result file of a run it took part in.", frozenset({Audience.CLIENT}))
LIST_RESULTS: RpcSpec[RunResultsRequest, RunResults] = RpcSpec(
    "rpc_exec_list_results", SERVICE, RunResultsRequest, RunResults,
    "The result files of a run (the server's and each device's).")
READ_RESULT: RpcSpec[ReadResultRequest, ResultContent] = RpcSpec(
    "rpc_exec_read_result", SERVICE, ReadResultRequest, ResultContent,
    "One result file of a run.", frozenset({Audience.INTERNAL}))
RESULTS_ARCHIVE: RpcSpec[RunResultsRequest, ResultsArchive] = RpcSpec(
    "rpc_exec_results_archive", SERVICE, RunResultsRequest, ResultsArchive,
    "Every result file of a run as one zip archive.", frozenset({Audience.INTERNAL}))

READ_RUN_LOG: RpcSpec[RunLogRequest, RunLogChunk] = RpcSpec(
    "rpc_exec_read_run_log", SERVICE, RunLogRequest, RunLogChunk,
    "A piece of a run's server output log: live while the run goes, then from its results.",
    frozenset({Audience.INTERNAL}))

RPCS = (UPLOAD_RESULT, LIST_RESULTS, READ_RESULT, RESULTS_ARCHIVE, READ_RUN_LOG)
