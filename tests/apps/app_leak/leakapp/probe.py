"""Looking around as a malicious task would, and writing down what worked."""

import json
import os
from pathlib import Path
from typing import Any

SERVICE_MARKERS = ("AGATA_STORAGE_DATA_DIR=", "AGATA_SERVER_GATEWAY_API_TOKEN=",
                   "AGATA_CLIENT_PARAMS_JOIN_TOKEN=", "AGATA_CLOUD_TASK_MANAGER_DOWNLOAD_SECRET=",
                   "AGATA_SERVER_BROKER_PASSWORD=")
"""What only a service's environment holds."""

MAX_FILES = 5000
WRITTEN = "agata-leak-written.txt"


def _app_folder() -> Path:
    """The app's own folder (where it was loaded from)."""
    return Path(__file__).resolve().parents[1]


def _own_folders() -> list[Path]:
    """Where this task may read and write: its app and its results folder (where it works)."""
    own = [_app_folder()]
    if os.environ.get("AGATA_RESULTS_DIR"):
        own.append(Path(os.environ["AGATA_RESULTS_DIR"]).resolve())
    return own


def _inside(path: Path, folders: list[Path]) -> bool:
    return any(path == folder or folder in path.parents for folder in folders)


def _read(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError:
        return False
    return True


def _write(folder: Path) -> bool:
    try:
        (folder / WRITTEN).write_text("leaked")
    except OSError:
        return False
    return True


def _service_environ(pid: str) -> bool:
    try:
        text = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return any(marker in text for marker in SERVICE_MARKERS)


def look_around(root: str) -> dict[str, Any]:
    """Every file under ``root`` (but the task's own folders) it could read, the folders it
    could write in, the processes it sees and those whose environment is a service's."""
    own = _own_folders()
    read: list[str] = []
    folders = [_app_folder(), Path.cwd()]
    if root:
        for count, (folder, _, files) in enumerate(os.walk(root)):
            if count > MAX_FILES:
                break
            path = Path(folder).resolve()
            if _inside(path, own):
                continue
            folders.append(path)
            read += [str(path / name) for name in files
                     if name != WRITTEN and _read(path / name)]
    written = [str(folder) for folder in dict.fromkeys(folders)
               if not _inside(folder.resolve(), own[1:]) and _write(folder)]
    try:
        pids = [pid for pid in os.listdir("/proc") if pid.isdigit()]
    except OSError:
        pids = []
    return {"read": read, "written": written, "pids": len(pids),
            "service_environ": [pid for pid in pids if _service_environ(pid)]}


def report(found: dict[str, Any], name: str) -> dict[str, float]:
    """Keep ``found`` as a result file and return it as metrics (counts)."""
    folder = Path(os.environ.get("AGATA_RESULTS_DIR", "."))
    (folder / name).write_text(json.dumps(found, indent=1))
    gateway = found.get("gateway", {}).values()
    return {"leak-read": float(len(found["read"])), "leak-written": float(len(found["written"])),
            "leak-pids": float(found["pids"]),
            "leak-environ": float(len(found["service_environ"])),
            "leak-secrets": float(len(found.get("tokens", []))),
            "leak-broker": float(list(found.get("broker", {}).values()).count("opened")),
            "leak-gateway": float(sum(isinstance(status, int) and status < 300
                                      for status in gateway))}
