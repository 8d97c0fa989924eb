"""``python -m client_gateway``: the device's bridge to the cloud, until SIGINT/SIGTERM."""

from __future__ import annotations

import sys

from agata_common.config import device_settings
from agata_common.process import run_service
from client_gateway.wiring import NAME, start

if __name__ == "__main__":
    sys.exit(run_service(NAME, lambda: start(device_settings()).stop))
