"""Results of runs on the cloud: stored per task, run and device (``server/<name>``,
``devices/<device>/<name>``) in the database, listed, read one by one or as one zip archive.

A result's bytes are stored in the database in the same transaction as its ``run_results`` row
(see ``result_contents``), so every replica on one database serves the same results. No local
copy is written: a result is written once and downloaded rarely, so a cache would save little
while being one more copy to check against the database (and would only ever exist on the
replica that stored the result). ``<data_dir>/results/`` is read only for results stored before
the database kept their bytes: served when they match their row's sha256, and copied into the
database then.

The task's server leaves its files in a scratch folder of its run (``AGATA_RESULTS_DIR``),
gathered when it exits (its checkpoints and report spool go to the run's state folder, beside
and never inside it: ``<data_dir>/run-state``, where the app does not work; the manager keeps
verified copies of the checkpoints out of the app's reach, ``kept_checkpoints``, dropped with
the state folder); a device uploads its own with the run's download credential. Both pass the
same checks: task paths only, the count and size limits per process, and nothing lands outside
the folder of the one who sent it. Once stored, a task's oldest runs' results beyond its
retention policy are pruned (``result_retention``).
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import shutil
import zipfile
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from agata_common.config import RetentionSettings
from agata_common.database import utcnow
from agata_common.paths import own_folder
from agata_common.retention import RetentionPolicy
from agata_common.run_results import gather_results
from agata_contracts.checkpoints import SPOOL_FILE
from agata_contracts.credentials import is_device_credential
from agata_contracts.lifecycle import (
    NO_LIFECYCLE,
    Lifecycle,
    LifecycleError,
    manifest_of,
    read_lifecycle,
)
from agata_contracts.results import (
    DEVICES_FOLDER,
    MAX_RESULT_BYTES,
    MAX_RESULT_FILE_BYTES,
    MAX_RESULT_FILES,
    SERVER_FOLDER,
    ResultContent,
    ResultFile,
    ResultsArchive,
    RunResults,
    UploadResultRequest,
    device_folder,
)
from cloud_task_manager.kept_checkpoints import KeptCheckpoints
from cloud_task_manager.models import ResultRecord
from cloud_task_manager.records import TaskRecords
from cloud_task_manager.result_contents import ResultContents, check_result_path
from cloud_task_manager.result_retention import ResultRetention
from cloud_task_manager.storage import TaskStorage
from microservice_interconnect import BadRequest, Forbidden, NotFound
from microservice_interconnect.events import NO_EVENTS, EventRecorder

logger = logging.getLogger(__name__)

LAST_RUN_REPORTS = "last-run-reports.jsonl"
"""The report spool of a task's last ended run, kept beside its runs' scratch folders."""
MAX_ARCHIVE_BYTES = 64 * 1024 * 1024
"""The most result bytes one archive holds (it is built in memory and travels base64-encoded
in one broker message, which must stay under RabbitMQ's message size limit)."""


def to_result_file(row: ResultRecord) -> ResultFile:
    """The contract view of a stored result."""
    return ResultFile(path=row.path, client_id=row.client_id, size=row.size, sha256=row.sha256,
                      stored_at=row.stored_at)


class RunResultsStore:
    """Stores results in the database and owns ``<data_dir>/results-work`` (the servers'
    scratch folders); ``<data_dir>/results`` holds only results stored before the database
    kept their bytes."""

    def __init__(self, records: TaskRecords, storage: TaskStorage, data_dir: Path,
                 retention: RetentionPolicy | None = None,
                 events: EventRecorder = NO_EVENTS) -> None:
        self.records = records
        self.storage = storage
        self.root = (data_dir / "results").resolve()
        self.work = (data_dir / "results-work").resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.state_root = (data_dir / "run-state").resolve()
        self.kept = KeptCheckpoints(data_dir / "run-checkpoints")
        self.contents = ResultContents(records.engine, self.root)
        self.retention = ResultRetention(
            records.engine, retention or RetentionSettings().retention(), self.root, events)

    def scratch(self, task_id: str, run: int, *, keep: bool = False) -> Path:
        """The folder for the server process of a run to leave its results in: fresh and
        empty, or with what an earlier process of the same run left (``keep``, a resume)."""
        self.storage.task_dir(task_id)
        folder = self.scratch_path(task_id, run)
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        self.state_folder(task_id, run, keep=keep)
        return folder

    def state_path(self, task_id: str, run: int) -> Path:
        """The run's state folder: its server's checkpoints and report spool (nothing is
        created). It is the manager's, outside the scratch folder the app works in."""
        return self.state_root / f"task_{task_id}" / f"run_{run}"

    def state_folder(self, task_id: str, run: int, *, keep: bool = False) -> Path:
        """The run's state folder, made (``keep`` False: emptied first), and so is the folder of
        its checkpoints' kept copies."""
        self.kept.folder(task_id, run, empty=not keep)
        return own_folder(self.state_path(task_id, run), empty=not keep)

    def scratch_path(self, task_id: str, run: int) -> Path:
        """Where the server process of a run leaves its results (nothing is created)."""
        return self.work / f"task_{task_id}" / f"run_{run}"

    def lifecycle(self, task_id: str) -> Lifecycle:
        """The task's ``[tool.agata]`` table (none when its manifest has none or is broken)."""
        manifest = manifest_of(self.records.file_names(task_id))
        if manifest is None:
            return NO_LIFECYCLE
        try:
            return read_lifecycle(self.storage.read(task_id, manifest), manifest)
        except (LifecycleError, NotFound) as exc:
            logger.warning("task %s: %s; every result file is kept", task_id, exc)
            return NO_LIFECYCLE

    # -- storing ---------------------------------------------------------------------------

    def _store(self, task_id: str, run: int, client_id: str | None, name: str,
               content: bytes) -> ResultFile:
        """Store one result of the server (``client_id`` None) or a device, within limits:
        its row and its bytes in one transaction."""
        if len(content) > MAX_RESULT_FILE_BYTES:
            raise BadRequest(f"result {name!r} is {len(content)} bytes; the limit is "
                             f"{MAX_RESULT_FILE_BYTES}")
        owner = SERVER_FOLDER if client_id is None else \
            f"{DEVICES_FOLDER}/{device_folder(client_id)}"
        path = f"{owner}/{name}"
        with self.records.transaction(changes_tasks=False) as session:
            self.records.get(session, task_id)
            mine = [row for row in session.scalars(
                select(ResultRecord).where(ResultRecord.task_id == task_id,
                                           ResultRecord.run == run,
                                           ResultRecord.path.startswith(f"{owner}/"))
            ) if row.path != path]
            if len(mine) >= MAX_RESULT_FILES:
                raise BadRequest(f"{owner} already has {MAX_RESULT_FILES} result files for run "
                                 f"{run} (the limit)")
            if sum(row.size for row in mine) + len(content) > MAX_RESULT_BYTES:
                raise BadRequest(f"{owner}'s results of run {run} would pass "
                                 f"{MAX_RESULT_BYTES} bytes (the limit)")
            check_result_path(owner, name, (row.path for row in mine))
            digest = hashlib.sha256(content).hexdigest()
            row = session.scalars(select(ResultRecord).where(
                ResultRecord.task_id == task_id, ResultRecord.run == run,
                ResultRecord.path == path)).first()
            if row is None:
                row = ResultRecord(task_id=task_id, run=run, path=path, client_id=client_id,
                                   size=len(content), sha256=digest)
                session.add(row)
            row.size, row.sha256, row.stored_at = len(content), digest, utcnow()
            self.contents.put(session, task_id, run, path, digest, content)
            session.flush()
            return to_result_file(row)

    def upload(self, request: UploadResultRequest) -> ResultFile:
        """A device's result of a run, accepted with the device's credential for that run: the
        latest run's, or the one before it (a run may start again before the last results of
        the previous one arrived), also after the run ended."""
        with Session(self.records.engine) as session:
            record = self.records.get(session, request.task_id)
            run_credential = self.records.run_credential(record, request.run)
            if run_credential is None or not is_device_credential(
                    request.credential, run_credential, request.client_id):
                raise Forbidden(f"results of run {request.run} of task {request.task_id!r} "
                                "need the device's credential for that run (results are "
                                "taken for the latest run and the one before)")
        stored = self._store(request.task_id, request.run, request.client_id, request.name,
                             request.content)
        logger.info("task %s run %d: stored %s (%d bytes)", request.task_id, request.run,
                    stored.path, stored.size)
        self._apply_retention(request.task_id)
        return stored

    def collect_server(self, task_id: str, run: int, folder: Path) -> int:
        """Store what the server of a run left in its scratch folder, then remove the folder
        (its report spool is kept beside it as ``last-run-reports.jsonl``, for audit, until
        the task's next run ends); return how many files were kept."""
        gathered = gather_results(folder, self.lifecycle(task_id))
        kept = 0
        for item in gathered.files:
            try:
                self._store(task_id, run, None, item.path, item.content)
                kept += 1
            except BadRequest as exc:
                gathered.skipped.append(f"{item.path}: {exc.message}")
        for reason in gathered.skipped:
            logger.warning("task %s run %d: server result left out: %s", task_id, run, reason)
        state = self.state_path(task_id, run)
        spool = state / SPOOL_FILE
        if not state.is_symlink() and spool.is_file() and not spool.is_symlink():
            spool.replace(folder.parent / LAST_RUN_REPORTS)
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)
        self.kept.drop(task_id, run)
        if kept:
            logger.info("task %s run %d: kept %d server result file(s)", task_id, run, kept)
            self._apply_retention(task_id)
        return kept

    def _apply_retention(self, task_id: str) -> None:
        """Prune the task's oldest runs' results; a database error keeps them (and is logged),
        never failing the store that came before."""
        try:
            self.retention.prune(task_id)
        except SQLAlchemyError as exc:
            logger.warning("task %s: results retention failed, nothing pruned: %s", task_id,
                           exc.__class__.__name__)

    # -- reading ---------------------------------------------------------------------------

    def _resolve_run(self, session: Session, task_id: str, run: int) -> int:
        record = self.records.get(session, task_id)
        if run == 0:
            if record.runs == 0:
                raise NotFound(f"task {task_id!r} has not run yet")
            return record.runs
        if run > record.runs:
            raise NotFound(f"task {task_id!r} has no run {run} (it ran {record.runs} time(s))")
        return run

    def list(self, task_id: str, run: int) -> RunResults:
        """The result files of a run (0: the latest), by path."""
        with Session(self.records.engine) as session:
            number = self._resolve_run(session, task_id, run)
            rows = session.scalars(select(ResultRecord).where(
                ResultRecord.task_id == task_id, ResultRecord.run == number
            ).order_by(ResultRecord.path)).all()
            return RunResults(task_id=task_id, run=number,
                              files=[to_result_file(row) for row in rows],
                              total_bytes=sum(row.size for row in rows))

    def read(self, task_id: str, run: int, path: str) -> ResultContent:
        """One result file of a run (its bytes from the database), or 404."""
        with Session(self.records.engine) as session:
            number = self._resolve_run(session, task_id, run)
        item = self.contents.read(task_id, number, path)
        return ResultContent(path=path, size=len(item.content), sha256=item.sha256,
                             content=base64.b64encode(item.content))

    def archive(self, task_id: str, run: int) -> ResultsArchive:
        """Every result file of a run in one zip archive (``task-<id>-run-<n>/<path>``)."""
        listing = self.list(task_id, run)
        if not listing.files:
            raise NotFound(f"run {listing.run} of task {task_id!r} has no results (yet)")
        if listing.total_bytes > MAX_ARCHIVE_BYTES:
            raise BadRequest(f"run {listing.run}'s results are {listing.total_bytes} bytes, over "
                             f"the {MAX_ARCHIVE_BYTES} bytes of one archive; download them one "
                             "by one")
        top = f"task-{task_id}-run-{listing.run}"
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            files = self.contents.write_archive(archive, top, task_id, listing.run)
        return ResultsArchive(name=f"{top}.zip", files=files,
                              content=base64.b64encode(buffer.getvalue()))
