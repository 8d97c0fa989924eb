"""Shared fixtures: real RabbitMQ, real databases (SQLite and PostgreSQL), real services.

Every test gets its own queue prefix, data directory and database, so tests never see each
other's messages or rows, nor those of services running on the same broker.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import ClientSession, web
from scheduling import longest_first, make_scheduler
from support import (
    SUITE_SPARES,
    Cloud,
    Gateway,
    _postgres_database,
    isolated_environ,
    port_open,
    start_cloud,
)

from agata_common.config import Settings, load_settings
from cloud_gateway.wiring import create_app

for _name, _value in SUITE_SPARES.items():
    os.environ.setdefault(_name, _value)  # the stacks the tests start as processes inherit it


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Long modules first, so that workers (``-n N``) finish together (tests/scheduling.py)."""
    longest_first(items)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """With ``--dist loadfile``: a module (or a shared folder) per unit, longest first."""
    if config.getoption("dist") != "loadfile":
        return None
    return make_scheduler(config, log)


@pytest.fixture(scope="session", autouse=True)
def rabbitmq_answers(request: pytest.FixtureRequest) -> None:
    """The suite needs a real RabbitMQ: fail loudly (not skip) when none answers (the unit
    tests alone, ``-m unit``, need none)."""
    if request.config.getoption("markexpr") == "unit":
        return
    host = os.environ.get("AGATA_SERVER_BROKER_HOST", "127.0.0.1")
    port = int(os.environ.get("AGATA_SERVER_BROKER_PORT", "5672"))
    if not port_open(host, port, timeout=3):
        pytest.exit(f"RabbitMQ is not answering on {host}:{port}; run scripts/bootstrap.sh",
                    returncode=3)


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Build test settings; keyword overrides are ``AGATA_*`` variables."""

    def build(**overrides: str) -> Settings:
        return load_settings(environ=isolated_environ(tmp_path, **overrides))

    return build


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """Settings isolated to this test."""
    return make_settings()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
    else:
        yield from _postgres_database()


@pytest.fixture
def cloud(settings: Settings, tmp_path: Path) -> Iterator[Cloud]:
    """The cloud services on SQLite."""
    started = start_cloud(settings, f"sqlite:///{tmp_path / 'cloud.db'}")
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def cloud_on_each_db(settings: Settings, database_url: str) -> Iterator[Cloud]:
    """The cloud services on SQLite and on PostgreSQL."""
    started = start_cloud(settings, database_url)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
async def gateway(cloud: Cloud) -> AsyncIterator[Gateway]:
    """The gateway app serving on a free port in this test's event loop."""
    app = create_app(cloud.settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = cloud.settings.server_gateway.port
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    async with ClientSession() as http:
        gateway = Gateway(f"http://127.0.0.1:{port}", http)
        for _ in range(100):
            async with http.get(f"{gateway.url}/health") as response:
                if response.status == 200:
                    break
            await asyncio.sleep(0.05)
        yield gateway
    await runner.cleanup()
