"""``python -m client_task_manager``: run compatible tasks on this device until SIGINT/SIGTERM."""

from __future__ import annotations

import sys

from agata_common.config import device_settings
from agata_common.process import run_service
from client_task_manager.wiring import NAME, start

if __name__ == "__main__":
    sys.exit(run_service(NAME, lambda: start(device_settings()).stop))
