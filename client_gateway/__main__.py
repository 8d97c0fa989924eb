"""``python -m client_gateway``: the device's bridge to the cloud, until SIGINT/SIGTERM."""

from __future__ import annotations

import sys
from collections.abc import Callable

from agata_common.config import settings
from agata_common.process import run_service
from client_gateway.runner import NAME, start_client_gateway


def start() -> Callable[[], None]:
    """Start the client gateway on the client broker; return the stop function."""
    return start_client_gateway(settings()).stop


if __name__ == "__main__":
    sys.exit(run_service(NAME, start))
