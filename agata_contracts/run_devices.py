"""A run's devices: who is in, since when, the rounds each trained, who left and who replaced
whom. The run's ServerApp host reports them (a ``roster`` report line), the cloud task manager
keeps the latest list of each task's current run, and the task page and ``agata tasks show``
read it through ``rpc_exec_get_run_devices``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from agata_contracts.common import TaskId
from agata_contracts.rpc import Audience, RpcSpec

SERVICE = "cloud_task_manager"
MAX_SEATS = 10_000
"""The most seats one run's list keeps (older ones are dropped first)."""


class RunDevice(BaseModel):
    """One device's stay in a run (a device that left and came back has two)."""

    model_config = ConfigDict(extra="ignore")

    client_id: str = Field(max_length=256)
    partition_id: int = Field(ge=0)
    joined: float = Field(description="When it joined (Unix time).")
    joined_after_round: int = Field(0, ge=0)
    left: float | None = Field(None, description="When it left; null: it is in the run.")
    left_after_round: int | None = None
    why_left: str | None = Field(None, max_length=1000)
    rounds_trained: int = Field(0, ge=0)
    replaced: str | None = Field(None, description="The device whose partition it took.")
    replaced_by: str | None = Field(None, description="The device that took its partition.")
    rejoined: bool = Field(False, description="It came back to its own partition.")


class Roster(BaseModel):
    """What a run's host reports of its devices, and the change that made it report."""

    model_config = ConfigDict(extra="ignore")

    devices: list[RunDevice] = Field(default_factory=list, max_length=MAX_SEATS)
    change: str | None = Field(None, max_length=2000, description="One sentence: who "
                               "joined, left, replaced whom or came back.")
    vacancies: int = Field(0, ge=0, description="Partitions free for a replacement.")
    lost: bool = Field(False, description="A device just left the started run: another may "
                       "take its partition.")


class RunDevicesRequest(BaseModel):
    """Which task (its latest run)."""

    model_config = ConfigDict(extra="forbid")

    task_id: TaskId


class RunDevices(BaseModel):
    """The devices of a task's latest run."""

    task_id: str
    run: int
    devices: int = Field(description="Devices the run asks for.")
    min_devices: int = Field(description="The fewest it goes on with.")
    seats: list[RunDevice]


GET_RUN_DEVICES: RpcSpec[RunDevicesRequest, RunDevices] = RpcSpec(
    "rpc_exec_get_run_devices", SERVICE, RunDevicesRequest, RunDevices,
    "The devices of the task's latest run: who is in, since when, rounds trained, who left "
    "and who replaced whom.", frozenset({Audience.OPERATOR}))

RPCS = (GET_RUN_DEVICES,)
