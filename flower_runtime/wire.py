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

import ctypes
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

    @property
    def array_bytes(self) -> int:
        """The bytes of its arrays (the parts after the protobuf and the array table)."""
        return sum(memoryview(part).nbytes for part in self.parts[2:])


@dataclass
class Traffic:
    """Array bytes (the model's) of the whole messages sent and received, counted as they go."""

    sent: int = 0
    received: int = 0


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


async def send(socket: FrameSocket, outgoing: Outgoing, traffic: Traffic | None = None) -> None:
    """Send a message: its head, then its bytes in chunks (each send waits for the socket
    to drain, so memory stays bounded whatever the model's size); counted in ``traffic``
    once sent."""
    await socket.send_str(outgoing.head)
    for chunk in chunks(outgoing.parts):
        await socket.send_bytes(chunk)  # type: ignore[arg-type]
    if traffic is not None:
        traffic.sent += outgoing.array_bytes


class Assembler:
    """Collects a message's binary frames after its head; ``decode`` once ``complete``.

    The small lead (the protobuf and the array table) is kept as it comes; once the table is
    read, every array's bytes object is made at its final size and each later frame is copied
    straight into it and dropped, so a message costs its own size once, not its frames and
    their join."""

    def __init__(self, head: MessageHead, max_message_bytes: int) -> None:
        if head.total > max_message_bytes:
            raise WireError(f"message of {head.total} bytes is over this run's limit of "
                            f"{max_message_bytes} bytes")
        self.head = head
        self._lead = bytearray()
        self._lead_size = head.proto_bytes + head.table_bytes
        self._table: _ArrayTable | None = None
        self._received = 0

    @property
    def complete(self) -> bool:
        """Whether every byte the head announced has arrived."""
        return self._received == self.head.total

    def add(self, frame: bytes) -> None:
        """One binary frame of the message."""
        if self._received + len(frame) > self.head.total:
            raise WireError("more message bytes than the head announced")
        self._received += len(frame)
        view = memoryview(frame)
        if self._table is None:
            take = min(self._lead_size - len(self._lead), len(view))
            self._lead += view[:take]
            view = view[take:]
            if len(self._lead) == self._lead_size:
                self._table = _ArrayTable(bytes(self._lead[self.head.proto_bytes:]),
                                          self.head.array_bytes)
        if len(view):
            assert self._table is not None
            self._table.fill(view)

    def decode(self) -> Message:
        """The Flower message; ``WireError`` when the bytes are not one."""
        if not self.complete or self._table is None:
            raise WireError("the message is not complete")
        proto = ProtoMessage()
        try:
            proto.ParseFromString(bytes(self._lead[:self.head.proto_bytes]))
            self._lead = bytearray()
            arrays = self._table.records()
            small = recorddict_from_proto(proto.content) if proto.HasField("content") else None
            content = None
            if small is not None:
                content = RecordDict()
                for key in self._table.order:
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

    def __init__(self, max_message_bytes: int, *controls: type[BaseModel],
                 traffic: Traffic | None = None) -> None:
        self.max_message_bytes = max_message_bytes
        self.controls = controls
        self.traffic = traffic
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
        message = assembler.decode()
        if self.traffic is not None:
            self.traffic.received += assembler.head.array_bytes
        return message


_new_bytes = ctypes.pythonapi.PyBytes_FromStringAndSize
_new_bytes.restype = ctypes.py_object
_new_bytes.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)
_bytes_address = ctypes.pythonapi.PyBytes_AsString
_bytes_address.restype = ctypes.c_void_p
_bytes_address.argtypes = (ctypes.py_object,)


def _fresh_bytes(size: int) -> tuple[bytes, memoryview]:
    """A new bytes object of ``size`` bytes and a writable view of its contents, to be filled
    before the object is used anywhere (how C code makes bytes, ``PyBytes_FromStringAndSize``
    with no source): Flower's ``Array`` takes ``bytes`` only, and filling one in place spares
    a second copy of the array."""
    if size == 0:
        return b"", memoryview(bytearray())
    data: bytes = _new_bytes(None, size)
    address = _bytes_address(data)
    return data, memoryview((ctypes.c_char * size).from_address(address)).cast("B")


class _ArrayTable:
    """The arrays a message announced (its JSON table), each filled in place as bytes come."""

    def __init__(self, table_json: bytes, announced: int) -> None:
        try:
            table = json.loads(table_json)
        except ValueError:
            raise WireError("bad array table") from None
        if (not isinstance(table, dict) or not isinstance(table.get("order"), list)
                or not isinstance(table.get("arrays"), dict)):
            raise WireError("bad array table")
        self.order: list[Any] = table["order"]
        entries: list[tuple[str, str, str, tuple[int, ...], str, int]] = []
        total = 0
        for key, listed in table["arrays"].items():
            if key not in self.order or not isinstance(listed, list):
                raise WireError(f"bad array table entry {key!r}")
            for entry in listed:
                name, dtype, shape, stype, size = _array_entry(entry)
                total += size
                if total > announced:
                    raise WireError("the array table announces more bytes than the head")
                entries.append((key, name, dtype, shape, stype, size))
        if total != announced:
            raise WireError("the array table and the head disagree on the array bytes")
        self._entries = entries
        self._data: list[bytes] = []
        self._views: list[memoryview] = []
        for *_, size in entries:
            data, view = _fresh_bytes(size)
            self._data.append(data)
            self._views.append(view)
        self._index = 0
        self._offset = 0

    def fill(self, view: memoryview) -> None:
        """Copy the next array bytes into their arrays."""
        while len(view):
            while len(self._views[self._index]) == self._offset:
                self._views[self._index].release()
                self._index += 1
                self._offset = 0
            target = self._views[self._index]
            count = min(len(target) - self._offset, len(view))
            target[self._offset:self._offset + count] = view[:count]
            self._offset += count
            view = view[count:]

    def records(self) -> dict[str, ArrayRecord]:
        """The filled arrays as Flower ``ArrayRecord`` objects, per key (once, when whole)."""
        for view in self._views:
            view.release()
        records: dict[str, dict[str, Array]] = {}
        for (key, name, dtype, shape, stype, _), data in zip(self._entries, self._data,
                                                              strict=True):
            records.setdefault(key, {})[name] = Array(dtype=dtype, shape=shape, stype=stype,
                                                       data=data)
        self._data = []
        return {key: ArrayRecord(array_dict=arrays, keep_input=False)
                for key, arrays in records.items()}


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
