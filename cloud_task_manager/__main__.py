"""``python -m cloud_task_manager``: serve tasks and run their servers until SIGINT/SIGTERM."""

from __future__ import annotations

import sys
from collections.abc import Callable

from agata_common.config import settings
from agata_common.database import make_engine
from agata_common.process import run_service
from cloud_task_manager.wiring import build_cloud_task_manager
from microservice_interconnect.runtime import ServiceRuntime


def start() -> Callable[[], None]:
    """Open the database and task folders, reconcile, serve the RPCs; return the stop function."""
    config = settings()
    data_dir = config.storage.resolved_data_dir()
    engine = make_engine(config.cloud_task_manager.database_url, data_dir / "tasks.db")
    runtime = ServiceRuntime("cloud_task_manager", config, config.server_broker)
    manager = build_cloud_task_manager(config, runtime, engine)
    runtime.serve(manager)
    runtime.start()

    def stop() -> None:
        runtime.stop(before_close=manager.shutdown)
        engine.dispose()

    return stop


if __name__ == "__main__":
    sys.exit(run_service("cloud_task_manager", start))
