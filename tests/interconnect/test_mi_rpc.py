"""RPC over a real RabbitMQ: round trips, errors, timeouts, concurrency, heartbeats, recovery."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pika
import pytest
from interconnect.mi_helpers import TcpProxy, blocking_connection, delete_queues, wait_until
from pydantic import BaseModel, Field

from agata_common.config import Settings
from agata_common.runtime import cloud_runtime
from microservice_interconnect import (
    BadRequest,
    Conflict,
    NotFound,
    RpcError,
    RpcSpec,
    RpcTimeout,
    ServiceUnavailable,
    wire,
)
from microservice_interconnect.runtime import ServiceRuntime
from microservice_interconnect.service import rpc

# -- the contract ------------------------------------------------------------------------------


class EchoRequest(BaseModel):
    text: str
    times: int = Field(1, ge=1, le=10)


class EchoResponse(BaseModel):
    text: str
    worker: str


class FailRequest(BaseModel):
    kind: str
    detail: str = ""


class SleepRequest(BaseModel):
    seconds: float = Field(ge=0, le=30)
    tag: str = ""


class SleepResponse(BaseModel):
    slept: float
    tag: str


ECHO = RpcSpec("mi_echo", "mi_test", EchoRequest, EchoResponse, "Echo the text.")
FAIL = RpcSpec("mi_fail", "mi_test", FailRequest, EchoResponse, "Fail as asked.")
SLEEP = RpcSpec("mi_sleep", "mi_test", SleepRequest, SleepResponse, "Sleep, then answer.")
BAD_RETURN = RpcSpec("mi_bad_return", "mi_test", FailRequest, EchoResponse, "Break the contract.")
NOBODY = RpcSpec("mi_nobody_serves_this", "mi_test", EchoRequest, EchoResponse, "Unserved.")
ALL_SPECS = (ECHO, FAIL, SLEEP, BAD_RETURN)


class MiService:
    """A service exercising every outcome of a handler."""

    def __init__(self) -> None:
        self.sleeping = threading.Event()
        self.release = threading.Event()
        self.calls = 0
        self._lock = threading.Lock()

    @rpc(ECHO)
    def echo(self, request: EchoRequest) -> EchoResponse:
        with self._lock:
            self.calls += 1
        return EchoResponse(text=request.text * request.times,
                            worker=threading.current_thread().name)

    @rpc(FAIL)
    def fail(self, request: FailRequest) -> EchoResponse:
        if request.kind == "not_found":
            raise NotFound(f"no such thing: {request.detail}")
        if request.kind == "conflict":
            raise Conflict(f"already running: {request.detail}")
        if request.kind == "bad_request":
            raise BadRequest("detail must be set", errors=[{"field": "detail", "message": "x"}])
        raise ValueError("secret internals")

    @rpc(SLEEP)
    def sleep(self, request: SleepRequest) -> SleepResponse:
        self.sleeping.set()
        self.release.wait(request.seconds)  # a test may end the sleep early
        return SleepResponse(slept=request.seconds, tag=request.tag)

    @rpc(BAD_RETURN)
    def bad_return(self, request: FailRequest) -> EchoResponse:
        if request.kind == "string":
            return "not a response"  # type: ignore[return-value]
        if request.kind == "dict":
            return {"text": "ok as a dict", "worker": "w"}  # type: ignore[return-value]
        return FailRequest(kind="wrong model")  # type: ignore[return-value]


# -- fixtures ----------------------------------------------------------------------------------


@dataclass
class Served:
    runtime: ServiceRuntime
    service: MiService


class Runtimes:
    """Starts runtimes for one test and stops whatever is still running at the end."""

    def __init__(self) -> None:
        self._running: list[ServiceRuntime] = []
        self._prefixes: list[Settings] = []

    def service(self, config: Settings, name: str = "mi_service") -> Served:
        runtime = cloud_runtime(name, config)
        service = MiService()
        host = runtime.serve(service)
        runtime.start()
        self._running.append(runtime)
        self._prefixes.append(config)
        assert host.ready.wait(10), "service did not come up"
        return Served(runtime, service)

    def caller(self, config: Settings, name: str = "mi_caller") -> ServiceRuntime:
        runtime = cloud_runtime(name, config).start()
        self._running.append(runtime)
        return runtime

    def stop(self, runtime: ServiceRuntime) -> None:
        self._running.remove(runtime)
        runtime.stop()

    def close(self) -> None:
        for runtime in reversed(self._running):
            runtime.stop()
        for config in self._prefixes:
            delete_queues(config.server_broker,
                          [spec.queue(config.server_broker.queue_prefix) for spec in ALL_SPECS])


@pytest.fixture
def runtimes() -> Iterator[Runtimes]:
    started = Runtimes()
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
def served(runtimes: Runtimes, settings: Settings) -> Served:
    return runtimes.service(settings)


@pytest.fixture
def caller(runtimes: Runtimes, settings: Settings, served: Served) -> ServiceRuntime:
    return runtimes.caller(settings)


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    started = TcpProxy().start()
    try:
        yield started
    finally:
        started.stop()


def via_proxy(make_settings: Callable[..., Settings], settings: Settings, proxy: TcpProxy,
              **overrides: str) -> Settings:
    """Settings sharing ``settings``' queue prefix whose server broker is the proxy."""
    return make_settings(
        AGATA_SERVER_BROKER_HOST="127.0.0.1",
        AGATA_SERVER_BROKER_PORT=str(proxy.port),
        AGATA_SERVER_BROKER_QUEUE_PREFIX=settings.server_broker.queue_prefix,
        AGATA_SERVER_BROKER_CONNECT_TIMEOUT_S="2",
        **overrides,
    )


def call_until_ok(runtime: ServiceRuntime, within: float) -> EchoResponse:
    """Retry an echo call until it succeeds (the link is reconnecting) or ``within`` passes."""
    deadline = time.monotonic() + within
    while True:
        try:
            return runtime.client.call(ECHO, EchoRequest(text="back"), timeout=2)
        except (ServiceUnavailable, RpcTimeout):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# -- round trips -------------------------------------------------------------------------------


def test_round_trip_from_a_thread(caller: ServiceRuntime, served: Served):
    reply = caller.client.call(ECHO, EchoRequest(text="ab", times=3), timeout=5)
    assert isinstance(reply, EchoResponse)
    assert reply.text == "ababab"
    assert reply.worker.startswith("rpc")  # handled on the pool, not on the I/O loop
    assert caller.client.call(ECHO, {"text": "dict request"}).text == "dict request"
    assert served.service.calls == 2


def test_round_trip_from_plain_threads_concurrently(caller: ServiceRuntime):
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(
            lambda i: caller.client.call(ECHO, EchoRequest(text=f"<{i}>"), timeout=10),
            range(40)))
    assert [reply.text for reply in replies] == [f"<{i}>" for i in range(40)]


async def test_round_trip_from_asyncio(caller: ServiceRuntime):
    # the test's loop is not the link's loop: acall must bridge the two
    assert asyncio.get_running_loop() is not caller.link.loop
    reply = await caller.client.acall(ECHO, EchoRequest(text="async"), timeout=5)
    assert reply.text == "async"


async def test_fifty_concurrent_acalls_get_their_own_replies(caller: ServiceRuntime,
                                                           served: Served):
    started = time.monotonic()
    replies = await asyncio.gather(*(
        caller.client.acall(ECHO, EchoRequest(text=f"#{i}", times=2), timeout=10)
        for i in range(50)))
    assert [reply.text for reply in replies] == [f"#{i}#{i}" for i in range(50)]
    assert served.service.calls == 50
    assert time.monotonic() - started < 10
    assert caller.client._pending == {}


def test_acall_on_the_links_own_loop(caller: ServiceRuntime):
    future = caller.link.run_coroutine(
        caller.client.acall(ECHO, EchoRequest(text="on the link loop"), timeout=5))
    assert future.result(10).text == "on the link loop"


# -- errors ------------------------------------------------------------------------------------


def test_validation_error_is_a_bad_request_naming_the_field(caller: ServiceRuntime,
                                                            served: Served):
    invalid = EchoRequest.model_construct(text="x", times=0)  # skips client-side validation
    with pytest.raises(BadRequest) as caught:
        caller.client.call(ECHO, invalid, timeout=5)
    error = caught.value
    assert error.status_code == 400
    assert "times" in error.message
    assert "mi_echo" in error.message
    assert [problem["field"] for problem in error.errors] == ["times"]

    status, _, envelope = wire.split_reply(
        caller.client.call_raw(ECHO.name, b'{"times": "many"}', timeout=5))
    assert status == 400
    assert {problem["field"] for problem in envelope["errors"]} == {"text", "times"}
    assert served.service.calls == 0


async def test_validation_error_through_acall(caller: ServiceRuntime):
    with pytest.raises(BadRequest) as caught:
        await caller.client.acall(ECHO, EchoRequest.model_construct(times=3), timeout=5)
    assert caught.value.errors == [{"field": "text", "message": "Field required"}]


@pytest.mark.parametrize(("kind", "cls", "status"), [
    ("not_found", NotFound, 404), ("conflict", Conflict, 409), ("bad_request", BadRequest, 400),
])
def test_rpc_errors_keep_their_status_and_message(caller: ServiceRuntime, kind, cls, status):
    with pytest.raises(cls) as caught:
        caller.client.call(FAIL, FailRequest(kind=kind, detail="task-7"), timeout=5)
    assert caught.value.status_code == status
    if kind != "bad_request":
        assert caught.value.message.endswith("task-7")
    else:
        assert caught.value.errors == [{"field": "detail", "message": "x"}]


def test_unexpected_exception_is_500_with_only_an_error_id(caller: ServiceRuntime, caplog):
    with pytest.raises(RpcError) as caught:
        caller.client.call(FAIL, FailRequest(kind="boom"), timeout=5)
    error = caught.value
    assert type(error) is RpcError
    assert error.status_code == 500
    assert error.error_id
    assert error.error_id in error.message
    assert "secret internals" not in error.message
    assert "ValueError" not in error.message
    raw = caller.client.call_raw(FAIL.name, b'{"kind":"boom"}', timeout=5)
    assert b"secret" not in raw
    envelope = json.loads(raw)
    assert set(envelope) == {"status_code", "exception", "error_id"}
    # the details are in the service's log, under the same id
    logged = [r for r in caplog.records if envelope["error_id"] in r.getMessage()]
    assert logged and logged[0].exc_info is not None


@pytest.mark.parametrize("body", [b"{not json", b"", b"\xff\xfe"])
def test_malformed_json_gets_a_400_envelope(caller: ServiceRuntime, body):
    status, result, envelope = wire.split_reply(caller.client.call_raw(ECHO.name, body, timeout=5))
    assert status == 400
    assert result is None
    assert "not valid JSON" in envelope["exception"]


@pytest.mark.parametrize("kind", ["string", "wrong_model"])
def test_handler_returning_the_wrong_type_is_a_500(caller: ServiceRuntime, kind):
    with pytest.raises(RpcError) as caught:
        caller.client.call(BAD_RETURN, FailRequest(kind=kind), timeout=5)
    assert caught.value.status_code == 500
    assert caught.value.error_id


def test_handler_returning_a_matching_dict_is_accepted(caller: ServiceRuntime):
    reply = caller.client.call(BAD_RETURN, FailRequest(kind="dict"), timeout=5)
    assert reply.text == "ok as a dict"


def test_unknown_rpc_is_service_unavailable_at_once(caller: ServiceRuntime):
    # a 503 (not a 504 after the call's 30 s) shows it did not wait for a reply
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable) as caught:
        caller.client.call(NOBODY, EchoRequest(text="x"), timeout=30)
    assert time.monotonic() - started < 15
    assert caught.value.status_code == 503
    assert NOBODY.name in caught.value.message
    assert caller.client._pending == {}


async def test_unknown_rpc_from_asyncio(caller: ServiceRuntime):
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable):
        await caller.client.acall(NOBODY, EchoRequest(text="x"), timeout=30)
    assert time.monotonic() - started < 15


# -- timeouts ----------------------------------------------------------------------------------


def test_call_times_out_when_nobody_consumes_and_the_request_expires(runtimes: Runtimes,
                                                                     settings: Settings):
    prefix = settings.server_broker.queue_prefix
    queue = ECHO.queue(prefix)
    connection = blocking_connection(settings.server_broker)
    try:
        channel = connection.channel()
        channel.queue_declare(queue, durable=False)
        caller = runtimes.caller(settings)
        started = time.monotonic()
        with pytest.raises(RpcTimeout) as caught:
            caller.client.call(ECHO, EchoRequest(text="anyone?"), timeout=0.5)
        elapsed = time.monotonic() - started
        assert 0.45 < elapsed < 10  # the timeout fired (not before 0.5 s, not much after)
        assert caught.value.status_code == 504
        assert ECHO.name in caught.value.message

        def queue_length() -> int:
            return channel.queue_declare(queue, passive=True).method.message_count

        # the request carried an expiration: it does not wait for a service forever
        assert wait_until(lambda: queue_length() == 0, 10, interval=0.2), queue_length()
        assert wait_until(lambda: caller.client._pending == {}, 1)
    finally:
        channel.queue_delete(queue)
        connection.close()


async def test_acall_times_out_when_nobody_consumes(runtimes: Runtimes, settings: Settings):
    queue = ECHO.queue(settings.server_broker.queue_prefix)
    connection = blocking_connection(settings.server_broker)
    try:
        connection.channel().queue_declare(queue, durable=False)
        caller = runtimes.caller(settings)
        started = time.monotonic()
        with pytest.raises(RpcTimeout):
            await caller.client.acall(ECHO, EchoRequest(text="anyone?"), timeout=0.5)
        assert 0.45 < time.monotonic() - started < 10
    finally:
        connection.channel().queue_delete(queue)
        connection.close()


def test_a_slow_handler_does_not_block_other_calls(caller: ServiceRuntime, served: Served):
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(caller.client.call, SLEEP, SleepRequest(seconds=30, tag="slow"), 40)
        assert served.service.sleeping.wait(5)
        for i in range(10):
            assert caller.client.call(ECHO, EchoRequest(text=str(i)), timeout=5).text == str(i)
        assert not slow.done(), "the fast calls should finish while the slow one sleeps"
        served.service.release.set()
        assert slow.result(10).tag == "slow"


def test_heartbeats_survive_a_slow_handler(runtimes: Runtimes, make_settings):
    config = make_settings(AGATA_SERVER_BROKER_HEARTBEAT_S="1")
    assert config.server_broker.heartbeat_s == 1
    served = runtimes.service(config)
    caller = runtimes.caller(config)
    reply = caller.client.call(SLEEP, SleepRequest(seconds=4, tag="long"), timeout=10)
    assert reply.tag == "long"
    assert served.runtime.link.connect_count == 1, "the service reconnected: heartbeats missed"
    assert caller.link.connect_count == 1
    assert served.runtime.link.connected and caller.link.connected
    assert caller.client.call(ECHO, EchoRequest(text="still here"), timeout=5).text == "still here"


# -- lifecycle ---------------------------------------------------------------------------------


def test_graceful_stop_replies_to_the_request_in_flight(runtimes: Runtimes, settings: Settings):
    served = runtimes.service(settings)
    caller = runtimes.caller(settings)
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(caller.client.call, SLEEP, SleepRequest(seconds=1, tag="last"), 10)
        assert served.service.sleeping.wait(5)
        started = time.monotonic()
        runtimes.stop(served.runtime)
        assert time.monotonic() - started < 5
        assert in_flight.result(5).tag == "last"
    assert not served.runtime.link.connected


def test_stopping_twice_and_before_start_is_harmless(settings: Settings):
    runtime = cloud_runtime("mi_never_started", settings)
    runtime.serve(MiService())
    started = time.monotonic()
    runtime.stop()
    assert time.monotonic() - started < 2

    runtime = cloud_runtime("mi_twice", settings)
    host = runtime.serve(MiService())
    runtime.start()
    assert host.ready.wait(10)
    runtime.stop()
    runtime.stop()
    delete_queues(settings.server_broker,
                  [spec.queue(settings.server_broker.queue_prefix) for spec in ALL_SPECS])


# -- broker connection lost --------------------------------------------------------------------


def test_caller_recovers_after_its_connection_is_cut(runtimes: Runtimes, settings: Settings,
                                                     make_settings, proxy: TcpProxy):
    runtimes.service(settings)  # direct to the broker
    caller = runtimes.caller(via_proxy(make_settings, settings, proxy))
    assert caller.client.call(ECHO, EchoRequest(text="before"), timeout=5).text == "before"
    assert caller.link.connect_count == 1

    assert proxy.cut() == 1
    started = time.monotonic()
    try:
        assert caller.client.call(ECHO, EchoRequest(text="right after"), timeout=5).text == \
            "right after"
    except (ServiceUnavailable, RpcTimeout):
        pass
    assert time.monotonic() - started < 6

    assert call_until_ok(caller, within=5).text == "back"
    assert caller.link.connect_count >= 2


async def test_caller_recovers_from_asyncio(runtimes: Runtimes, settings: Settings,
                                            make_settings, proxy: TcpProxy):
    runtimes.service(settings)
    caller = runtimes.caller(via_proxy(make_settings, settings, proxy))
    assert (await caller.client.acall(ECHO, EchoRequest(text="a"), timeout=5)).text == "a"
    proxy.cut()
    results = await asyncio.gather(
        *(caller.client.acall(ECHO, EchoRequest(text=str(i)), timeout=5) for i in range(5)),
        return_exceptions=True)
    for index, result in enumerate(results):
        assert isinstance(result, EchoResponse | ServiceUnavailable | RpcTimeout), result
        if isinstance(result, EchoResponse):
            assert result.text == str(index)
    deadline = time.monotonic() + 5
    while True:
        try:
            reply = await caller.client.acall(ECHO, EchoRequest(text="again"), timeout=2)
            break
        except (ServiceUnavailable, RpcTimeout):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    assert reply.text == "again"
    assert caller.link.connect_count >= 2


def test_pending_call_fails_fast_when_the_callers_connection_is_cut(
        runtimes: Runtimes, settings: Settings, make_settings, proxy: TcpProxy):
    served = runtimes.service(settings)
    caller = runtimes.caller(via_proxy(make_settings, settings, proxy))
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(caller.client.call, SLEEP, SleepRequest(seconds=2), 10)
        assert served.service.sleeping.wait(5)
        started = time.monotonic()
        proxy.cut()
        # the reply can no longer reach this connection: the call fails now, not at its timeout
        with pytest.raises(ServiceUnavailable, match="lost before the reply"):
            pending.result(5)
        assert time.monotonic() - started < 1
    assert call_until_ok(caller, within=5).text == "back"


def test_service_recovers_after_its_connection_is_cut(runtimes: Runtimes, settings: Settings,
                                                      make_settings, proxy: TcpProxy):
    served = runtimes.service(via_proxy(make_settings, settings, proxy))
    caller = runtimes.caller(settings)  # direct to the broker
    assert caller.client.call(ECHO, EchoRequest(text="before"), timeout=5).text == "before"

    assert proxy.cut() == 1
    # the queue outlives the service's connection: a call waits for the service to return
    assert caller.client.call(ECHO, EchoRequest(text="queued"), timeout=8).text == "queued"
    assert served.runtime.link.connect_count >= 2
    assert call_until_ok(caller, within=5).text == "back"


def test_in_flight_call_when_the_service_connection_is_cut(runtimes: Runtimes, settings: Settings,
                                                          make_settings, proxy: TcpProxy):
    served = runtimes.service(via_proxy(make_settings, settings, proxy))
    caller = runtimes.caller(settings)
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(caller.client.call, SLEEP, SleepRequest(seconds=0.5), 8)
        assert served.service.sleeping.wait(5)
        proxy.cut()
        # the unacked request goes back to its queue and is served again after the reconnect
        assert in_flight.result(10).slept == 0.5
    assert served.runtime.link.connect_count >= 2


def test_call_while_the_broker_is_unreachable_is_service_unavailable(
        runtimes: Runtimes, settings: Settings, make_settings, proxy: TcpProxy):
    runtimes.service(settings)
    caller = runtimes.caller(via_proxy(make_settings, settings, proxy))
    assert caller.client.call(ECHO, EchoRequest(text="up"), timeout=5).text == "up"

    proxy.refusing = True
    proxy.cut()
    assert wait_until(lambda: not caller.link.connected, 2)
    # the link was up before: a call fails at once instead of waiting out its timeout
    for timeout in (0.5, 10.0):
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable) as caught:
            caller.client.call(ECHO, EchoRequest(text="down"), timeout=timeout)
        elapsed = time.monotonic() - started
        assert elapsed < 0.4, elapsed
        assert f"127.0.0.1:{proxy.port}" in caught.value.message
        assert "reconnecting" in caught.value.message
    assert caller.link.connect_count == 1

    proxy.refusing = False
    assert call_until_ok(caller, within=8).text == "back"
    assert caller.link.connect_count == 2


async def test_acall_while_the_broker_is_unreachable_is_service_unavailable(
        runtimes: Runtimes, settings: Settings, make_settings, proxy: TcpProxy):
    runtimes.service(settings)
    caller = runtimes.caller(via_proxy(make_settings, settings, proxy))
    assert (await caller.client.acall(ECHO, EchoRequest(text="up"), timeout=5)).text == "up"
    proxy.refusing = True
    proxy.cut()
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable) as caught:
        await caller.client.acall(ECHO, EchoRequest(text="down"), timeout=10)
    assert time.monotonic() - started < 1.5
    assert f"127.0.0.1:{proxy.port}" in caught.value.message


def test_call_before_the_broker_was_ever_reached(runtimes: Runtimes, settings: Settings,
                                                 make_settings, proxy: TcpProxy):
    proxy.refusing = True
    caller = runtimes.caller(via_proxy(make_settings, settings, proxy))
    with pytest.raises(ServiceUnavailable) as caught:
        caller.client.call(ECHO, EchoRequest(text="x"), timeout=1)
    assert f"127.0.0.1:{proxy.port}" in caught.value.message
    assert caller.link.connect_count == 0
    runtimes.service(settings)
    proxy.refusing = False
    assert call_until_ok(caller, within=8).text == "back"


def test_raw_pika_sees_the_service_queue(served: Served, settings: Settings):
    """The AGATA layout: one queue per RPC, named after it (plus the test's prefix)."""
    connection = blocking_connection(settings.server_broker)
    try:
        channel = connection.channel()
        for spec in ALL_SPECS:
            frame = channel.queue_declare(spec.queue(settings.server_broker.queue_prefix),
                                          passive=True)
            assert frame.method.consumer_count == 1
    finally:
        connection.close()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):
        connection = blocking_connection(settings.server_broker)
        try:
            connection.channel().queue_declare(NOBODY.queue(settings.server_broker.queue_prefix),
                                               passive=True)
        finally:
            connection.close()
