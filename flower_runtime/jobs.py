"""The one line a warm process reads on stdin to start its run (pydantic only, no Flower).

The client task manager hands a ``WorkerJob`` to a device's ClientApp worker; the cloud task
manager hands a ``HostJob`` to a ServerApp host. End-of-file instead of a line tells a spare
that no run is coming.
"""

from __future__ import annotations

from pathlib import Path
from typing import TextIO, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agata_contracts.common import ClientId, TaskId


class WorkerJob(BaseModel):
    """A device's part in one run: the app's folder, the cloud it reaches the run through,
    which run, who we are."""

    model_config = ConfigDict(extra="forbid")

    app: Path
    cloud_url: str = Field(min_length=8, max_length=2048)
    cloud_ca_file: Path | None = Field(None, description="The CA that signs an HTTPS cloud.")
    task_id: TaskId
    run: int = Field(ge=1)
    client_id: ClientId
    credential: str = Field(min_length=1, max_length=256)
    node_config: dict[str, bool | int | float | str] = Field(default_factory=dict)
    results_dir: Path | None = Field(None, description="Where the ClientApp leaves its results.")


class HostJob(BaseModel):
    """One run of a ServerApp: the host's command line and the run's credential (each device's
    own is derived from it, and checked when the device joins)."""

    model_config = ConfigDict(extra="forbid")

    arguments: list[str] = Field(max_length=64)
    run_credential: str = Field(default="", max_length=128)


JobT = TypeVar("JobT", WorkerJob, HostJob)


def read_job(stream: TextIO, kind: type[JobT]) -> JobT | None:
    """The job line from ``stream``; None at end-of-file; ValueError when it is malformed."""
    line = stream.readline()
    if not line:
        return None
    try:
        return kind.model_validate_json(line)
    except ValidationError as exc:
        raise ValueError(f"bad job line: {exc}") from None
