"""The cloud task manager's RPCs and their messages."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, Base64Bytes, BaseModel, ConfigDict, Field, model_validator

from agata_contracts.common import (
    MAX_OFFSET,
    MAX_RUN,
    ArgumentName,
    ArgumentValue,
    ClientId,
    Host,
    Port,
    Tag,
    TaskId,
    TaskPath,
)
from agata_contracts.criteria import CLIENT_ATTRIBUTES, CriteriaError, compile_criteria
from agata_contracts.lifecycle import APP_MANIFEST
from agata_contracts.rpc import Audience, RpcSpec

SERVICE = "cloud_task_manager"

RESERVED_ARGUMENTS = frozenset({"host", "port"})


def _check_criteria(text: str) -> str:
    try:
        compile_criteria(text)
    except CriteriaError as exc:
        raise ValueError(str(exc)) from None
    return text


def _check_arguments(arguments: dict[str, ArgumentValue]) -> dict[str, ArgumentValue]:
    reserved = RESERVED_ARGUMENTS & set(arguments)
    if reserved:
        raise ValueError(f"{', '.join(sorted(reserved))} come from the task's host and port")
    return arguments


Criteria = Annotated[
    str,
    Field(
        max_length=2000,
        description="Which clients may join, e.g. data_qnt >= 30 and 'camera' in sensors. "
        f"Names: {', '.join(CLIENT_ATTRIBUTES)}. "
        "Empty: every client.",
    ),
    AfterValidator(_check_criteria),
]
Devices = Annotated[int, Field(ge=1, le=10_000, description=(
    "How many devices a run of a Flower App takes; each gets a partition-id from 0 to "
    "devices-1 and num-partitions = devices in its node_config."))]
MinDevices = Annotated[int, Field(ge=1, le=10_000, description=(
    "The fewest devices a run of a Flower App goes on with when some are lost (at most "
    "devices). Empty: devices (a lost device must be replaced or come back)."))]
MAX_DEADLINE_S = 30 * 24 * 3600
DeadlineS = Annotated[int, Field(ge=1, le=MAX_DEADLINE_S, description=(
    "Seconds a run may last; a run still going then is stopped and recorded as failed, saying "
    "so. Empty: the cloud task manager's default_deadline_s."))]
Arguments = Annotated[
    dict[ArgumentName, ArgumentValue],
    Field(max_length=64, description="Passed to the task's script as --name value."),
    AfterValidator(_check_arguments),
]


def check_min_devices(devices: int | None, min_devices: int | None) -> None:
    """A run's minimum cannot exceed the devices it asks for."""
    if devices is not None and min_devices is not None and min_devices > devices:
        raise ValueError(f"min_devices ({min_devices}) is more than devices ({devices})")


class TaskStatus(StrEnum):
    """Where a task is in its life."""

    CREATED = "created"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    STOPPED = "stopped"


SERVER_SCRIPT = "server.py"
CLIENT_SCRIPT = "client.py"
"""An AGATA script task's two entry points."""


class TaskKind(StrEnum):
    """How a task runs: a Flower App (ServerApp and ClientApp), or AGATA's two scripts."""

    FLOWER_APP = "flower_app"
    SCRIPT = "script"


def kind_of(paths: Iterable[str]) -> TaskKind | None:
    """A task's kind from its files: a top-level ``pyproject.toml`` makes a Flower App,
    ``server.py`` a script task; None while neither is there."""
    present = set(paths)
    if APP_MANIFEST in present:
        return TaskKind.FLOWER_APP
    if SERVER_SCRIPT in present:
        return TaskKind.SCRIPT
    return None


class TaskFile(BaseModel):
    """A file of the task, as stored (a device checks every name an offer carries)."""

    name: TaskPath
    size: int
    sha256: str


class CreateTaskRequest(BaseModel):
    """A new federated task (AGATA's create form). Files are uploaded afterwards."""

    model_config = ConfigDict(extra="forbid")

    task_id: TaskId | None = Field(None, description="Leave empty to get a generated id.")
    host: Host = "127.0.0.1"
    port: Port | None = Field(None, description=(
        "Optional: a TCP port of the task's own for its server (accepted for AGATA "
        "compatibility). Empty: the task has none; devices reach its runs through the cloud."))
    selection_criteria: Criteria = ""
    server_arguments: Arguments = Field(default_factory=dict)
    client_arguments: Arguments = Field(default_factory=dict)
    tags: list[Tag] = Field(default_factory=list, max_length=32)
    devices: Devices = 2
    min_devices: MinDevices | None = None
    deadline_s: DeadlineS | None = None

    @model_validator(mode="after")
    def _minimum_within_devices(self) -> CreateTaskRequest:
        check_min_devices(self.devices, self.min_devices)
        return self


class Task(BaseModel):
    """A task as operators see it (never any secret)."""

    id: str
    host: str
    port: int | None = Field(description="The task's own server port; null: it has none.")
    selection_criteria: str
    server_arguments: dict[str, ArgumentValue]
    client_arguments: dict[str, ArgumentValue]
    tags: list[str]
    devices: int
    min_devices: int | None = Field(None, description="The fewest devices a run goes on "
                                    "with; null: devices.")
    deadline_s: int | None = Field(description="This task's own run deadline (seconds); "
                                   "null: the cloud's default_deadline_s.")
    files: list[TaskFile]
    kind: TaskKind | None = Field(description="From the files: a top-level pyproject.toml "
                                  "makes a Flower App, server.py a script task.")
    status: TaskStatus
    status_reason: str | None
    runs: int
    replica: str | None = Field(None, description="The cloud task manager replica that runs "
                                "(or last ran) the task's server.")
    created: datetime
    modified: datetime
    started_at: datetime | None
    ended_at: datetime | None


class TaskIdRequest(BaseModel):
    """Names one task."""

    model_config = ConfigDict(extra="forbid")

    task_id: TaskId


class StartTaskRequest(BaseModel):
    """Start a task's Flower server, optionally overriding some server arguments for this run."""

    model_config = ConfigDict(extra="forbid")

    task_id: TaskId
    server_arguments: Arguments | None = None


class UpdateTaskRequest(BaseModel):
    """Change a task; fields left out keep their value. Host and port only while not running."""

    model_config = ConfigDict(extra="forbid")

    task_id: TaskId
    host: Host | None = None
    port: Port | None = None
    selection_criteria: Criteria | None = None
    server_arguments: Arguments | None = None
    client_arguments: Arguments | None = None
    tags: list[Tag] | None = Field(None, max_length=32)
    devices: Devices | None = None
    min_devices: MinDevices | None = None
    deadline_s: DeadlineS | None = None


class ListTasksRequest(BaseModel):
    """Paging through tasks, newest first, optionally of one status."""

    model_config = ConfigDict(extra="forbid")

    status: TaskStatus | None = None
    limit: int = Field(100, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)


class TaskList(BaseModel):
    """A page of tasks and how many match in all."""

    tasks: list[Task]
    total: int


class RoundMetrics(BaseModel):
    """What the task's server reported for one round."""

    round: int
    metrics: dict[str, float] = Field(description=(
        "Name to value; a list-valued metric of a Flower App comes as one value per element, "
        "named name[0], name[1], …"))
    reported_at: datetime


class TaskMetrics(BaseModel):
    """Per-round metrics of a task's latest run (or the run asked for)."""

    task_id: str
    run: int
    rounds: list[RoundMetrics]


class TaskMetricsRequest(BaseModel):
    """Which task's metrics (and which run: 0 or absent = the latest)."""

    model_config = ConfigDict(extra="forbid")

    task_id: TaskId
    run: int = Field(0, ge=0, le=MAX_RUN)


class ClientRequestingTaskRequest(BaseModel):
    """A client asking which running tasks it may join (AGATA's pede_tarefa)."""

    model_config = ConfigDict(extra="forbid")

    client_id: ClientId


class TaskOffer(BaseModel):
    """What a client needs to join a task (``run`` counts the task's starts)."""

    task_id: TaskId
    run: int
    host: str
    port: int | None = Field(description="The task's own server port; null: it has none.")
    client_arguments: dict[str, ArgumentValue]
    tags: list[str]
    files: list[TaskFile]
    kind: TaskKind
    download_credential: str


class TaskEvent(BaseModel):
    """Broadcast when a task's server starts or ends, so clients look again at once; and
    (``vacancy``) when a running run lost a device, so a device the run once did not need
    looks again too."""

    task_id: str
    status: TaskStatus
    run: int
    time: float
    vacancy: bool = False




class TaskOffers(BaseModel):
    """The running tasks whose criteria the client matches."""

    tasks: list[TaskOffer]


class UploadTaskFileRequest(BaseModel):
    """One file of a task, base64-encoded."""

    model_config = ConfigDict(extra="forbid")

    task_id: TaskId
    filename: TaskPath
    content: Base64Bytes


class UploadTaskArchiveRequest(BaseModel):
    """A whole app as one zip archive (or a ``.fab`` from ``flwr build``), base64-encoded.

    Its files replace the task's files; the task must not be running."""

    model_config = ConfigDict(extra="forbid")

    task_id: TaskId
    filename: str = Field("app.zip", min_length=1, max_length=128,
                          description="The archive's own name, for messages.")
    content: Base64Bytes


class UploadedArchive(BaseModel):
    """The files an archive gave the task, and the entries left out (folders' hidden files,
    Python caches, a FAB's .info/)."""

    files: list[TaskFile]
    skipped: list[str]


class DownloadTaskFileRequest(BaseModel):
    """A file of a task for a device, which proves access with the task's download credential
    (no flag in the body grants more)."""

    model_config = ConfigDict(extra="forbid")

    task_id: TaskId
    filename: TaskPath
    credential: str | None = Field(None, max_length=256, description="Missing: a 401.")
    client_id: ClientId | None = Field(None, description="The device the credential is for "
                                       "(the gateway sets it from the device's own token).")


class ReadTaskFileRequest(BaseModel):
    """A file of a task for an operator (the gateway checked the operator's token)."""

    model_config = ConfigDict(extra="forbid")

    task_id: TaskId
    filename: TaskPath


class TaskFileContent(BaseModel):
    """A task file and its bytes, base64-encoded."""

    name: str
    size: int
    sha256: str
    content: Base64Bytes


class ClientTaskStatus(StrEnum):
    """What a client reports about its copy of a task."""

    STARTED = "started"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    STOPPED = "stopped"
    SETUP_FAILED = "setup_failed"


class ReportClientTaskRequest(BaseModel):
    """A client telling the cloud how a task went on its side."""

    model_config = ConfigDict(extra="forbid")

    task_id: TaskId
    client_id: ClientId
    status: ClientTaskStatus
    reason: str | None = Field(None, max_length=4000)


class ClientTaskReport(BaseModel):
    """One stored client report."""

    task_id: str
    client_id: str
    status: ClientTaskStatus
    reason: str | None
    reported_at: datetime


class ClientTaskReports(BaseModel):
    """Client reports of a task, newest first."""

    reports: list[ClientTaskReport]


_OPERATOR = frozenset({Audience.OPERATOR})
_CLIENT = frozenset({Audience.CLIENT})

CREATE_TASK: RpcSpec[CreateTaskRequest, Task] = RpcSpec(
    "rpc_exec_create_task", SERVICE, CreateTaskRequest, Task,
    "Register a task; its selection criteria are checked now.", _OPERATOR)
START_SERVER_TASK: RpcSpec[StartTaskRequest, Task] = RpcSpec(
    "rpc_exec_start_server_task", SERVICE, StartTaskRequest, Task,
    "Start the task's Flower server (server.py).", _OPERATOR)
STOP_SERVER_TASK: RpcSpec[TaskIdRequest, Task] = RpcSpec(
    "rpc_exec_stop_server_task", SERVICE, TaskIdRequest, Task,
    "Stop the task's Flower server (terminate, then kill after a grace period).", _OPERATOR)
UPDATE_TASK: RpcSpec[UpdateTaskRequest, Task] = RpcSpec(
    "rpc_exec_update_task", SERVICE, UpdateTaskRequest, Task,
    "Change a task's fields.", _OPERATOR)
GET_TASK_BY_ID: RpcSpec[TaskIdRequest, Task] = RpcSpec(
    "rpc_exec_get_task_by_id", SERVICE, TaskIdRequest, Task, "One task.", _OPERATOR)
LIST_TASKS: RpcSpec[ListTasksRequest, TaskList] = RpcSpec(
    "rpc_exec_list_tasks", SERVICE, ListTasksRequest, TaskList, "Tasks, newest first.", _OPERATOR)
GET_TASK_METRICS: RpcSpec[TaskMetricsRequest, TaskMetrics] = RpcSpec(
    "rpc_exec_get_task_metrics", SERVICE, TaskMetricsRequest, TaskMetrics,
    "Per-round metrics reported by the task's server.", _OPERATOR)
CLIENT_REQUESTING_TASK: RpcSpec[ClientRequestingTaskRequest, TaskOffers] = RpcSpec(
    "rpc_exec_client_requesting_task", SERVICE, ClientRequestingTaskRequest, TaskOffers,
    "Running tasks whose selection criteria the client matches.", _CLIENT)
UPLOAD_TASK_FILE: RpcSpec[UploadTaskFileRequest, TaskFile] = RpcSpec(
    "rpc_exec_upload_task_file", SERVICE, UploadTaskFileRequest, TaskFile,
    "Store one file of a task (replacing one of the same name).", _OPERATOR)
UPLOAD_TASK_ARCHIVE: RpcSpec[UploadTaskArchiveRequest, UploadedArchive] = RpcSpec(
    "rpc_exec_upload_task_archive", SERVICE, UploadTaskArchiveRequest, UploadedArchive,
    "Replace a task's files with those of a zip archive or .fab (a Flower App).", _OPERATOR)
DOWNLOAD_TASK_FILE: RpcSpec[DownloadTaskFileRequest, TaskFileContent] = RpcSpec(
    "rpc_exec_download_task_file", SERVICE, DownloadTaskFileRequest, TaskFileContent,
    "Read one file of a task with its download credential.", frozenset({Audience.INTERNAL}))
READ_TASK_FILE: RpcSpec[ReadTaskFileRequest, TaskFileContent] = RpcSpec(
    "rpc_exec_read_task_file", SERVICE, ReadTaskFileRequest, TaskFileContent,
    "An operator reads one file of a task.", frozenset({Audience.INTERNAL}))
REPORT_CLIENT_TASK: RpcSpec[ReportClientTaskRequest, ClientTaskReport] = RpcSpec(
    "rpc_exec_report_client_task", SERVICE, ReportClientTaskRequest, ClientTaskReport,
    "A client reports how a task went on its side (failures with their reason).", _CLIENT)
GET_CLIENT_TASK_REPORTS: RpcSpec[TaskIdRequest, ClientTaskReports] = RpcSpec(
    "rpc_exec_get_client_task_reports", SERVICE, TaskIdRequest, ClientTaskReports,
    "What clients reported about a task, newest first.", _OPERATOR)

RPCS = (
    CREATE_TASK, START_SERVER_TASK, STOP_SERVER_TASK, UPDATE_TASK, GET_TASK_BY_ID, LIST_TASKS,
    GET_TASK_METRICS, CLIENT_REQUESTING_TASK, UPLOAD_TASK_FILE, UPLOAD_TASK_ARCHIVE,
    DOWNLOAD_TASK_FILE, READ_TASK_FILE,
    REPORT_CLIENT_TASK, GET_CLIENT_TASK_REPORTS,
)
