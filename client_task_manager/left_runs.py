"""Runs an earlier client task manager left behind when it died mid-run.

A run's task process keeps every report it sends in its results folder
(``.agata/reports.jsonl``, written before the report is sent), and the manager keeps the run's
offer beside that folder (``run_<n>.offer.json``, 0600, never where the task can read it). The
next manager process reads both back: a run whose process had reported its end (finished, or
an error) is reported so and its results are sent, as if the manager had lived; a run cut off
by the manager's death has nothing to report (the cloud starts it again). Either way the folder
goes.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from agata_common.run_results import read_regular
from agata_contracts.checkpoints import SPOOL_FILE, STATE_DIR
from agata_contracts.tasks import ClientTaskStatus, TaskOffer
from task_daemon_lib.spool import read_spool

logger = logging.getLogger(__name__)

OFFER_SUFFIX = ".offer.json"


def offer_file(folder: Path) -> Path:
    """Where the offer of the run whose results folder is ``folder`` is kept."""
    return folder.with_name(folder.name + OFFER_SUFFIX)


def spool_file(folder: Path) -> Path:
    """The report spool of the run whose results folder is ``folder``."""
    return folder / STATE_DIR / SPOOL_FILE


def keep_offer(folder: Path, offer: TaskOffer) -> None:
    """Keep the run's offer (it holds the run's download credential: 0600)."""
    descriptor = os.open(offer_file(folder),
                         os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "w") as output:
        output.write(offer.model_dump_json())


def forget(folder: Path) -> None:
    """Remove the run's results folder and its offer."""
    shutil.rmtree(folder, ignore_errors=True)
    offer_file(folder).unlink(missing_ok=True)


@dataclass(frozen=True)
class LeftRun:
    """A run found on disk: its offer, its results folder and how its process said it ended
    (None: it was cut off)."""

    offer: TaskOffer
    folder: Path
    ended: tuple[ClientTaskStatus, str | None] | None


def _how_it_ended(spool: Path) -> tuple[ClientTaskStatus, str | None] | None:
    reading = read_spool(spool)
    if isinstance(reading, str):
        logger.warning("%s: %s", spool, reading)
        return None
    if reading.error is not None:
        return ClientTaskStatus.FAILED, reading.error
    return (ClientTaskStatus.FINISHED, None) if reading.finished else None


def left_runs(work_dir: Path) -> list[LeftRun]:
    """Every run an earlier manager left under ``work_dir/results`` (folders without a
    readable offer are removed, saying so)."""
    found = []
    for folder in sorted((work_dir / "results").glob("task_*/run_*")):
        if not folder.is_dir() or folder.is_symlink():
            continue
        raw = read_regular(offer_file(folder), 1024 * 1024)
        try:
            if isinstance(raw, str):
                raise ValueError(raw)
            offer = TaskOffer.model_validate_json(raw)
        except (ValueError, ValidationError) as exc:
            logger.warning("%s: a run left without its offer (%s); removed", folder,
                           str(exc).splitlines()[0])
            forget(folder)
            continue
        found.append(LeftRun(offer, folder, _how_it_ended(spool_file(folder))))
    return found
