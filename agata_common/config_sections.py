"""Settings sections both sides share: the executor, results retention, storage, tokens.

Each side composes its own settings of these and of its sections
(:mod:`agata_common.config_cloud`, :mod:`agata_common.config_device`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from agata_common.retention import RetentionPolicy
from microservice_interconnect.settings import EventSettings, RpcSettings, SettingsSection

MIN_TOKEN_LENGTH = 16


def check_token(value: str) -> str:
    """A token is empty (its routes refuse everyone) or at least ``MIN_TOKEN_LENGTH`` long."""
    if value and len(value) < MIN_TOKEN_LENGTH:
        raise ValueError(f"a token must be at least {MIN_TOKEN_LENGTH} characters "
                         "(e.g. python -c 'import secrets; print(secrets.token_hex(16))')")
    return value


PRELOAD_PATTERN = r"^\s*([A-Za-z_][A-Za-z0-9_.]*\s*(,\s*[A-Za-z_][A-Za-z0-9_.]*\s*)*)?$"
"""Comma-separated Python module names (or nothing)."""


class ExecutorSettings(SettingsSection):
    """Where a manager runs task processes: ``confined`` (child processes each in a sandbox,
    the default), ``subprocess`` (plain child processes, unconfined) or ``docker`` (one
    container each, from ``container_image`` unless the task names one)."""

    executor: Literal["confined", "subprocess", "docker"] = "confined"
    confined_read_only: str = Field("", max_length=4096)
    """More folders or files a confined task process may read (comma separated), e.g. a
    device's data set named in its ``node_config``."""
    container_image: str = Field("agata-task:local", min_length=1, max_length=255)
    container_cpus: float = Field(1.0, gt=0, le=256)
    container_memory_mb: int = Field(2048, ge=64, le=1024 * 1024)
    warm_preload: str = Field("numpy,torch", max_length=1024, pattern=PRELOAD_PATTERN)
    """What a warm ServerApp host or ClientApp worker imports before its job comes (Python
    modules, comma separated; empty: nothing): what the apps run here use, so a run does not
    wait for it; each module costs every spare its import time and memory."""

    def preload_modules(self) -> tuple[str, ...]:
        """The modules of ``warm_preload``."""
        return tuple(name.strip() for name in self.warm_preload.split(",") if name.strip())

    def confined_paths(self) -> tuple[Path, ...]:
        """The paths of ``confined_read_only`` (absolute, ``~`` expanded)."""
        return tuple(Path(item.strip()).expanduser().resolve()
                     for item in self.confined_read_only.split(",") if item.strip())


class RetentionSettings(SettingsSection):
    """How many runs' results a task keeps, and how many bytes of them (oldest pruned first)."""

    keep_runs: int = Field(20, ge=1, le=100_000)
    keep_mb_per_task: float = Field(1024.0, gt=0)

    def retention(self) -> RetentionPolicy:
        """The policy these keys make."""
        return RetentionPolicy(self.keep_runs, int(self.keep_mb_per_task * 1024 * 1024))


class StorageSettings(SettingsSection):
    """Where services keep their files (empty: ``$XDG_DATA_HOME/agata``)."""

    data_dir: str = ""
    min_free_mb: float = Field(default=100.0, ge=0)

    def resolved_data_dir(self) -> Path:
        """The data directory, created if missing."""
        if self.data_dir:
            path = Path(self.data_dir).expanduser()
        else:
            base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
            path = Path(base) / "agata"
        path.mkdir(parents=True, exist_ok=True)
        return path.resolve()


class CommonSettings(BaseModel):
    """The sections every process reads, whichever side it is on."""

    model_config = ConfigDict(frozen=True)

    rpc: RpcSettings
    events: EventSettings
    storage: StorageSettings
    source: str = ""


COMMON_SECTIONS: dict[str, type[SettingsSection]] = {
    "rpc": RpcSettings,
    "events": EventSettings,
    "storage": StorageSettings,
}
