"""Flower's process-wide settings for hosted apps: no telemetry, warnings only on the console."""

from __future__ import annotations

import logging
import os


def quiet_flower(level: int = logging.WARNING) -> None:
    """Switch Flower's telemetry off and keep its logger to ``level`` and above."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    logging.getLogger("flwr").setLevel(level)
