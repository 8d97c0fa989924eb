"""``python -m cloud_task_manager``: serve tasks and run their servers until SIGINT/SIGTERM."""

from __future__ import annotations

import sys
from collections.abc import Callable

from agata_common.config import settings
from agata_common.database import make_engine
from agata_common.process import run_service
from cloud_task_manager.contracts import TASK_EVENTS_EXCHANGE
from cloud_task_manager.service import CloudTaskManager
from cloud_task_manager.storage import Credentials, TaskStorage
from microservice_interconnect.broadcast import Broadcaster
from microservice_interconnect.runtime import ServiceRuntime
from user_manager.contracts import GET_USER_INFO, GetUserInfoRequest, UserInfo


def start() -> Callable[[], None]:
    """Open the database and task folders, reconcile, serve the RPCs; return the stop function."""
    config = settings()
    section = config.cloud_task_manager
    data_dir = config.storage.resolved_data_dir()
    engine = make_engine(section.database_url, data_dir / "tasks.db")
    runtime = ServiceRuntime("cloud_task_manager", config, config.server_broker)

    def lookup_client(client_id: str) -> UserInfo:
        return runtime.client.call(GET_USER_INFO, GetUserInfoRequest(user_id=client_id))

    manager = CloudTaskManager(
        engine,
        TaskStorage(data_dir, int(section.max_file_mb * 1024 * 1024)),
        Credentials.from_config(section.download_secret, data_dir),
        lookup_client,
        stop_grace_s=section.stop_grace_s,
        max_files_per_task=section.max_files_per_task,
        notify=Broadcaster(runtime.link, config.server_broker.queue_prefix
                           + TASK_EVENTS_EXCHANGE).publish,
    )
    runtime.serve(manager)
    runtime.start()

    def stop() -> None:
        runtime.stop(before_close=manager.shutdown)
        engine.dispose()

    return stop


if __name__ == "__main__":
    sys.exit(run_service("cloud_task_manager", start))
