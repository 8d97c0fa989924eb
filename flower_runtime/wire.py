"""What travels between a run's ServerApp host and a device's ClientApp worker.

One websocket per device (through the cloud gateway, see ``agata_contracts.run_door``). Text
frames carry JSON: control messages (the host's welcome or refusal, the end of the run) and the
head of every Flower ``Message``. Binary frames carry the message's bytes, streamed in chunks of
at most ``CHUNK_BYTES``: first the message without its arrays (Flower's protobuf), then a JSON
table of its arrays, then the arrays' own bytes, untouched. So any app's records cross
unchanged, no frame is ever larger than a chunk, the model is never re-encoded (the bytes sent
are the ``Array`` objects' own, shared by every device a strategy broadcasts to), and the
receiver knows the size of what comes before it accepts a byte of it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from flwr.app import Array, ArrayRecord, Message, RecordDict
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agata_contracts.run_door import CHUNK_BYTES, DOOR_PATH, MAX_FRAME_BYTES, Hello
from flower_runtime.flower_internals import (
    ProtoMessage,
    error_from_proto,
    error_to_proto,
    make_message,
    metadata_from_proto,
    metadata_to_proto,
    recorddict_from_proto,
    recorddict_to_proto,
)

__all__ = ["CHUNK_BYTES", "MAX_FRAME_BYTES", "PATH", "Hello"]

PATH = DOOR_PATH
MAX_CONTROL_BYTES = 64 << 10
"""The largest control (text) frame."""
MAX_TABLE_BYTES = 64 << 20
"""The largest array table (some 500,000 arrays)."""
DEFAULT_MAX_MESSAGE_BYTES = 4 << 30
"""The default per-run limit on one Flower message (its arrays included)."""


class Welcome(BaseModel):
    """The host's answer: who the device is in this run and the run's config."""

    type: Literal["welcome"] = "welcome"
    run_id: int
    node_id: int
    node_config: dict[str, bool | int | float | str]
    run_config: dict[str, bool | int | float | str]
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES


class Refusal(BaseModel):
    """The host will not take this device: ``full`` when the run has all its devices or is
    over (nothing wrong with the device), else a wrong credential or a broken protocol."""

    type: Literal["refused"] = "refused"
    reason: str
    full: bool = False


class RunEnded(BaseModel):
    """The ServerApp returned or failed: the device's part is over."""

    type: Literal["ended"] = "ended"
    status: Literal["completed", "failed"]
    reason: str | None = None


class MessageHead(BaseModel):
    """A Flower message follows in binary frames: ``proto_bytes`` of the message without its
    arrays, ``table_bytes`` of the array table (JSON), then ``array_bytes`` of array data."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["message"] = "message"
    proto_bytes: int = Field(ge=0)
    table_bytes: int = Field(ge=0, le=MAX_TABLE_BYTES)
    array_bytes: int = Field(ge=0)

    @property
    def total(self) -> int:
        """Bytes that follow the head."""
        return self.proto_bytes + self.table_bytes + self.array_bytes


class WireError(ValueError):
    """A frame that is not what the protocol allows."""


class FrameSocket(Protocol):
    """The websocket operations the protocol uses (aiohttp's client and server sockets)."""

    async def send_str(self, data: str, compress: int | None = None) -> None:
        """Send a text frame."""

    async def send_bytes(self, data: bytes, compress: int | None = None) -> None:
        """Send a binary frame."""


@dataclass(frozen=True)
class Outgoing:
    """A message ready to send: its head and the buffers that follow it, in order."""

    head: str
    parts: tuple[bytes | memoryview, ...]


def encode(message: Message) -> Outgoing:
    """A Flower message as a head and its byte parts (arrays are referenced, not copied)."""
    small = RecordDict()
    order: list[str] = []
    table: dict[str, list[list[Any]]] = {}
    data: list[bytes] = []
    if message.has_content():
        for key, record in message.content.items():
            order.append(key)
            if isinstance(record, ArrayRecord):
                table[key] = [[name, array.dtype, list(array.shape), array.stype,
                               len(array.data)] for name, array in record.items()]
                data.extend(array.data for array in record.values())
            else:
                small[key] = record
    proto = ProtoMessage(
        metadata=metadata_to_proto(message.metadata),
        content=recorddict_to_proto(small) if message.has_content() else None,
        error=error_to_proto(message.error) if message.has_error() else None,
    ).SerializeToString()
    table_json = json.dumps({"order": order, "arrays": table},
                            separators=(",", ":")).encode()
    head = MessageHead(proto_bytes=len(proto), table_bytes=len(table_json),
                       array_bytes=sum(len(d) for d in data))
    return Outgoing(head.model_dump_json(), (proto, table_json, *data))


def chunks(parts: Sequence[bytes | memoryview], size: int = CHUNK_BYTES
           ) -> Iterator[bytes | memoryview]:
    """The parts as frames of at most ``size`` bytes: small parts are joined, large ones
    sliced without copying."""
    pending = bytearray()
    for part in parts:
        view = memoryview(part).cast("B")
        offset = 0
        if pending:
            take = min(size - len(pending), len(view))
            pending += view[:take]
            offset = take
            if len(pending) < size:
                continue
            yield bytes(pending)
            pending = bytearray()
        while len(view) - offset >= size:
            yield view[offset:offset + size]
            offset += size
        if offset < len(view):
            pending += view[offset:]
    if pending:
        yield bytes(pending)


async def send(socket: FrameSocket, outgoing: Outgoing) -> None:
    """Send a message: its head, then its bytes in chunks (each send waits for the socket
    to drain, so memory stays bounded whatever the model's size)."""
    await socket.send_str(outgoing.head)
    for chunk in chunks(outgoing.parts):
        await socket.send_bytes(chunk)  # type: ignore[arg-type]


class Assembler:
    """Collects a message's binary frames after its head; ``decode`` once ``complete``."""

    def __init__(self, head: MessageHead, max_message_bytes: int) -> None:
        if head.total > max_message_bytes:
            raise WireError(f"message of {head.total} bytes is over this run's limit of "
                            f"{max_message_bytes} bytes")
        self.head = head
        self._frames: list[bytes] = []
        self._received = 0

    @property
    def complete(self) -> bool:
        """Whether every byte the head announced has arrived."""
        return self._received == self.head.total

    def add(self, frame: bytes) -> None:
        """One binary frame of the message."""
        if self._received + len(frame) > self.head.total:
            raise WireError("more message bytes than the head announced")
        self._frames.append(frame)
        self._received += len(frame)

    def decode(self) -> Message:
        """The Flower message; ``WireError`` when the bytes are not one."""
        head = self.head
        reader = _Reader(self._frames)
        self._frames = []
        proto = ProtoMessage()
        try:
            proto.ParseFromString(reader.take(head.proto_bytes))
            table = json.loads(reader.take(head.table_bytes))
            arrays = _array_records(table, reader, head.array_bytes)
            small = recorddict_from_proto(proto.content) if proto.HasField("content") else None
            content = None
            if small is not None:
                content = RecordDict()
                for key in table["order"]:
                    content[key] = arrays[key] if key in arrays else small[key]
            return make_message(
                metadata=metadata_from_proto(proto.metadata), content=content,
                error=error_from_proto(proto.error) if proto.HasField("error") else None)
        except WireError:
            raise
        except Exception as exc:
            raise WireError(f"not a Flower message: {type(exc).__name__}: {exc}") from None


class Inbox:
    """Turns a socket's frames back into messages: text frames are control messages (one of
    ``controls``) or message heads, binary frames the bytes of the message being received."""

    def __init__(self, max_message_bytes: int, *controls: type[BaseModel]) -> None:
        self.max_message_bytes = max_message_bytes
        self.controls = controls
        self._assembler: Assembler | None = None

    def text(self, data: str) -> BaseModel | Message | None:
        """A text frame: a control message, or None when it began a message."""
        if self._assembler is not None:
            raise WireError("a text frame came in the middle of a message")
        item = parse_control(data, MessageHead, *self.controls)
        if not isinstance(item, MessageHead):
            return item  # type: ignore[no-any-return]
        self._assembler = Assembler(item, self.max_message_bytes)
        return self._finish()

    def binary(self, data: bytes) -> Message | None:
        """A binary frame: the message once its last byte came, else None."""
        if self._assembler is None:
            raise WireError("a binary frame came without a message head")
        self._assembler.add(data)
        return self._finish()

    def _finish(self) -> Message | None:
        assembler = self._assembler
        if assembler is None or not assembler.complete:
            return None
        self._assembler = None
        return assembler.decode()


class _Reader:
    """Takes consecutive byte ranges out of a list of frames, copying each range once."""

    def __init__(self, frames: list[bytes]) -> None:
        self._frames = frames
        self._index = 0
        self._offset = 0

    def take(self, count: int) -> bytes:
        pieces: list[memoryview] = []
        while count > 0:
            frame = self._frames[self._index]
            piece = memoryview(frame)[self._offset:self._offset + count]
            pieces.append(piece)
            count -= len(piece)
            self._offset += len(piece)
            if self._offset == len(frame):
                self._frames[self._index] = b""
                self._index += 1
                self._offset = 0
        if len(pieces) == 1 and isinstance(pieces[0].obj, bytes) \
                and len(pieces[0]) == len(pieces[0].obj):
            return pieces[0].obj
        return b"".join(pieces)


def _array_records(table: Any, reader: _Reader, announced: int) -> dict[str, ArrayRecord]:
    if (not isinstance(table, dict) or not isinstance(table.get("order"), list)
            or not isinstance(table.get("arrays"), dict)):
        raise WireError("bad array table")
    records: dict[str, ArrayRecord] = {}
    total = 0
    for key, entries in table["arrays"].items():
        if key not in table["order"] or not isinstance(entries, list):
            raise WireError(f"bad array table entry {key!r}")
        arrays: dict[str, Array] = {}
        for entry in entries:
            name, dtype, shape, stype, size = _array_entry(entry)
            total += size
            if total > announced:
                raise WireError("the array table announces more bytes than the head")
            arrays[name] = Array(dtype=dtype, shape=shape, stype=stype, data=reader.take(size))
        records[key] = ArrayRecord(array_dict=arrays, keep_input=False)
    if total != announced:
        raise WireError("the array table and the head disagree on the array bytes")
    return records


def _array_entry(entry: Any) -> tuple[str, str, tuple[int, ...], str, int]:
    if not (isinstance(entry, list) and len(entry) == 5 and isinstance(entry[0], str)
            and isinstance(entry[1], str) and isinstance(entry[2], list)
            and all(isinstance(n, int) and n >= 0 for n in entry[2])
            and isinstance(entry[3], str) and isinstance(entry[4], int) and entry[4] >= 0):
        raise WireError("bad array entry in the table")
    return entry[0], entry[1], tuple(entry[2]), entry[3], entry[4]


def control(model: BaseModel) -> str:
    """A control message as a text frame."""
    return model.model_dump_json()


def parse_control(text: str, *models: type[BaseModel]) -> Any:
    """The first of ``models`` that ``text`` is; ``WireError`` otherwise."""
    if len(text) > MAX_CONTROL_BYTES:
        raise WireError("control frame too large")
    try:
        raw = json.loads(text)
    except ValueError:
        raise WireError("control frame is not JSON") from None
    kind = raw.get("type") if isinstance(raw, dict) else None
    for model in models:
        if model.model_fields["type"].default == kind:
            try:
                return model.model_validate(raw)
            except ValidationError as exc:
                raise WireError(f"bad {kind} frame: {exc.errors()[0]['msg']}") from None
    raise WireError(f"unexpected control frame {kind!r}")
