"""Endpoints declared ``inline`` run on the connection's loop and keep the same contract."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from pydantic import BaseModel

from agata_common.config import Settings
from agata_common.runtime import cloud_runtime
from microservice_interconnect import NotFound, RpcSpec, wire
from microservice_interconnect.runtime import ServiceRuntime
from microservice_interconnect.service import endpoints_of, rpc


class Key(BaseModel):
    key: str


class Value(BaseModel):
    key: str
    thread: str


LOOKUP = RpcSpec("mi_inline_lookup", "mi_inline", Key, Value, "Look a key up.")
SLOW = RpcSpec("mi_inline_threaded", "mi_inline", Key, Value, "Same, on a worker thread.")


class Lookups:
    @rpc(LOOKUP, inline=True)
    def lookup(self, request: Key) -> Value:
        if request.key == "missing":
            raise NotFound("no such key")
        return Value(key=request.key, thread=threading.current_thread().name)

    @rpc(SLOW)
    def threaded(self, request: Key) -> Value:
        return Value(key=request.key, thread=threading.current_thread().name)


@pytest.fixture
def runtimes(settings: Settings) -> Iterator[tuple[ServiceRuntime, ServiceRuntime]]:
    service = cloud_runtime("mi_inline_service", settings)
    host = service.serve(Lookups())
    caller = cloud_runtime("mi_inline_caller", settings)
    service.start()
    caller.start()
    assert host.ready.wait(10)
    yield service, caller
    caller.stop()
    service.stop()


def test_inline_flag_is_read_from_the_decorator() -> None:
    endpoints = endpoints_of(Lookups())
    assert endpoints["mi_inline_lookup"].inline is True
    assert endpoints["mi_inline_threaded"].inline is False


def test_inline_handler_runs_on_the_links_loop_thread_with_the_same_contract(runtimes) -> None:
    service, caller = runtimes
    inline = caller.client.call(LOOKUP, Key(key="a"))
    threaded = caller.client.call(SLOW, Key(key="a"))
    assert inline.thread == f"amqp-{service.link.name}"
    assert threaded.thread.startswith("rpc")
    with pytest.raises(NotFound, match="no such key"):
        caller.client.call(LOOKUP, Key(key="missing"))
    status, _, envelope = wire.split_reply(
        caller.client.call_raw(LOOKUP.queue(), b'{"key": 5}'))
    assert status == 400 and envelope["errors"][0]["field"] == "key"
