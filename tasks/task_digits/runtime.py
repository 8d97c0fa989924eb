"""Process setup shared by ``server.py`` and ``client.py`` (standard library only).

Kept free of heavy imports so the scripts can create their reporter (which sends
``info "Started"``) before torch and Flower are loaded, and report failures to load them.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import NoReturn

FLOWER_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class TaskArgumentParser(argparse.ArgumentParser):
    """Argument parser for task scripts.

    Raises ``ValueError`` instead of exiting (so the error is reported to the manager) and
    does not accept abbreviated options (an unknown ``--num 3`` must not be taken for
    ``--num-rounds``).  Use :meth:`parse_known_args`: managers may pass extra arguments.
    """

    def __init__(self, **kwargs: object) -> None:
        """Create the parser; keyword arguments go to ``ArgumentParser``."""
        kwargs["allow_abbrev"] = False
        super().__init__(**kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        """Raise instead of printing usage and exiting with status 2."""
        raise ValueError(f"invalid arguments: {message}")


def add_log_level_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--log-level`` (Flower's console log level, default WARNING)."""
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=FLOWER_LOG_LEVELS,
        default="WARNING",
        help="level of Flower's own console log (default: WARNING)",
    )


class _DropDeprecationNotices(logging.Filter):
    """Drops Flower's "DEPRECATED FEATURE" notices about the legacy API we use on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record that is not a deprecation notice."""
        return "DEPRECATED FEATURE" not in str(record.msg)


def setup_flower(log_level: str) -> None:
    """Configure Flower; call before any other ``flwr`` import.

    Disables Flower's telemetry (it would POST to telemetry.flower.ai; tasks run offline)
    unless ``FLWR_TELEMETRY_ENABLED`` is set, makes Flower's console log plain text at
    ``log_level`` and hides the deprecation notices of ``start_server``/``start_client``.
    """
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    from flwr.common.logger import FLOWER_LOGGER, update_console_handler

    update_console_handler(level=log_level, colored=False)
    if not any(isinstance(f, _DropDeprecationNotices) for f in FLOWER_LOGGER.filters):
        FLOWER_LOGGER.addFilter(_DropDeprecationNotices())
