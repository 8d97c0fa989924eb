"""``python -m user_manager``: serve the client registry until SIGINT/SIGTERM."""

from __future__ import annotations

import sys
from collections.abc import Callable

from agata_common.config import settings
from agata_common.database import make_engine
from agata_common.process import run_service
from microservice_interconnect.runtime import ServiceRuntime
from user_manager.service import UserManager


def start() -> Callable[[], None]:
    """Open the database, serve the RPCs; return the stop function."""
    config = settings()
    data_dir = config.storage.resolved_data_dir()
    engine = make_engine(config.user_manager.database_url, data_dir / "users.db")
    runtime = ServiceRuntime("user_manager", config, config.server_broker)
    runtime.serve(UserManager(engine, cache_ttl_s=config.user_manager.cache_ttl_s))
    runtime.start()

    def stop() -> None:
        runtime.stop()
        engine.dispose()

    return stop


if __name__ == "__main__":
    sys.exit(run_service("user_manager", start))
