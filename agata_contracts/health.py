"""What the cloud gateway's ``GET /health`` answers (public: it names no secret and no task)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class Health(BaseModel):
    """Liveness of the gateway: its broker connection, and whether its data folder's disk is
    full (``disk_detail`` says how much is free where). ``status`` is ``degraded`` when either
    is wrong; HTTP 503 only without the broker (a full disk serves on)."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["ok", "degraded"]
    broker: Literal["connected", "disconnected"]
    disk: Literal["ok", "full", "unknown"] = "ok"
    disk_detail: str = ""
