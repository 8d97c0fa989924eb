"""The client task manager's loop: stats, offers, downloads, Flower clients, failover.

One thread runs the loop and sleeps on an event between things to do (no busy waiting): it is
woken by a pushed task event, by a task's client reporting an error or exiting, by the poll
interval, or by the end of a quarantine. Child processes report through ``task_daemon_lib``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from agata_contracts.lifecycle import NO_LIFECYCLE, RESULTS_DIR_ENV
from agata_contracts.tasks import (
    CLIENT_SCRIPT,
    ClientTaskStatus,
    TaskEvent,
    TaskKind,
    TaskOffer,
)
from client_task_manager.children import (
    ChildCallbacks,
    ChildError,
    ChildInbox,
    ChildLeft,
    Running,
)
from client_task_manager.dependencies import check_app_dependencies
from client_task_manager.disk_gate import DiskGate, disk_full_reason
from client_task_manager.downloader import CorruptDownload, FetchFile, download_task
from client_task_manager.identity import ClientIdentity
from client_task_manager.left_runs import forget, left_runs
from client_task_manager.lifecycle import (
    RunResults,
    SetupFailed,
    check_setup,
    read_task_lifecycle,
    result_uploads,
)
from client_task_manager.reports import PendingReports, SendReport
from client_task_manager.run_retention import DeviceRunRetention
from client_task_manager.scheduler import TaskBook
from flower_runtime import CLIENT_WORKER_MODULE, warm_argv
from flower_runtime.jobs import WorkerJob
from microservice_interconnect import NotFound, RpcError
from microservice_interconnect.events import NO_EVENTS, EventRecorder
from task_daemon_lib.executors import (
    Executor,
    ProcessSpec,
    SubprocessExecutor,
    TaskProcess,
)
from task_daemon_lib.launcher import start_task_process
from task_daemon_lib.messages import (
    INFO_RUN_OVER,
    REPORT_SPOOL_ENV,
)
from task_daemon_lib.runner import (
    python_argv,
    script_arguments,
    task_environ,
)
from task_daemon_lib.warm import WarmPool

logger = logging.getLogger(__name__)

SERVICE = "client_task_manager"

STATS_CHECK_S = 5.0
NOT_REGISTERED_RETRY_S = 1.0
LOOP_STOP_WAIT_S = 2.0

QueryOffers = Callable[[str], list[TaskOffer]]
"""Asks the cloud which running tasks fit this client."""


def _server_port(offer: TaskOffer) -> int:
    """The port of the task's server this device connects to; ``ValueError`` when the offer
    names none (the run is then reported failed, saying so)."""
    if offer.port is None:
        raise ValueError(f"the offer of task {offer.task_id} names no port of its server")
    return offer.port


class ClientTaskManager:
    """Runs compatible tasks on this device and switches when one fails."""

    def __init__(
        self,
        identity: ClientIdentity,
        book: TaskBook,
        *,
        query_offers: QueryOffers,
        fetch_file: FetchFile,
        send_report: SendReport,
        work_dir: Path,
        request_interval_s: float,
        heartbeat: Callable[[str], None] | None = None,
        heartbeat_s: float = 10.0,
        stop_grace_s: float = 5.0,
        node_config: dict[str, bool | int | float | str] | None = None,
        events: EventRecorder = NO_EVENTS,
        warm: WarmPool | None = None,
        executor: Executor | None = None,
        cloud_url: str = "http://127.0.0.1:9001",
        cloud_ca_file: Path | None = None,
        retention: DeviceRunRetention | None = None,
        disk: DiskGate | None = None,
    ) -> None:
        self.identity = identity
        self.disk = disk
        self.cloud_url = cloud_url
        self.cloud_ca_file = cloud_ca_file
        self.retention = retention
        self.node_config = dict(node_config or {})
        self.events = events
        self.executor: Executor = executor or SubprocessExecutor()
        self.warm = warm or WarmPool(warm_argv(CLIENT_WORKER_MODULE), work_dir / "workers",
                                     name="Flower worker", spares=0)
        self.book = book
        self.query_offers = query_offers
        self.fetch_file = fetch_file
        self.work_dir = work_dir
        self.request_interval_s = request_interval_s
        self.heartbeat = heartbeat
        self.heartbeat_s = heartbeat_s
        self._next_heartbeat = 0.0
        self.stop_grace_s = stop_grace_s
        self._wake = threading.Event()
        self._vacancies: deque[str] = deque()
        """Tasks whose run lost a device (appended by any thread, read by the loop)."""
        self._inbox = ChildInbox(self._wake, self._record)
        self._children: dict[str, Running] = {}
        self.reports = PendingReports(send_report, lambda: self.identity.client_id)
        self._next_poll = 0.0
        self._next_stats_check = 0.0
        self._cloud_down = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def client_id(self) -> str:
        """This device's id."""
        return self.identity.client_id

    def _record(self, function: str, event: str, *, at: float | None = None) -> None:
        self.events.register_event(SERVICE, function, event, at=at)

    # -- outside world -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the loop thread."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._settle_left_runs()
        self.warm.prepare()
        self._thread = threading.Thread(target=self._loop, name="client-task-manager",
                                        daemon=True)
        self._thread.start()
        logger.info("client %s: task manager running (policy %s, up to %d task(s))",
                    self.client_id, self.book.policy.value, self.book.max_parallel)

    def _settle_left_runs(self) -> None:
        """Report the end of the runs an earlier manager process left (see ``left_runs``): what
        their task processes had reported before it died is not lost."""
        for left in left_runs(self.work_dir):
            offer = left.offer
            if left.ended is None:
                logger.info("task %s run %d: cut off when the previous task manager stopped",
                            offer.task_id, offer.run)
                forget(left.folder)
                continue
            try:
                lifecycle = read_task_lifecycle(
                    self.work_dir / f"task_{offer.task_id}" / f"run_{offer.run}")
            except SetupFailed:
                lifecycle = NO_LIFECYCLE
            self.reports.results(result_uploads(left.folder, offer, self.client_id, lifecycle))
            status, reason = left.ended
            logger.warning("task %s run %d had %s before the previous task manager stopped; "
                           "reporting it now", offer.task_id, offer.run, status.value)
            if status is ClientTaskStatus.FAILED:
                self._failed(offer.task_id, offer.run, reason or "failed")
            else:
                self.book.finished(offer.task_id, offer.run)
                self.reports.task(offer.task_id, ClientTaskStatus.FINISHED, None)

    def on_task_event(self, event: TaskEvent) -> None:
        """A task started or ended on the cloud: look again at once (any thread)."""
        logger.info("cloud: task %s is %s (run %d)%s", event.task_id, event.status.value,
                    event.run, ", lost a device" if event.vacancy else "")
        if event.vacancy:
            self._vacancies.append(event.task_id)
        self.poll_now()

    def poll_now(self) -> None:
        """Ask the cloud for tasks without waiting for the interval."""
        self._next_poll = 0.0
        self._wake.set()

    def stop(self) -> None:
        """Stop the loop and every task client (terminate, then kill after the grace)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            # the loop may be inside a call to the cloud (up to its timeout); it is not waited
            # for longer than this: a child it starts meanwhile dies with this process
            self._thread.join(LOOP_STOP_WAIT_S)
        running = list(self._children.values())
        for entry in running:
            entry.child.request_stop(self.stop_grace_s)
        for entry in running:
            entry.child.wait(self.stop_grace_s + 5)
        self.warm.close()
        self.reports.flush()

    # -- the loop ----------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._step()
            except Exception:
                logger.exception("client task manager step failed; continuing")
                self._next_poll = time.monotonic() + self.request_interval_s
            self._wake.wait(self._sleep_time())
            self._wake.clear()

    def _sleep_time(self) -> float:
        now = time.monotonic()
        deadlines = [self._next_poll, self._next_stats_check]
        if self.heartbeat is not None:
            deadlines.append(self._next_heartbeat)
        release = self.book.next_release(time.time())
        if release is not None:
            deadlines.append(now + (release - time.time()))
        return max(0.0, min(deadlines) - now)

    def _step(self) -> None:
        self._handle_children()
        while self._vacancies:
            self.book.vacancy(self._vacancies.popleft())
        now = time.monotonic()
        if now >= self._next_stats_check:
            self.reports.stats(self.identity.stats())
            self.reports.flush()
            self._next_stats_check = now + STATS_CHECK_S
        if self.heartbeat is not None and time.monotonic() >= self._next_heartbeat:
            self._beat(self.heartbeat)
        if time.monotonic() >= self._next_poll:
            self._poll()
        self._start_chosen()

    def _beat(self, heartbeat: Callable[[str], None]) -> None:
        """Tell the cloud this device is alive; a missed beat is not retried or queued."""
        self._next_heartbeat = time.monotonic() + self.heartbeat_s
        try:
            heartbeat(self.client_id)
        except RpcError as exc:
            logger.debug("heartbeat not delivered: %s", exc.message)

    def _poll(self) -> None:
        self._next_poll = time.monotonic() + self.request_interval_s
        self._record("rpc_exec_client_requesting_task", "requesting tasks")
        try:
            offers = self.query_offers(self.client_id)
        except NotFound as exc:
            logger.info("cloud does not know this client yet (%s); retrying", exc.message)
            self.reports.stats_unknown()
            self._next_poll = time.monotonic() + NOT_REGISTERED_RETRY_S
            self._next_stats_check = 0.0
            return
        except RpcError as exc:
            if not self._cloud_down:
                logger.warning("cannot ask the cloud for tasks: %s", exc.message)
            self._cloud_down = True
            return
        if self._cloud_down:
            logger.info("cloud reachable again")
        self._cloud_down = False
        fresh = [o.task_id for o in offers if o.task_id not in self._children]
        self._record("rpc_exec_client_requesting_task",
                       f"offers received {','.join(o.task_id for o in offers) or 'none'}")
        if fresh:
            logger.info("compatible running tasks: %s", ", ".join(o.task_id for o in offers))
        self.book.update_offers(offers)

    def _start_chosen(self) -> None:
        if self.disk is not None and self.disk.refusal() is not None:
            return
        for offer in self.book.choose(time.time()):
            self._launch(offer)

    def _launch(self, offer: TaskOffer) -> None:
        self._record("download_files", f"download started {offer.task_id}")
        try:
            folder = download_task(offer, self.fetch_file, self.work_dir, self.client_id)
        except CorruptDownload as exc:
            self._failed(offer.task_id, offer.run, f"corrupted download refused: {exc}")
            return
        except RpcError as exc:
            self._failed(offer.task_id, offer.run, f"download failed: {exc.message}")
            return
        except OSError as exc:  # its files could not be written here
            self._failed(offer.task_id, offer.run, f"download failed: {exc}")
            return
        self._record("download_files", f"download finished {offer.task_id}")
        task_id, run = offer.task_id, offer.run
        try:
            lifecycle = read_task_lifecycle(folder)
            check_setup(lifecycle, self.executor)
            check_app_dependencies(folder, lifecycle.image)
        except SetupFailed as exc:
            self._cannot_set_up(offer, str(exc))
            return
        try:
            results = RunResults.prepare(self.work_dir, offer, self.client_id, lifecycle)
        except OSError as exc:
            self._failed(task_id, run, f"its results folder could not be made: {exc}")
            return
        try:
            if offer.kind is TaskKind.FLOWER_APP:
                child = self._start_app_worker(offer, folder, results)
            else:
                child = self._start_client_script(offer, folder, results)
        except (OSError, ValueError) as exc:
            results.discard()
            self._failed(task_id, run, f"client could not start: {exc}")
            return
        self._children[task_id] = Running(offer, child, results)
        self.book.started(offer)
        self._record("start_client", f"client started {task_id}")
        self.reports.task(task_id, ClientTaskStatus.STARTED, None)

    def _start_client_script(self, offer: TaskOffer, folder: Path,
                             results: RunResults) -> TaskProcess:
        if not (folder / CLIENT_SCRIPT).is_file():
            raise ValueError(f"the task has no {CLIENT_SCRIPT}")
        arguments = [*script_arguments(offer.host, _server_port(offer), offer.client_arguments),
                     "--client-id", self.client_id]
        return start_task_process(ProcessSpec(
            python_argv(folder / CLIENT_SCRIPT, *arguments),
            cwd=folder,
            env=task_environ({RESULTS_DIR_ENV: str(results.folder.resolve()),
                              REPORT_SPOOL_ENV: str(results.spool.resolve())}),
            name=f"task {offer.task_id} client",
            task_dir=folder, results_dir=results.folder,
            **self._child_callbacks(offer, results),
        ), self.executor)

    def _start_app_worker(self, offer: TaskOffer, folder: Path,
                          results: RunResults) -> TaskProcess:
        def job(app: Path, results_dir: Path | None, _state: Path | None) -> str:
            return WorkerJob(app=app, cloud_url=self.cloud_url,
                             cloud_ca_file=self.cloud_ca_file, task_id=offer.task_id,
                             run=offer.run, client_id=self.client_id,
                             credential=offer.download_credential, node_config=self.node_config,
                             results_dir=results_dir).model_dump_json()

        return start_task_process(ProcessSpec(
            self.warm.argv, cwd=folder, env=self.warm.env,
            name=f"task {offer.task_id} ClientApp",
            image=results.lifecycle.image, task_dir=folder, results_dir=results.folder,
            **self._child_callbacks(offer, results),
        ), self.executor, warm=self.warm, job=job, stop_grace_s=self.stop_grace_s)

    def _child_callbacks(self, offer: TaskOffer, results: RunResults) -> ChildCallbacks:
        """Where the run's task process reports, writes and exits to."""
        return self._inbox.callbacks(offer.task_id, offer.run, results.log)

    # -- children ----------------------------------------------------------------------------

    def _handle_children(self) -> None:
        for item in self._inbox.drain():
            entry = self._children.get(item.task_id)
            if entry is None or entry.offer.run != item.run:
                continue
            if isinstance(item, ChildLeft):
                entry.left = item.info
                continue
            if isinstance(item, ChildError):
                if not entry.handled:
                    entry.handled = True
                    entry.child.request_stop(self.stop_grace_s)
                    self._failed(item.task_id, item.run, item.reason)
                continue
            del self._children[item.task_id]
            self.warm.prepare()
            self._send_results(entry)
            if self.retention is not None:
                self.retention.prune(item.task_id)
            if entry.handled:
                continue
            outcome = item.outcome
            if outcome.status == "finished" and entry.left is not None:
                self._left(entry, entry.left)
            elif outcome.status == "finished":
                self.book.finished(item.task_id, item.run)
                self._record("task_client", f"client finished {item.task_id}")
                self.reports.task(item.task_id, ClientTaskStatus.FINISHED, None)
                logger.info("task %s finished here", item.task_id)
            elif outcome.status == "stopped":
                self.book.stopped(item.task_id)
                self.reports.task(item.task_id, ClientTaskStatus.STOPPED, "client shut down")
            else:
                self._failed(item.task_id, item.run, outcome.reason or "failed")

    def _send_results(self, entry: Running) -> None:
        """Hand the run's result files to the outbox, before the run's last report."""
        uploads = entry.results.uploads()
        self.reports.results(uploads)
        if uploads:
            logger.info("task %s run %d: sending %d result file(s) (%d bytes)",
                        entry.offer.task_id, entry.offer.run, len(uploads),
                        sum(len(upload.content) for upload in uploads))
        self.reports.flush()

    def _cannot_set_up(self, offer: TaskOffer, reason: str) -> None:
        self.book.cannot_set_up(offer)
        self._record("task_client", f"setup failed {offer.task_id}")
        logger.warning("task %s cannot be set up here: %s; not taken again until its files "
                       "change", offer.task_id, reason)
        self.reports.task(offer.task_id, ClientTaskStatus.SETUP_FAILED, reason)

    def _left(self, entry: Running, info: str) -> None:
        """The worker left its run without failing: the run is over (done with it), or did not
        need this device (looked at again at the next poll, when a device may have gone)."""
        task_id, run = entry.offer.task_id, entry.offer.run
        if info == INFO_RUN_OVER:
            self.book.finished(task_id, run)
        else:
            self.book.hold(task_id, time.time())
        reason = info.removeprefix("Left the run: ")
        logger.info("task %s run %d: left, %s", task_id, run, reason)
        self.reports.task(task_id, ClientTaskStatus.STOPPED, f"the run {reason}")

    def _failed(self, task_id: str, run: int, reason: str) -> None:
        reason = disk_full_reason(reason) or reason  # "disk full: ..." whoever wrote it
        held = self.book.failed(task_id, reason, time.time())
        self._record("task_client", f"client failed {task_id}")
        logger.warning("task %s failed here: %s; set aside for %.0f s (failure %d)", task_id,
                       reason, held.until - time.time(), held.failures)
        self.reports.task(task_id, ClientTaskStatus.FAILED, reason)
