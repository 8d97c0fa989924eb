"""A task's setup checks and results on this device: before a run, whether the device can run
it at all; after, the files it left, as uploads for the cloud.

The checks read the task's ``[tool.agata]`` table (``pyproject.toml`` or ``agata.toml``): each
module it ``requires`` must be importable here. A task that fails them is reported with the
reason and not taken again while its files stay the same.
"""

from __future__ import annotations

import base64
import importlib.util
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from agata_common.run_results import gather_results
from agata_contracts.checkpoints import STATE_DIR
from agata_contracts.lifecycle import (
    APP_MANIFEST,
    NO_LIFECYCLE,
    SCRIPT_MANIFEST,
    Lifecycle,
    LifecycleError,
    output_log_name,
    read_lifecycle,
)
from agata_contracts.results import MAX_OUTPUT_LOG_BYTES, UploadResultRequest
from agata_contracts.tasks import TaskOffer
from client_task_manager.left_runs import forget, keep_offer, spool_file
from task_daemon_lib.executors import Executor
from task_daemon_lib.lines import OutputLog

logger = logging.getLogger(__name__)


class SetupFailed(Exception):
    """The device cannot run the task; the message says why."""


def read_task_lifecycle(folder: Path) -> Lifecycle:
    """The downloaded task's ``[tool.agata]`` table; ``SetupFailed`` when it is malformed."""
    for name in (APP_MANIFEST, SCRIPT_MANIFEST):
        manifest = folder / name
        if manifest.is_file():
            try:
                return read_lifecycle(manifest.read_bytes(), name)
            except LifecycleError as exc:
                raise SetupFailed(str(exc)) from None
    return NO_LIFECYCLE


def check_setup(lifecycle: Lifecycle, executor: Executor) -> None:
    """``SetupFailed`` naming every required module this device cannot import, or why the
    executor cannot run the task (a container image that is not here)."""
    unavailable = executor.unavailable(lifecycle.image)
    if unavailable is not None:
        raise SetupFailed(f"setup: {unavailable}")
    missing = []
    for module in lifecycle.requires:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(module)
    if missing:
        raise SetupFailed(f"setup: {', '.join(missing)} cannot be imported on this device "
                          "([tool.agata] requires)")


@dataclass
class RunResults:
    """One run's results folder on this device and the log of its task process."""

    offer: TaskOffer
    client_id: str
    folder: Path
    lifecycle: Lifecycle
    log: OutputLog

    @classmethod
    def prepare(cls, work_dir: Path, offer: TaskOffer, client_id: str,
                lifecycle: Lifecycle) -> RunResults:
        """A fresh, empty results folder for the run, with the process's log in it."""
        folder = work_dir / "results" / f"task_{offer.task_id}" / f"run_{offer.run}"
        shutil.rmtree(folder, ignore_errors=True)
        (folder / STATE_DIR).mkdir(parents=True)
        keep_offer(folder, offer)
        log = OutputLog(folder / output_log_name(client_id), MAX_OUTPUT_LOG_BYTES,
                        f"task {offer.task_id} client")
        return cls(offer, client_id, folder, lifecycle, log)

    @property
    def spool(self) -> Path:
        """Where the run's task process keeps its reports before sending them."""
        return spool_file(self.folder)

    def discard(self) -> None:
        """Drop the folder of a run that never started."""
        self.log.close()
        forget(self.folder)

    def uploads(self) -> list[UploadResultRequest]:
        """The run's result files as uploads (the folder is removed: they are in hand)."""
        self.log.close()
        return result_uploads(self.folder, self.offer, self.client_id, self.lifecycle)


def result_uploads(folder: Path, offer: TaskOffer, client_id: str,
                   lifecycle: Lifecycle) -> list[UploadResultRequest]:
    """The result files a run left in ``folder``, as uploads; the folder is removed."""
    gathered = gather_results(folder, lifecycle)
    for reason in gathered.skipped:
        logger.warning("task %s run %d: result left out: %s", offer.task_id, offer.run, reason)
    forget(folder)
    return [UploadResultRequest(task_id=offer.task_id, run=offer.run, client_id=client_id,
                                name=item.path, content=base64.b64encode(item.content),
                                credential=offer.download_credential)
            for item in gathered.files]
