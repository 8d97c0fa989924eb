"""``agata tasks results``: list a run's result files, or save them all into a folder."""

from __future__ import annotations

import argparse
import io
import zipfile
from pathlib import Path, PurePosixPath

from agata_cli.client import EXIT_OK, EXIT_SERVER_ERROR, EXIT_USAGE, CliError, Gateway, quote
from agata_cli.output import out, out_json, size, table, when
from agata_common.paths import prepare_parent, resolve_inside


def _save(archive: bytes, folder: Path) -> list[Path]:
    """Unpack the gateway's results archive under ``folder``; every entry's path is checked
    (a task path, inside the folder) before anything is written."""
    try:
        bundle = zipfile.ZipFile(io.BytesIO(archive))
    except zipfile.BadZipFile:
        raise CliError("the gateway's results archive is not a zip file",
                       EXIT_SERVER_ERROR) from None
    with bundle:
        entries = [info for info in bundle.infolist() if not info.is_dir()]
        targets = []
        for info in entries:
            try:
                targets.append(resolve_inside(folder, PurePosixPath(info.filename).as_posix()))
            except ValueError as exc:
                raise CliError(f"the results archive has an entry {info.filename!r} that "
                               f"cannot be saved: {exc}", EXIT_SERVER_ERROR) from None
        for info, target in zip(entries, targets, strict=True):
            prepare_parent(folder, target)
            target.write_bytes(bundle.read(info))
    return targets


def tasks_results(gateway: Gateway, args: argparse.Namespace) -> int:
    """``tasks results``: the result files of a run (the latest by default); with ``-o DIR``
    every file is saved under ``DIR/task-<id>-run-<n>/``."""
    run = args.run or 0
    base = f"/api/tasks/{quote(args.task_id)}/runs/{run}/results"
    listing = gateway.get(base)
    if args.output is None:
        if args.json:
            out_json(listing)
            return EXIT_OK
        files = listing["files"]
        out(f"task {listing['task_id']} run {listing['run']}: {len(files)} result file(s), "
            f"{size(listing['total_bytes'])}")
        if files:
            for line in table(["PATH", "SIZE", "STORED"],
                              ([f["path"], size(f["size"]), when(f["stored_at"])]
                               for f in files)):
                out("  " + line)
        return EXIT_OK
    folder: Path = args.output
    if folder.exists() and not folder.is_dir():
        raise CliError(f"{folder} is a file; -o takes a folder", EXIT_USAGE)
    folder.mkdir(parents=True, exist_ok=True)
    saved = _save(gateway.download(f"{base}.zip"), folder.resolve())
    if args.json:
        out_json({"task_id": listing["task_id"], "run": listing["run"],
                  "saved": [str(path) for path in saved]})
    else:
        top = saved[0].relative_to(folder.resolve()).parts[0] if saved else ""
        out(f"saved {len(saved)} result file(s), {size(listing['total_bytes'])}, "
            f"to {folder / top}")
    return EXIT_OK
