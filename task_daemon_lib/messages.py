"""Report line format: the contract between federated task code and its manager.

A task (a Flower ``server.py`` or ``client.py`` running as a child process) reports to
the manager that started it by writing *report lines*:

* one JSON object per line, UTF-8 encoded, terminated by ``b"\\n"``;
* every object carries a ``type`` discriminator and a ``time`` (Unix seconds, float);
* the six message types are::

    {"type": "info",    "info": str,                              "time": float}
    {"type": "stats",   "round": int >= 0, "metrics": {str: float}, "time": float}
    {"type": "print",   "message": str,                           "time": float}
    {"type": "error",   "exception": str,                         "time": float}
    {"type": "trigger", "trigger_name": str, "trigger_arguments": str, "time": float}
    {"type": "checkpoint", "round": int >= 0,                     "time": float}

AGATA conventions: ``info`` ``"Started"`` is sent when a reporter is created and
``info`` ``"Finished"`` when the task ends successfully.  Non-finite metric values are
written as the JSON extensions ``NaN`` / ``Infinity`` / ``-Infinity`` (accepted by
Python's ``json`` module and by :func:`parse_report_line`).  Unknown extra keys are ignored.

Channel: the manager passes the write end of a pipe to the child and names its file
descriptor number in the environment variable ``AGATA_REPORT_FD``.  When that variable
is missing the task falls back to its stdout, prefixing each report line with
``"@agata-report "`` so it can be told apart from the task's own output.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

__all__ = [
    "INFO_FINISHED",
    "INFO_FIRST_TRAIN",
    "INFO_RUN_FULL",
    "INFO_RUN_OVER",
    "INFO_STARTED",
    "REPORT_FD_ENV",
    "STDOUT_PREFIX",
    "CheckpointMessage",
    "ErrorMessage",
    "InfoMessage",
    "PrintMessage",
    "ReportMessage",
    "StatsMessage",
    "TriggerMessage",
    "encode_report",
    "parse_report_line",
]

REPORT_FD_ENV = "AGATA_REPORT_FD"
"""Environment variable holding the report pipe's write-end file descriptor number."""

REPORT_SPOOL_ENV = "AGATA_REPORT_SPOOL"
"""Environment variable naming a file every report is also kept in before it is sent."""

STDOUT_PREFIX = "@agata-report "
"""Prefix of report lines sent over stdout (fallback channel)."""

INFO_STARTED = "Started"
"""Info sent when a task reporter is created."""

INFO_FINISHED = "Finished"
"""Info sent when the task ends successfully."""
INFO_FIRST_TRAIN = "ClientApp train entered"
"""Sent by a Flower App's device worker when it hands the ClientApp its first train message."""
INFO_RUN_OVER = "Left the run: it is over"
"""Sent by a device worker that found its run over (it leaves without failing)."""
INFO_RUN_FULL = "Left the run: it has all its devices"
"""Sent by a device worker its run did not need (it leaves without failing, and may be asked
again when a device of the run goes)."""


class _ReportBase(BaseModel):
    """Fields shared by every report message."""

    model_config = ConfigDict(frozen=True, extra="ignore", ser_json_inf_nan="constants")

    time: float = Field(default_factory=time.time)


class InfoMessage(_ReportBase):
    """Free-form status information (``"Started"``, ``"Finished"``, ...)."""

    type: Literal["info"] = "info"
    info: str


class StatsMessage(_ReportBase):
    """Metrics of one training round."""

    type: Literal["stats"] = "stats"
    round: int = Field(ge=0)
    metrics: dict[str, float] = Field(default_factory=dict)


class PrintMessage(_ReportBase):
    """A line of text the task wants shown to the user."""

    type: Literal["print"] = "print"
    message: str


class ErrorMessage(_ReportBase):
    """The task failed; ``exception`` describes why."""

    type: Literal["error"] = "error"
    exception: str


class TriggerMessage(_ReportBase):
    """A named event with optional string arguments for the manager to act on."""

    type: Literal["trigger"] = "trigger"
    trigger_name: str
    trigger_arguments: str = ""


class CheckpointMessage(_ReportBase):
    """The ServerApp host kept the global model after ``round`` rounds (its file is
    ``checkpoint-<round>.npz`` in the run's state folder, see ``agata_contracts.checkpoints``)."""

    type: Literal["checkpoint"] = "checkpoint"
    round: int = Field(ge=0)


class RosterMessage(_ReportBase):
    """The ServerApp host's devices changed (who joined, left, replaced whom) or trained:
    ``roster`` is an ``agata_contracts.run_devices.Roster`` as JSON (checked by the cloud)."""

    type: Literal["roster"] = "roster"
    roster: dict[str, Any]


ReportMessage = Annotated[
    InfoMessage | StatsMessage | PrintMessage | ErrorMessage | TriggerMessage | CheckpointMessage
    | RosterMessage,
    Field(discriminator="type"),
]
"""Any report message (discriminated on ``type``)."""

_ADAPTER: TypeAdapter[ReportMessage] = TypeAdapter(ReportMessage)


def parse_report_line(line: str | bytes) -> ReportMessage | None:
    """Parse one report line (without prefix); return None for blank or invalid lines."""
    if isinstance(line, str):
        line = line.encode("utf-8", errors="replace")
    line = line.strip()
    if not line:
        return None
    try:
        return _ADAPTER.validate_json(line)
    except (ValidationError, ValueError):
        return None


def encode_report(msg: ReportMessage) -> bytes:
    """Encode a message as one compact JSON report line, terminated by ``b"\\n"``."""
    return msg.model_dump_json().encode("utf-8") + b"\n"
