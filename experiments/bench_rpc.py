"""RPC and gateway benchmark: ``python -m experiments.bench_rpc [--json]``.

Brings up what it measures (the user manager and the cloud gateway as ``python -m``
processes, on the local RabbitMQ, with a throw-away data directory and queue prefix), then:

* floor: a raw pika echo (persistent connection, direct reply-to) against an echo consumer in
  another process: the best an AMQP round trip can do here, measured in the same run;
* rpc: sequential ``rpc_exec_get_user_info`` through ``RpcClient``, awaited on the client's
  event loop as the gateway does (``rpc_*``), and called from a plain thread (``rpc_thread_*``:
  two more thread hand-offs per call);
* http: the gateway's ``POST /rpc_exec_get_user_info`` with 1 and with 16 concurrent
  keep-alive callers.

Prints a table, or one JSON object with ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pika

from agata_common.config import load_settings
from agata_contracts.users import GET_USER_INFO, UPDATE_USER_INFO, GetUserInfoRequest
from experiments.processes import ProcessGroup, free_port, wait_for_http
from microservice_interconnect import ServiceUnavailable
from microservice_interconnect.link import AmqpLink
from microservice_interconnect.rpc_client import RpcClient

REPO_ROOT = Path(__file__).resolve().parent.parent
TOKEN = uuid.uuid4().hex
AGATA_BASELINE = {"rpc_p50_ms": 9.8, "http_c16_per_s": 139, "http_c16_p99_ms": 222}
TARGETS = "rpc_p50_ms <= 2 x floor_p50_ms; http_c1_p50_ms <= 2; http_c16_per_s >= 1400; " \
          "http_c16_p99_ms <= 30"


def percentile(samples: list[float], fraction: float) -> float:
    """The sample at ``fraction`` of the sorted samples (nearest rank)."""
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


def _echo_server(host: str, port: int, queue: str, ready: Any) -> None:
    connection = pika.BlockingConnection(pika.ConnectionParameters(host, port))
    channel = connection.channel()
    channel.queue_declare(queue, auto_delete=True)

    def echo(ch: Any, method: Any, props: Any, body: bytes) -> None:
        ch.basic_publish("", props.reply_to, body,
                         pika.BasicProperties(correlation_id=props.correlation_id))
        ch.basic_ack(method.delivery_tag)

    channel.basic_consume(queue, echo)
    ready.set()
    channel.start_consuming()


def measure_floor(host: str, port: int, calls: int) -> list[float]:
    """Round trips of a raw pika echo: persistent connection, direct reply-to."""
    queue = f"bench-floor-{uuid.uuid4().hex[:8]}"
    ready = multiprocessing.Event()
    server = multiprocessing.Process(target=_echo_server, args=(host, port, queue, ready),
                                     daemon=True)
    server.start()
    ready.wait(10)
    connection = pika.BlockingConnection(pika.ConnectionParameters(host, port))
    channel = connection.channel()
    replies: dict[str, bytes] = {}
    channel.basic_consume("amq.rabbitmq.reply-to",
                          lambda _c, _m, p, b: replies.__setitem__(p.correlation_id, b),
                          auto_ack=True)
    body = b'{"user_id":"bench-client"}'
    samples = []
    for index in range(calls):
        correlation_id = str(index)
        started = time.perf_counter()
        channel.basic_publish("", queue, body, pika.BasicProperties(
            reply_to="amq.rabbitmq.reply-to", correlation_id=correlation_id))
        while correlation_id not in replies:
            connection.process_data_events(time_limit=None)
        samples.append(time.perf_counter() - started)
    connection.close()
    server.terminate()
    server.join(5)
    return samples


def measure_rpc_threaded(client: RpcClient, calls: int) -> tuple[list[float], float]:
    """Sequential ``rpc_exec_get_user_info`` calls from a plain thread (``client.call``)."""
    request = GetUserInfoRequest(user_id="bench-client")
    samples = []
    begun = time.perf_counter()
    for _ in range(calls):
        started = time.perf_counter()
        client.call(GET_USER_INFO, request)
        samples.append(time.perf_counter() - started)
    return samples, calls / (time.perf_counter() - begun)


async def _rpc_on_loop(client: RpcClient, calls: int) -> tuple[list[float], float]:
    request = GetUserInfoRequest(user_id="bench-client")
    samples = []
    begun = time.perf_counter()
    for _ in range(calls):
        started = time.perf_counter()
        await client.acall(GET_USER_INFO, request)
        samples.append(time.perf_counter() - started)
    return samples, calls / (time.perf_counter() - begun)


def measure_rpc(client: RpcClient, calls: int) -> tuple[list[float], float]:
    """Sequential ``rpc_exec_get_user_info`` from asyncio code on the client's loop (the
    gateway's path: ``await client.acall``)."""
    measured: tuple[list[float], float] = client.link.run_coroutine(
        _rpc_on_loop(client, calls)).result()
    return measured


def _http_request(port: int) -> bytes:
    body = b'{"user_id":"bench-client"}'
    return (
        f"POST /rpc_exec_get_user_info HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _caller(port: int, until: float, samples: list[float], errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = _http_request(port)
    try:
        while time.perf_counter() < until:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            samples.append(time.perf_counter() - started)
            if status != 200:
                errors.append(status)
    finally:
        writer.close()


async def measure_http(port: int, callers: int, seconds: float) -> tuple[list[float], float, int]:
    """Keep-alive callers hammering the gateway for ``seconds``."""
    samples: list[float] = []
    errors: list[int] = []
    warm_until = time.perf_counter() + 0.5
    await asyncio.gather(*(_caller(port, warm_until, [], []) for _ in range(callers)))
    begun = time.perf_counter()
    until = begun + seconds
    await asyncio.gather(*(_caller(port, until, samples, errors) for _ in range(callers)))
    return samples, len(samples) / (time.perf_counter() - begun), len(errors)


def register_bench_client(client: RpcClient, timeout: float = 30) -> None:
    """Register the client the benchmark reads, once the user manager serves its queues."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.call(UPDATE_USER_INFO, {"user_id": "bench-client", "data_qnt": 100,
                                           "sensors": ["camera"]}, timeout=5)
            return
        except ServiceUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextmanager
def services(environ: dict[str, str], log_dir: Path) -> Iterator[None]:
    """The user manager and the gateway as real processes, stopped with SIGTERM after."""
    group = ProcessGroup(environ, log_dir)
    try:
        group.start("user_manager", "user_manager")
        group.start("cloud_gateway", "cloud_gateway")
        yield
    finally:
        group.stop_all()


def ms(value: float) -> float:
    """Seconds to milliseconds, rounded for printing."""
    return round(value * 1000, 3)


def run(calls: int, seconds: float) -> dict[str, Any]:
    """Bring everything up, measure, and return the figures."""
    data_dir = tempfile.mkdtemp(prefix="agata-bench-")
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    port = free_port()
    environ = dict(os.environ)
    environ.update({
        "AGATA_STORAGE_DATA_DIR": data_dir,
        "AGATA_SERVER_BROKER_QUEUE_PREFIX": prefix,
        "AGATA_SERVER_GATEWAY_PORT": str(port),
        "AGATA_SERVER_GATEWAY_API_TOKEN": TOKEN,
        "AGATA_SERVER_GATEWAY_ACCESS_LOG": "false",
        "AGATA_EVENTS_REGISTER_EVENTS": "false",
        "AGATA_LOG_LEVEL": "WARNING",
    })
    config = load_settings(environ=environ)
    broker = config.server_broker
    floor = measure_floor(broker.host, broker.port, calls)
    with services(environ, Path(data_dir) / "logs"):
        wait_for_http(f"http://127.0.0.1:{port}/health", 30)
        link = AmqpLink(broker, name="bench").start()
        client = RpcClient(link, timeout_s=10, queue_prefix=prefix)
        register_bench_client(client)
        measure_rpc(client, 200)
        rpc_samples, rpc_rate = measure_rpc(client, calls)
        thread_samples, thread_rate = measure_rpc_threaded(client, calls)
        link.close()
        c1, _, c1_errors = asyncio.run(measure_http(port, 1, seconds / 2))
        c16, c16_rate, c16_errors = asyncio.run(measure_http(port, 16, seconds))
    floor_p50 = percentile(floor, 0.5)
    rpc_p50 = percentile(rpc_samples, 0.5)
    figures: dict[str, Any] = {
        "floor_p50_ms": ms(floor_p50),
        "floor_p99_ms": ms(percentile(floor, 0.99)),
        "rpc_p50_ms": ms(rpc_p50),
        "rpc_p99_ms": ms(percentile(rpc_samples, 0.99)),
        "rpc_mean_ms": ms(statistics.fmean(rpc_samples)),
        "rpc_per_s": round(rpc_rate, 1),
        "rpc_thread_p50_ms": ms(percentile(thread_samples, 0.5)),
        "rpc_thread_p99_ms": ms(percentile(thread_samples, 0.99)),
        "rpc_thread_per_s": round(thread_rate, 1),
        "http_c1_p50_ms": ms(percentile(c1, 0.5)),
        "http_c1_p99_ms": ms(percentile(c1, 0.99)),
        "http_c16_per_s": round(c16_rate, 1),
        "http_c16_p50_ms": ms(percentile(c16, 0.5)),
        "http_c16_p99_ms": ms(percentile(c16, 0.99)),
        "http_errors": c1_errors + c16_errors,
        "rpc_calls": calls,
        "http_seconds": seconds,
    }
    figures["targets_met"] = {
        "rpc_p50_le_2x_floor": rpc_p50 <= 2 * floor_p50,
        "http_c1_p50_le_2ms": figures["http_c1_p50_ms"] <= 2,
        "http_c16_ge_1400_per_s": figures["http_c16_per_s"] >= 1400,
        "http_c16_p99_le_30ms": figures["http_c16_p99_ms"] <= 30,
    }
    figures["targets"] = TARGETS
    figures["agata_baseline_same_machine"] = AGATA_BASELINE
    return figures


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description="Measure RPC and gateway latency/throughput.")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--calls", type=int, default=3000, help="sequential RPCs (and floor)")
    parser.add_argument("--seconds", type=float, default=6.0,
                        help="duration of the 16-caller HTTP run (1 caller: half)")
    args = parser.parse_args(argv)
    figures = run(args.calls, args.seconds)
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:28} {value}")
    return 0 if figures["http_errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
