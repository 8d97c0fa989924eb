"""The cloud task manager's RPC endpoints: each one hands its request to the part that owns it."""

from __future__ import annotations

import base64
import logging

from agata_contracts.results import (
    LIST_RESULTS,
    READ_RESULT,
    READ_RUN_LOG,
    RESULTS_ARCHIVE,
    UPLOAD_RESULT,
    ReadResultRequest,
    ResultContent,
    ResultFile,
    ResultsArchive,
    RunLogChunk,
    RunLogRequest,
    RunResults,
    RunResultsRequest,
    UploadResultRequest,
)
from agata_contracts.run_devices import GET_RUN_DEVICES, RunDevices, RunDevicesRequest
from agata_contracts.run_door import OPEN_RUN_DOOR, OpenRunDoorRequest, RunDoor
from agata_contracts.tasks import (
    CLIENT_REQUESTING_TASK,
    CREATE_TASK,
    DOWNLOAD_TASK_FILE,
    GET_CLIENT_TASK_REPORTS,
    GET_TASK_BY_ID,
    GET_TASK_METRICS,
    LIST_TASKS,
    READ_TASK_FILE,
    REPORT_CLIENT_TASK,
    START_SERVER_TASK,
    STOP_SERVER_TASK,
    UPDATE_TASK,
    UPLOAD_TASK_ARCHIVE,
    UPLOAD_TASK_FILE,
    ClientRequestingTaskRequest,
    ClientTaskReport,
    ClientTaskReports,
    ClientTaskStatus,
    CreateTaskRequest,
    DownloadTaskFileRequest,
    ListTasksRequest,
    ReadTaskFileRequest,
    ReportClientTaskRequest,
    StartTaskRequest,
    Task,
    TaskFile,
    TaskFileContent,
    TaskIdRequest,
    TaskList,
    TaskMetrics,
    TaskMetricsRequest,
    TaskOffers,
    UpdateTaskRequest,
    UploadedArchive,
    UploadTaskArchiveRequest,
    UploadTaskFileRequest,
)
from cloud_task_manager.archives import ArchiveError, unpack_archive
from cloud_task_manager.doors import RunDoors
from cloud_task_manager.records import TaskRecords
from cloud_task_manager.results import RunResultsStore
from cloud_task_manager.run_devices import RunDeviceRecords
from cloud_task_manager.run_logs import RunLogs
from cloud_task_manager.runs import RunController
from cloud_task_manager.selection import TaskSelector
from cloud_task_manager.storage import TaskStorage
from microservice_interconnect import BadRequest
from microservice_interconnect.service import rpc

logger = logging.getLogger(__name__)


class CloudTaskManager:
    """Tasks, their files and their runs, as RPCs."""

    def __init__(self, records: TaskRecords, storage: TaskStorage, runs: RunController,
                 selector: TaskSelector, results: RunResultsStore, doors: RunDoors, *,
                 max_files_per_task: int = 64,
                 max_task_bytes: int = 64 * 1024 * 1024) -> None:
        self.records = records
        self.max_task_bytes = max_task_bytes
        self.storage = storage
        self.runs = runs
        self.selector = selector
        self.results = results
        self.doors = doors
        self.logs = RunLogs(results)
        self.max_files_per_task = max_files_per_task

    # -- operator RPCs -------------------------------------------------------------------

    @rpc(CREATE_TASK)
    def create_task(self, request: CreateTaskRequest) -> Task:
        """Store a new task (its criteria were checked by the contract)."""
        task = self.records.create(request)
        self.storage.task_dir(task.id)
        logger.info("task %s created (host %s, port %s)", task.id, task.host,
                    "none" if task.port is None else task.port)
        return task

    @rpc(GET_TASK_BY_ID)
    def get_task_by_id(self, request: TaskIdRequest) -> Task:
        """One task."""
        return self.records.task(request.task_id)

    @rpc(LIST_TASKS)
    def list_tasks(self, request: ListTasksRequest) -> TaskList:
        """A page of tasks, newest first."""
        return self.records.page(request.status, request.limit, request.offset)

    @rpc(UPDATE_TASK)
    def update_task(self, request: UpdateTaskRequest) -> Task:
        """Change the fields given; host and port only while the task is not running."""
        return self.runs.update(request)

    @rpc(START_SERVER_TASK)
    def start_server_task(self, request: StartTaskRequest) -> Task:
        """Start the task's Flower server as a child process."""
        return self.runs.start(request.task_id, request.server_arguments)

    @rpc(STOP_SERVER_TASK)
    def stop_server_task(self, request: TaskIdRequest) -> Task:
        """Stop the task's server: terminate, then kill after the grace period."""
        return self.runs.stop(request.task_id)

    @rpc(GET_TASK_METRICS)
    def get_task_metrics(self, request: TaskMetricsRequest) -> TaskMetrics:
        """Per-round metrics of the latest run (or the run asked for)."""
        return self.records.metrics(request.task_id, request.run)

    @rpc(GET_RUN_DEVICES)
    def get_run_devices(self, request: RunDevicesRequest) -> RunDevices:
        """The devices of the task's latest run: who is in, who left, who replaced whom."""
        return RunDeviceRecords(self.records).read(request.task_id)

    @rpc(UPLOAD_TASK_FILE)
    def upload_task_file(self, request: UploadTaskFileRequest) -> TaskFile:
        """Store a file of the task, replacing one of the same name."""
        self.records.file_count_allows(request.task_id, request.filename,
                                       self.max_files_per_task)
        stored = self.storage.write(request.task_id, request.filename, request.content)
        row = self.records.record_file(request.task_id, stored)
        logger.info("task %s: stored %s (%d bytes)", request.task_id, stored.name, stored.size)
        return row

    @rpc(UPLOAD_TASK_ARCHIVE)
    def upload_task_archive(self, request: UploadTaskArchiveRequest) -> UploadedArchive:
        """Replace the task's files with an archive's (a zip or a .fab), every entry checked."""
        self.records.require_not_running(request.task_id)
        try:
            unpacked = unpack_archive(request.content,
                                      max_file_bytes=self.storage.max_file_bytes,
                                      max_files=self.max_files_per_task,
                                      max_total_bytes=self.max_task_bytes,
                                      fab=request.filename.lower().endswith(".fab"))
        except ArchiveError as exc:
            raise BadRequest(f"{request.filename}: {exc}") from None
        before = self.records.file_names(request.task_id)
        stored = [self.storage.write(request.task_id, path, data)
                  for path, data in unpacked.files]
        files = self.records.replace_files(request.task_id, stored)
        for stale in before - {item.name for item in stored}:
            self.storage.remove(request.task_id, stale)
        logger.info("task %s: stored %d files from %s (%d left out)", request.task_id,
                    len(files), request.filename, len(unpacked.skipped))
        return UploadedArchive(files=files, skipped=unpacked.skipped)

    @rpc(GET_CLIENT_TASK_REPORTS)
    def get_client_task_reports(self, request: TaskIdRequest) -> ClientTaskReports:
        """What clients reported about a task, newest first."""
        return ClientTaskReports(reports=self.records.client_reports(request.task_id))

    @rpc(LIST_RESULTS)
    def list_results(self, request: RunResultsRequest) -> RunResults:
        """The result files of a run (0: the latest)."""
        return self.results.list(request.task_id, request.run)

    @rpc(READ_RESULT)
    def read_result(self, request: ReadResultRequest) -> ResultContent:
        """One result file of a run."""
        return self.results.read(request.task_id, request.run, request.path)

    @rpc(RESULTS_ARCHIVE)
    def results_archive(self, request: RunResultsRequest) -> ResultsArchive:
        """Every result file of a run as one zip archive."""
        return self.results.archive(request.task_id, request.run)

    @rpc(READ_RUN_LOG)
    def read_run_log(self, request: RunLogRequest) -> RunLogChunk:
        """A piece of a run's server output log, from a byte offset."""
        return self.logs.read(request)

    # -- client RPCs ---------------------------------------------------------------------

    @rpc(CLIENT_REQUESTING_TASK)
    def client_requesting_task(self, request: ClientRequestingTaskRequest) -> TaskOffers:
        """Running tasks whose criteria the client's stored stats match."""
        return TaskOffers(tasks=self.selector.offers_for(request.client_id))

    @rpc(OPEN_RUN_DOOR)
    def open_run_door(self, request: OpenRunDoorRequest) -> RunDoor:
        """Where the gateway forwards a device's socket for a run, once checked."""
        return self.doors.open(request)

    @rpc(DOWNLOAD_TASK_FILE)
    def download_task_file(self, request: DownloadTaskFileRequest) -> TaskFileContent:
        """A task file for a client holding the task's download credential."""
        self.records.check_download_credential(request.task_id, request.credential,
                                               request.client_id)
        return self._file_content(request.task_id, request.filename)

    @rpc(READ_TASK_FILE)
    def read_task_file(self, request: ReadTaskFileRequest) -> TaskFileContent:
        """A task file for an operator."""
        return self._file_content(request.task_id, request.filename)

    def _file_content(self, task_id: str, filename: str) -> TaskFileContent:
        row = self.records.file_row(task_id, filename)
        content = self.storage.read(task_id, filename)
        return TaskFileContent(name=row.name, size=len(content), sha256=row.sha256,
                               content=base64.b64encode(content))

    @rpc(UPLOAD_RESULT)
    def upload_result(self, request: UploadResultRequest) -> ResultFile:
        """A device's result file of a run it took part in."""
        return self.results.upload(request)

    @rpc(REPORT_CLIENT_TASK)
    def report_client_task(self, request: ReportClientTaskRequest) -> ClientTaskReport:
        """Record how a task went on a client (the operator sees which client failed, why)."""
        report = self.records.add_client_report(request.task_id, request.client_id,
                                                request.status, request.reason)
        log = logger.warning if request.status is ClientTaskStatus.FAILED else logger.info
        log("client %s reports task %s %s%s", request.client_id, request.task_id,
            request.status.value, f": {request.reason}" if request.reason else "")
        return report
