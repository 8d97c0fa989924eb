"""The run's door on a real ServerApp host process: only sockets with the door key are upgraded,
and nothing large is taken before a hello."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from support import wait_for

from agata_contracts.credentials import device_credential
from agata_contracts.run_door import DOOR_KEY_HEADER, DOOR_PATH, Hello, door_key
from experiments.processes import free_port
from experiments.stack import TASKS_DIR
from flower_runtime import RUN_CREDENTIAL_ENV

RUN_CREDENTIAL = "c" * 64
RUN_CONFIG = ('{"num-server-rounds": 1, "min-nodes": 1, "vector-size": 8, "learning-rate": 0.5, '
              '"fail-on-round": 0, "train-delay-s": 0.0}')


@pytest.fixture
def host(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A ServerApp host of the numpy app waiting for one device; (its address, its pid)."""
    port = free_port()
    log = (tmp_path / "host.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "flower_runtime.server_host", "--app", str(TASKS_DIR / "app_numpy"),
         "--host", "127.0.0.1", "--port", str(port), "--run-id", "1", "--devices", "1",
         "--join-timeout-s", "60", "--run-config", RUN_CONFIG],
        env={**os.environ, RUN_CREDENTIAL_ENV: RUN_CREDENTIAL}, stdout=log, stderr=log,
        start_new_session=True)
    try:
        wait_for(lambda: b"waiting for 1 device" in (tmp_path / "host.log").read_bytes(), 60,
                 "the host to listen")
        yield f"http://127.0.0.1:{port}{DOOR_PATH}", process.pid
    finally:
        process.kill()
        process.wait(10)
        log.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def _refused_status(url: str, headers: dict[str, str]) -> int:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(url, headers=headers)
        return refused.value.status


def test_a_socket_without_the_door_key_is_refused_before_any_upgrade(host) -> None:
    url, _ = host
    assert asyncio.run(_refused_status(url, {})) == 403
    assert asyncio.run(_refused_status(url, {DOOR_KEY_HEADER: "0" * 64})) == 403


def test_a_large_first_frame_is_closed_without_the_host_growing(host) -> None:
    url, pid = host
    before = rss_mb(pid)

    async def flood() -> aiohttp.WSMessage:
        async with aiohttp.ClientSession() as session:
            socket = await session.ws_connect(
                url, headers={DOOR_KEY_HEADER: door_key(RUN_CREDENTIAL)}, max_msg_size=0)
            started = time.monotonic()
            try:
                await socket.send_bytes(b"\0" * (150 << 20))
            except (ConnectionError, aiohttp.ClientError):
                pass
            closed = await socket.receive(timeout=10)
            assert time.monotonic() - started < 10
            return closed

    closed = asyncio.run(flood())
    assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                           aiohttp.WSMsgType.ERROR)
    assert rss_mb(pid) - before < 30, "the host buffered an unauthenticated frame"


def test_a_silent_socket_is_closed_and_a_valid_hello_is_welcomed(host) -> None:
    url, _ = host

    async def talk() -> tuple[aiohttp.WSMessage, str]:
        async with aiohttp.ClientSession() as session:
            headers = {DOOR_KEY_HEADER: door_key(RUN_CREDENTIAL)}
            silent = await session.ws_connect(url, headers=headers)
            started = time.monotonic()
            closed = await silent.receive(timeout=15)
            assert time.monotonic() - started < 8, "a silent socket was kept past the hello bound"
            device = await session.ws_connect(url, headers=headers)
            await device.send_str(Hello(client_id="dev-1", credential=device_credential(
                RUN_CREDENTIAL, "dev-1")).model_dump_json())
            welcome = await device.receive(timeout=10)
            return closed, welcome.data

    closed, welcome = asyncio.run(talk())
    assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert '"type":"welcome"' in welcome and '"partition-id":0' in welcome
