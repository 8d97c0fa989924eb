"""Assembling the user manager from the configuration, and starting it."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from agata_common.config import CloudSettings
from agata_common.database import make_engine
from agata_common.runtime import cloud_runtime
from agata_contracts.queues import client_changes_exchange
from agata_contracts.users import UserInfo
from microservice_interconnect.broadcast import Broadcaster
from microservice_interconnect.runtime import ServiceRuntime
from microservice_interconnect.service import ServiceHost
from user_manager.cli_sessions import CliSessionRegistry
from user_manager.devices import DeviceRegistry
from user_manager.service import UserManager

NAME = "user_manager"


@dataclass
class RunningUserManager:
    """A serving user manager."""

    manager: UserManager
    runtime: ServiceRuntime
    host: ServiceHost
    engine: Engine

    def stop(self) -> None:
        """Finish requests in hand, disconnect, close the database."""
        self.runtime.stop()
        self.engine.dispose()


def start(config: CloudSettings, engine: Engine | None = None, *,
          name: str = NAME) -> RunningUserManager:
    """Open the database (the configured one unless ``engine`` is given) and serve the RPCs."""
    if engine is None:
        engine = make_engine(config.user_manager.database_url,
                             config.storage.resolved_data_dir() / "users.db")
    runtime = cloud_runtime(name, config)
    changes: Broadcaster[UserInfo] = Broadcaster(
        runtime.link, client_changes_exchange(config.server_broker.queue_prefix))
    manager = UserManager(engine, cache_ttl_s=config.user_manager.cache_ttl_s,
                          lost_after_s=config.user_manager.lost_after_s,
                          announce=changes.publish)
    manager.create_schema()

    def changed(info: UserInfo) -> None:
        manager.forget(info)
        changes.publish(info)

    runtime.serve(DeviceRegistry(engine, manager.describe, changed))
    runtime.serve(CliSessionRegistry(engine))
    host = runtime.serve(manager)
    runtime.start()
    return RunningUserManager(manager, runtime, host, engine)
