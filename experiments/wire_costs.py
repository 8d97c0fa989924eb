"""``python -m experiments.wire_costs --model-mb 50``: where a Flower message's time goes on the
run's data path, ours against Flower's protobuf encoding, in the same invocation.

For one ``train`` message carrying a float64 model of N MB it times, in this process: Flower's
own encoding (``message_to_proto`` + ``SerializeToString``) and decoding (``ParseFromString``
+ ``message_from_proto``), which the runtime used before; and ours: ``wire.encode`` (a head and
the arrays' own bytes), cutting it into 1 MiB frames as a socket sends them, and ``Inbox``
reassembling and decoding it; the CPU time of both ends of a loopback websocket carrying
those frames from an aiohttp client, masked as RFC 6455 asks of clients and unmasked as a
device sends them; then the app's own costs both runtimes pay (``ArrayRecord`` from
NumPy, ``to_numpy_ndarrays``). Prints a table, and with ``--json`` one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.app.metadata import Metadata
from flwr.common.serde import message_from_proto, message_to_proto

from flower_runtime import wire
from flower_runtime.client_worker import send_unmasked
from flower_runtime.flower_internals import ProtoMessage, make_message


def _timed(step: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """The best of ``repeat`` runs of ``step`` (seconds) and its last result."""
    best = float("inf")
    result: Any = None
    for _ in range(repeat):
        began = time.perf_counter()
        result = step()
        best = min(best, time.perf_counter() - began)
    return best, result


async def _socket_cpu_s(frames: list[bytes], unmasked: bool) -> float:
    """CPU seconds of this process (both ends) to send ``frames`` from an aiohttp client to an
    aiohttp server on loopback, with the client's frames masked (RFC 6455) or not (ours)."""
    got_all = asyncio.Event()

    async def receive(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(max_msg_size=wire.MAX_FRAME_BYTES)
        await socket.prepare(request)
        count = 0
        async for _ in socket:
            count += 1
            if count == len(frames):
                got_all.set()
        return socket

    app = web.Application()
    app.router.add_get("/", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            socket = await session.ws_connect(f"http://127.0.0.1:{port}/",
                                              max_msg_size=wire.MAX_FRAME_BYTES)
            if unmasked:
                send_unmasked(socket)
            began = time.process_time()
            for frame in frames:
                await socket.send_bytes(frame)
            await asyncio.wait_for(got_all.wait(), 60)
            spent = time.process_time() - began
            await socket.close()
    finally:
        await runner.cleanup()
    return spent


def costs(model_mb: float, repeat: int = 3) -> dict[str, float]:
    """Seconds per step for one message with a ``model_mb`` MB float64 model."""
    model = np.random.default_rng(0).random(max(1, int(model_mb * 1e6 / 8)))
    metadata = Metadata(run_id=1, message_id="m", src_node_id=1, dst_node_id=2,
                        reply_to_message_id="", group_id="1", created_at=time.time(),
                        ttl=3600.0, message_type="train")
    figures: dict[str, float] = {}
    figures["app_arrayrecord_s"], arrays = _timed(lambda: ArrayRecord([model]), repeat)
    message = make_message(metadata=metadata, content=RecordDict(
        {"arrays": arrays, "config": ConfigRecord({"server-round": 1})}))
    figures["flower_encode_s"], data = _timed(
        lambda: message_to_proto(message).SerializeToString(), repeat)

    def flower_decode() -> Message:
        proto = ProtoMessage()
        proto.ParseFromString(data)
        return message_from_proto(proto)

    figures["flower_decode_s"], _ = _timed(flower_decode, repeat)
    figures["ours_encode_s"], outgoing = _timed(lambda: wire.encode(message), repeat)
    figures["ours_frames_s"], frames = _timed(
        lambda: [bytes(chunk) for chunk in wire.chunks(outgoing.parts)], repeat)

    def ours_decode() -> Message | None:
        inbox = wire.Inbox(1 << 40)
        inbox.text(outgoing.head)
        received = None
        for frame in frames:
            received = inbox.binary(frame)
        return received

    figures["ours_decode_s"], received = _timed(ours_decode, repeat)
    for unmasked in (False, True):
        name = "socket_unmasked_cpu_s" if unmasked else "socket_masked_cpu_s"
        figures[name] = min(asyncio.run(_socket_cpu_s(frames, unmasked)) for _ in range(repeat))
    figures["app_to_numpy_s"], _ = _timed(
        lambda: received.content["arrays"].to_numpy_ndarrays(), repeat)
    return {key: round(value, 4) for key, value in figures.items()}


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model-mb", default="50", help="model sizes in MB, comma-separated")
    parser.add_argument("--repeat", type=int, default=3, help="runs per step (best kept)")
    parser.add_argument("--json", action="store_true", help="print one JSON line at the end")
    args = parser.parse_args(argv)
    rows = {size: costs(float(size), args.repeat) for size in args.model_mb.split(",")}
    for size, figures in rows.items():
        print(f"model {size} MB:")
        for key, value in figures.items():
            print(f"  {key:22} {value:8.4f} s")
    if args.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
