"""The run socket's framing: messages cross whole, in bounded frames, never over their limit."""

from __future__ import annotations

import asyncio
import json
import tracemalloc

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.app.message.message import make_message
from flwr.app.metadata import Metadata

from flower_runtime import TRAFFIC_LINE, moved_bytes, wire


def _message(arrays: list[np.ndarray], **config: int | str | bytes) -> Message:
    content = RecordDict({"arrays": ArrayRecord(arrays), "config": ConfigRecord(dict(config)),
                          "metrics": MetricRecord({"loss": 0.5, "per_class": [0.1, 0.2]})})
    metadata = Metadata(run_id=7, message_id="m1", src_node_id=1, dst_node_id=42,
                        reply_to_message_id="", group_id="3", created_at=1.0, ttl=60.0,
                        message_type="train")
    return make_message(metadata=metadata, content=content)


def _frames(outgoing: wire.Outgoing) -> list[bytes]:
    return [bytes(chunk) for chunk in wire.chunks(outgoing.parts)]


def _roundtrip(message: Message, limit: int = 1 << 30) -> tuple[Message, list[bytes]]:
    outgoing = wire.encode(message)
    inbox = wire.Inbox(limit)
    assert inbox.text(outgoing.head) is None
    frames = _frames(outgoing)
    decoded = [inbox.binary(frame) for frame in frames]
    assert all(item is None for item in decoded[:-1])
    assert isinstance(decoded[-1], Message)
    return decoded[-1], frames


def test_a_message_crosses_whole_in_bounded_frames() -> None:
    big = np.arange(3 * wire.CHUNK_BYTES // 8 + 5, dtype=np.float64)
    small = np.ones((3, 4), dtype=np.float32)
    message = _message([small, big, small * 2], server_round=3, blob=b"\x00\x01")
    back, frames = _roundtrip(message)
    assert max(len(frame) for frame in frames) <= wire.CHUNK_BYTES
    assert len(frames) >= 3
    arrays = back.content["arrays"].to_numpy_ndarrays()
    np.testing.assert_array_equal(arrays[1], big)
    np.testing.assert_array_equal(arrays[2], small * 2)
    assert list(back.content.keys()) == ["arrays", "config", "metrics"]
    assert back.content["config"]["blob"] == b"\x00\x01"
    assert back.content["metrics"]["per_class"] == [0.1, 0.2]
    assert back.metadata.message_type == "train"
    assert back.metadata.group_id == "3"
    assert back.metadata.dst_node_id == 42


def test_the_arrays_own_bytes_are_sent_not_copies() -> None:
    message = _message([np.zeros(2 * wire.CHUNK_BYTES, dtype=np.uint8)])
    outgoing = wire.encode(message)
    array = next(iter(message.content["arrays"].values()))
    assert any(part is array.data for part in outgoing.parts)
    views = [c for c in wire.chunks(outgoing.parts) if isinstance(c, memoryview)]
    assert views and all(view.obj is array.data for view in views)


def test_an_error_message_crosses() -> None:
    from flwr.app import Error

    instruction = _message([np.zeros(1)])
    error = make_message(metadata=instruction.metadata, error=Error(code=3, reason="boom"))
    back, _ = _roundtrip(error)
    assert back.has_error() and back.error.reason == "boom"


def test_a_message_over_the_runs_limit_is_refused_at_its_head() -> None:
    outgoing = wire.encode(_message([np.zeros(10_000)]))
    with pytest.raises(wire.WireError, match="over this run's limit"):
        wire.Inbox(1000).text(outgoing.head)


def test_frames_beyond_the_announced_size_are_refused() -> None:
    outgoing = wire.encode(_message([np.zeros(100)]))
    inbox = wire.Inbox(1 << 20)
    inbox.text(outgoing.head)
    with pytest.raises(wire.WireError, match="more message bytes"):
        inbox.binary(b"x" * (wire.MessageHead.model_validate_json(outgoing.head).total + 1))


@pytest.mark.parametrize("frame", ['{"type":"message","proto_bytes":-1,"table_bytes":0,'
                                   '"array_bytes":0}', "not json", '{"type":"welcome"}'])
def test_bad_heads_are_wire_errors(frame: str) -> None:
    with pytest.raises(wire.WireError):
        wire.Inbox(1 << 20).text(frame)


def test_binary_without_a_head_is_a_wire_error() -> None:
    with pytest.raises(wire.WireError, match="without a message head"):
        wire.Inbox(1 << 20).binary(b"abc")


def test_a_lying_array_table_is_a_wire_error() -> None:
    outgoing = wire.encode(_message([np.zeros(4)]))
    head = wire.MessageHead.model_validate_json(outgoing.head)
    proto, table = outgoing.parts[0], bytes(outgoing.parts[1])
    parsed = json.loads(table)
    parsed["arrays"]["arrays"][0][4] += 8
    lying = json.dumps(parsed).encode()
    forged = wire.MessageHead(proto_bytes=head.proto_bytes, table_bytes=len(lying),
                              array_bytes=head.array_bytes)
    inbox = wire.Inbox(1 << 20)
    inbox.text(forged.model_dump_json())
    with pytest.raises(wire.WireError):
        inbox.binary(bytes(proto) + lying + b"".join(bytes(p) for p in outgoing.parts[2:]))


def test_odd_frame_cuts_and_empty_arrays_cross_whole() -> None:
    arrays = [np.arange(1000, dtype=np.int64), np.zeros(0, dtype=np.float32),
              np.ones((7, 3), dtype=np.float16), np.zeros(0, dtype=np.uint8)]
    outgoing = wire.encode(_message(arrays, server_round=1))
    stream = b"".join(bytes(part) for part in outgoing.parts)
    for cut in (1, 7, 333, 4096):
        inbox = wire.Inbox(1 << 20)
        inbox.text(outgoing.head)
        pieces = [stream[i:i + cut] for i in range(0, len(stream), cut)]
        decoded = [inbox.binary(piece) for piece in pieces]
        back = decoded[-1]
        assert isinstance(back, Message) and all(item is None for item in decoded[:-1])
        for sent, got in zip(arrays, back.content["arrays"].to_numpy_ndarrays(), strict=True):
            np.testing.assert_array_equal(sent, got)
            assert sent.dtype == got.dtype


def test_a_message_costs_its_own_size_once_while_it_arrives() -> None:
    size = 16 * wire.CHUNK_BYTES
    outgoing = wire.encode(_message([np.ones(size // 8, dtype=np.float64)]))
    stream = b"".join(bytes(part) for part in outgoing.parts)
    inbox = wire.Inbox(1 << 30)
    inbox.text(outgoing.head)
    tracemalloc.start()
    try:
        back = None
        for offset in range(0, len(stream), wire.CHUNK_BYTES):
            back = inbox.binary(stream[offset:offset + wire.CHUNK_BYTES])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(back, Message)
    # the arrays' bytes once, plus the frame in hand: not the frames kept and then joined
    assert peak < size + 3 * wire.CHUNK_BYTES, peak
    np.testing.assert_array_equal(back.content["arrays"].to_numpy_ndarrays()[0],
                                  np.ones(size // 8))


def test_chunks_join_small_parts_and_keep_order() -> None:
    parts = [b"a" * 3, b"b" * 10, b"c" * 2, b"d"]
    frames = [bytes(c) for c in wire.chunks(parts, size=4)]
    assert b"".join(frames) == b"aaabbbbbbbbbbccd"
    assert all(len(f) <= 4 for f in frames)


class _Socket:
    """Collects what ``wire.send`` writes."""

    def __init__(self) -> None:
        self.frames: list[str | bytes] = []

    async def send_str(self, data: str, compress: int | None = None) -> None:
        self.frames.append(data)

    async def send_bytes(self, data: bytes, compress: int | None = None) -> None:
        self.frames.append(bytes(data))


def test_traffic_counts_the_array_bytes_of_whole_messages_each_way() -> None:
    arrays = [np.ones(1000, dtype=np.float64), np.zeros((3, 4), dtype=np.float32)]
    outgoing = wire.encode(_message(arrays, server_round=1))
    array_bytes = sum(len(record.data) for record in
                      _message(arrays).content["arrays"].values())  # .npy bytes, headers too
    assert outgoing.array_bytes == array_bytes >= 8000 + 48
    sent, received = wire.Traffic(), wire.Traffic()
    socket = _Socket()
    asyncio.run(wire.send(socket, outgoing, sent))
    assert sent == wire.Traffic(sent=array_bytes)
    inbox = wire.Inbox(1 << 20, traffic=received)
    assert inbox.text(str(socket.frames[0])) is None
    *partial, last = [inbox.binary(bytes(frame)) for frame in socket.frames[1:]]
    assert isinstance(last, Message) and all(item is None for item in partial)
    assert received == wire.Traffic(received=array_bytes)
    no_arrays = wire.encode(_message([]))
    assert no_arrays.array_bytes == 0


def test_the_hosts_traffic_line_reads_back_as_its_bytes_both_ways() -> None:
    output = ("INFO round 1\n" + TRAFFIC_LINE.format(sent=10, received=2) + "\n"
              + "INFO " + TRAFFIC_LINE.format(sent=900, received=600) + "\n")
    assert moved_bytes(output) == 1500  # the last line counts
    assert moved_bytes("no such line\n") is None
