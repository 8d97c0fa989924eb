"""Process lifecycle shared by every ``python -m`` service: logging and clean signal stops."""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import sys
from collections.abc import Callable
from types import FrameType

from agata_common.config import ConfigError

logger = logging.getLogger(__name__)

EXTRAS = {"docker": "docker", "sqlalchemy": "cloud", "alembic": "cloud", "psycopg": "cloud",
          "torch": "torch", "matplotlib": "torch"}
"""Which extra of ``agata-flmngr`` installs a package a service may need (a device's install
has none of them)."""


def configure_logging(service: str) -> None:
    """Log to stderr with time, level, service and logger name (level from ``AGATA_LOG_LEVEL``)."""
    level = os.environ.get("AGATA_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format=f"%(asctime)s %(levelname)-7s {service} %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("pika").setLevel(logging.WARNING)


def wait_for_stop_signal() -> str:
    """Block until SIGINT or SIGTERM arrives; return its name.

    The kernel may hand a process's signal to any of its threads (it does when the main thread
    still has one pending, as right after a SIGCONT). Python then runs the handler in the main
    thread only once that thread wakes, so the wait sleeps on the signal wakeup socket, which
    any thread's signal writes to, rather than on a lock only the main thread's signal breaks.
    """
    received: list[str] = []

    def handle(signum: int, _frame: FrameType | None) -> None:
        received.append(signal.Signals(signum).name)

    reader, writer = socket.socketpair()
    writer.setblocking(False)
    previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    try:
        signal.signal(signal.SIGINT, handle)
        signal.signal(signal.SIGTERM, handle)
        while not received:
            if select.select([reader], [], [], 3600)[0]:
                reader.recv(64)
    finally:
        signal.set_wakeup_fd(previous)
        reader.close()
        writer.close()
    return received[0]


def run_service(service: str, start: Callable[[], Callable[[], None]]) -> int:
    """Start a service, wait for SIGINT/SIGTERM, stop it; return the process exit code.

    ``start`` brings the service up and returns the function that stops it.
    """
    configure_logging(service)
    try:
        stop = start()
    except ConfigError as exc:
        logger.error("%s", exc)
        return 2
    except ModuleNotFoundError as exc:
        top = (exc.name or "").partition(".")[0]
        if top not in EXTRAS:
            logger.exception("%s failed to start", service)
            return 1
        logger.error("%s cannot start: the package %s is not installed "
                     "(pip install 'agata-flmngr[%s]')", service, top, EXTRAS[top])
        return 2
    except Exception:
        logger.exception("%s failed to start", service)
        return 1
    logger.info("%s running (pid %d); SIGINT or SIGTERM stops it", service, os.getpid())
    name = wait_for_stop_signal()
    logger.info("%s stopping (%s)", service, name)
    try:
        stop()
    except Exception:
        logger.exception("%s did not stop cleanly", service)
        return 1
    logger.info("%s stopped", service)
    return 0
