"""Assembling the cloud task manager from the configuration and a service runtime."""

from __future__ import annotations

from sqlalchemy import Engine

from agata_common.config import Settings
from agata_contracts.queues import task_events_exchange
from agata_contracts.users import GET_USER_INFO, GetUserInfoRequest, UserInfo
from cloud_task_manager.service import CloudTaskManager
from cloud_task_manager.storage import Credentials, TaskStorage
from microservice_interconnect.broadcast import Broadcaster
from microservice_interconnect.runtime import ServiceRuntime


def build_cloud_task_manager(config: Settings, runtime: ServiceRuntime,
                             engine: Engine) -> CloudTaskManager:
    """The manager with its storage, credentials, client lookup (an RPC to the user manager)
    and task-event broadcasts, all on the runtime's connection."""
    section = config.cloud_task_manager
    data_dir = config.storage.resolved_data_dir()

    def lookup_client(client_id: str) -> UserInfo:
        return runtime.client.call(GET_USER_INFO, GetUserInfoRequest(user_id=client_id))

    events = Broadcaster(runtime.link, task_events_exchange(runtime.link.broker.queue_prefix))
    return CloudTaskManager(
        engine,
        TaskStorage(data_dir, int(section.max_file_mb * 1024 * 1024)),
        Credentials.from_config(section.download_secret, data_dir),
        lookup_client,
        stop_grace_s=section.stop_grace_s,
        max_files_per_task=section.max_files_per_task,
        notify=events.publish,
    )
