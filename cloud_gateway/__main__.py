"""``python -m cloud_gateway``: serve HTTP until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import sys

from aiohttp import web

from agata_common.config import ConfigError, cloud_settings
from agata_common.process import configure_logging
from cloud_gateway.wiring import create_app, server_tls

logger = logging.getLogger("cloud_gateway")


def main() -> int:
    """Run the gateway (aiohttp handles SIGINT/SIGTERM with a graceful shutdown)."""
    configure_logging("cloud_gateway")
    try:
        config = cloud_settings()
        tls = server_tls(config.server_gateway)
    except ConfigError as exc:
        logger.error("%s", exc)
        return 2
    gateway = config.server_gateway
    app = create_app(config)
    logger.info("cloud gateway on %s://%s:%d", "https" if tls else "http", gateway.host,
                gateway.port)
    web.run_app(
        app,
        host=gateway.host,
        port=gateway.port,
        ssl_context=tls,
        print=None,
        access_log=logging.getLogger("cloud_gateway.access") if gateway.access_log else None,
        shutdown_timeout=5,
    )
    logger.info("cloud gateway stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
