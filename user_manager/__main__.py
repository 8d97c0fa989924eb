"""``python -m user_manager``: serve the client registry until SIGINT/SIGTERM."""

from __future__ import annotations

import sys

from agata_common.config import cloud_settings
from agata_common.process import run_service
from user_manager.wiring import NAME, start

if __name__ == "__main__":
    sys.exit(run_service(NAME, lambda: start(cloud_settings()).stop))
