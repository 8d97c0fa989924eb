"""``python -m cloud_task_manager``: serve tasks and run their servers until SIGINT/SIGTERM."""

from __future__ import annotations

import sys

from agata_common.config import cloud_settings
from agata_common.process import run_service
from cloud_task_manager.wiring import NAME, start

if __name__ == "__main__":
    sys.exit(run_service(NAME, lambda: start(cloud_settings()).stop))
