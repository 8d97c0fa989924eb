"""Fetching a task's files into a fresh folder, each verified against its sha256."""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from agata_common.paths import prepare_parent, resolve_inside
from agata_contracts.tasks import DownloadTaskFileRequest, TaskFileContent, TaskOffer

logger = logging.getLogger(__name__)

FetchFile = Callable[[DownloadTaskFileRequest], TaskFileContent]


class CorruptDownload(Exception):
    """A downloaded file does not match the sha256 the cloud announced."""


def download_task(offer: TaskOffer, fetch: FetchFile, work_dir: Path, client_id: str) -> Path:
    """Download every file of an offer into ``work_dir/task_<id>/run_<run>``; return it.

    Files are written only after their sha256 matched the offer; on any mismatch the folder is
    removed and ``CorruptDownload`` raised, so nothing unverified is ever run.
    """
    folder = work_dir / f"task_{offer.task_id}" / f"run_{offer.run}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    total = sum(f.size for f in offer.files)
    received = 0
    try:
        for index, announced in enumerate(offer.files, start=1):
            name = announced.name
            try:
                target = resolve_inside(folder, name)
                prepare_parent(folder, target)
            except ValueError as exc:
                raise CorruptDownload(str(exc)) from None
            content = fetch(DownloadTaskFileRequest(task_id=offer.task_id, filename=name,
                                                    credential=offer.download_credential,
                                                    client_id=client_id))
            digest = hashlib.sha256(content.content).hexdigest()
            if digest != announced.sha256:
                raise CorruptDownload(
                    f"{name}: sha256 {digest[:12]}… does not match the announced "
                    f"{announced.sha256[:12]}… ({len(content.content)} bytes received)"
                )
            target.write_bytes(content.content)
            received += len(content.content)
            logger.info("task %s: file %d/%d %s verified (%s of %s)", offer.task_id, index,
                        len(offer.files), name, _size(received), _size(total))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def _size(count: int) -> str:
    return f"{count / 1024:.1f} KiB" if count >= 1024 else f"{count} B"
