"""Flower runs as AGATA tasks: the run id, the status, the app's facts and the run's size.

A run ``flwr run`` starts is a task like any other, whose id is ``flwr-<run id>``: Flower's
integer run id and the task id are each other's spelling, so any gateway (and a restarted
one) maps them without a table, the web page and ``agata tasks`` show which Flower run a task
is, and the mapping lives in the one place every replica already shares, the task's row.
The run ids are random (as Flower's are) below 2**53, so they survive JSON and JavaScript
unchanged. A Flower run is its task's latest run (a task started again from the web page
keeps its Flower run id).
"""

from __future__ import annotations

import io
import re
import secrets
import tomllib
import zipfile
from datetime import UTC, datetime
from typing import Any

from flwr.proto.run_pb2 import Run, RunStatus
from flwr.proto.transport_pb2 import Scalar

TASK_PREFIX = "flwr-"
MAX_RUN_ID = 2**53 - 1
_TASK_ID = re.compile(r"^flwr-([1-9][0-9]{0,15})$")
APP_TAG = "flwr-app:"
"""The tag a run's task carries with the app's ``publisher/name==version``."""
DEFAULT_DEVICES = 2
MAX_MANIFEST_BYTES = 256 * 1024

STATUS = {
    "created": ("pending", ""),
    "running": ("running", ""),
    "finished": ("finished", "completed"),
    "failed": ("finished", "failed"),
    "stopped": ("finished", "stopped"),
}
"""An AGATA task status as Flower's (status, sub-status)."""


def new_run_id() -> int:
    """A fresh random run id."""
    return 1 + secrets.randbelow(MAX_RUN_ID)


def task_id_of(run_id: int) -> str:
    """The task that is Flower run ``run_id``."""
    return f"{TASK_PREFIX}{run_id}"


def run_id_of(task_id: str) -> int | None:
    """The Flower run id a task is, None for a task no ``flwr run`` started."""
    match = _TASK_ID.match(task_id)
    if match is None:
        return None
    run_id = int(match.group(1))
    return run_id if run_id <= MAX_RUN_ID else None


def check_run_id(run_id: int) -> str:
    """The task id of a run id from a request; ValueError for one no run can have."""
    if not 1 <= run_id <= MAX_RUN_ID:
        raise ValueError(f"run {run_id} does not exist")
    return task_id_of(run_id)


class FabError(ValueError):
    """A FAB whose manifest cannot be read."""


def fab_manifest(fab: bytes) -> dict[str, Any]:
    """The ``pyproject.toml`` of a FAB (a zip), parsed; FabError when it has none or it is
    not TOML."""
    try:
        with zipfile.ZipFile(io.BytesIO(fab)) as archive:
            info = archive.getinfo("pyproject.toml")
            if info.file_size > MAX_MANIFEST_BYTES:
                raise FabError("the FAB's pyproject.toml is too large")
            return tomllib.loads(archive.read(info).decode("utf-8"))
    except KeyError:
        raise FabError("the FAB has no pyproject.toml at its top") from None
    except (zipfile.BadZipFile, UnicodeDecodeError, tomllib.TOMLDecodeError, OSError):
        raise FabError("the FAB is not a zip archive with a readable pyproject.toml") from None


def _table(value: Any, *keys: str) -> dict[str, Any]:
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, dict) else {}


def app_label(manifest: dict[str, Any]) -> str:
    """``publisher/name==version`` of the app (what Flower calls its FAB id and version)."""
    publisher = _table(manifest, "tool", "flwr", "app").get("publisher", "")
    project = _table(manifest, "project")
    return f"{publisher}/{project.get('name', '')}=={project.get('version', '')}"[:60]


def _flat(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def app_config(manifest: dict[str, Any]) -> dict[str, Any]:
    """The app's run config (``[tool.flwr.app.config]``, nested tables' keys joined with dots
    as Flower does)."""
    return _flat(_table(manifest, "tool", "flwr", "app", "config"))


def unknown_keys(app: dict[str, Any], overrides: dict[str, Any]) -> str | None:
    """What is wrong with overrides naming keys the app's run config lacks, None if nothing."""
    unknown = sorted(set(overrides) - set(app))
    if not unknown:
        return None
    return (f"unknown run config key(s) {', '.join(unknown)}; the app's "
            f"[tool.flwr.app.config] has: {', '.join(sorted(app)) or 'none'}")


def overrides_from(config: Any) -> dict[str, str | int | float | bool]:
    """``--run-config`` overrides (Flower's key to Scalar map) as task server arguments;
    ValueError for a value a run config cannot hold."""
    result: dict[str, str | int | float | bool] = {}
    for key, scalar in config.items():
        if not isinstance(scalar, Scalar):
            raise ValueError(f"run config {key!r} has no value")
        kind = scalar.WhichOneof("scalar")
        if kind is None or kind == "bytes":
            raise ValueError(f"run config {key!r}: give a number, a boolean or a string")
        result[str(key)] = getattr(scalar, kind)
    return result


def devices_for(app: dict[str, Any], overrides: dict[str, Any],
                federation_nodes: int | None) -> int:
    """How many devices a run takes: the federation config's ``num-supernodes`` when Flower
    passes one, else the run's ``min-nodes`` when the app declares it, else 2."""
    if federation_nodes:
        return federation_nodes
    if "min-nodes" in app:
        for value in (overrides.get("min-nodes"), app["min-nodes"]):
            if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
                return value
    return DEFAULT_DEVICES


def _stamp(text: Any) -> str:
    if not isinstance(text, str) or not text:
        return ""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat()


def run_message(task: dict[str, Any]) -> Run:
    """A task (its JSON view) as Flower's Run."""
    status, sub_status = STATUS.get(task["status"], ("pending", ""))
    details = (task.get("status_reason") or "") if sub_status in ("failed", "stopped") else ""
    label = next((tag[len(APP_TAG):] for tag in task.get("tags", [])
                  if tag.startswith(APP_TAG)), "")
    fab_id, _, fab_version = label.partition("==")
    started = _stamp(task.get("started_at"))
    return Run(
        run_id=run_id_of(task["id"]) or 0,
        fab_id=fab_id,
        fab_version=fab_version,
        override_config={key: _scalar(value)
                         for key, value in task.get("server_arguments", {}).items()},
        pending_at=_stamp(task.get("created")),
        starting_at=started,
        running_at=started,
        finished_at=_stamp(task.get("ended_at")) if status == "finished" else "",
        status=RunStatus(status=status, sub_status=sub_status, details=details),
    )


def _scalar(value: Any) -> Scalar:
    if isinstance(value, bool):
        return Scalar(bool=value)
    if isinstance(value, int):
        return Scalar(sint64=value)
    if isinstance(value, float):
        return Scalar(double=value)
    return Scalar(string=str(value))
