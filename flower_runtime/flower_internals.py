"""Everything this project takes from Flower that is not Flower's public API, in one place.

The runtime uses Flower's public API (``flwr.app``, ``flwr.serverapp``, ``flwr.clientapp``)
wherever one exists. What remains is listed in ``INTERNALS`` and imported here only; the rest of
the code imports it from this module. When a Flower release moves one of them, importing this
module fails with an error naming what moved and the supported range, and
``tests/flower_runtime/test_fr_flower_internals.py`` says the same in the test run. The gateway's
Control API (``cloud_gateway.flwr_*``) uses Flower's protobuf definitions, also listed here.
"""

from __future__ import annotations

import importlib.metadata

SUPPORTED_FLOWER = ">=1.41,<1.42"
"""The Flower releases this runtime is built and tested against (``flwr==1.41.*``)."""

INTERNALS: tuple[tuple[str, str], ...] = (
    ("flwr.app.message.message", "make_message"),
    ("flwr.common.constant", "SUPERLINK_NODE_ID"),
    ("flwr.common.constant", "ErrorCode"),
    ("flwr.common.constant", "SType"),
    ("flwr.common.serde", "recorddict_from_proto"),
    ("flwr.common.serde", "recorddict_to_proto"),
    ("flwr.common.serde_utils", "error_from_proto"),
    ("flwr.common.serde_utils", "error_to_proto"),
    ("flwr.common.serde_utils", "metadata_from_proto"),
    ("flwr.common.serde_utils", "metadata_to_proto"),
    ("flwr.proto.message_pb2", "Message"),
    ("flwr.supercore.object_ref", "load_app"),
    ("flwr.supercore.run", "Run"),
    ("flwr.supercore.task_identity", "TaskIdentity"),
    ("flwr.proto.control_pb2", "StartRunRequest"),
    ("flwr.proto.run_pb2", "Run"),
    ("flwr.proto.transport_pb2", "Scalar"),
)
"""(module, name) of every non-public part of Flower the project uses."""


def flower_version() -> str:
    """The installed Flower's version ("not installed" when it is not)."""
    try:
        return importlib.metadata.version("flwr")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def moved(error: ImportError) -> ImportError:
    """An import error that says which Flower part moved and what is supported."""
    return ImportError(
        f"Flower {flower_version()} no longer has a part this runtime uses ({error}); "
        f"supported: flwr{SUPPORTED_FLOWER} (see flower_runtime/flower_internals.py)")


try:
    from flwr.app.message.message import make_message
    from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode, SType
    from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
    from flwr.common.serde_utils import (
        error_from_proto,
        error_to_proto,
        metadata_from_proto,
        metadata_to_proto,
    )
    from flwr.proto.message_pb2 import Message as ProtoMessage
    from flwr.supercore.object_ref import load_app
    from flwr.supercore.run import Run
    from flwr.supercore.task_identity import TaskIdentity
except ImportError as error:
    raise moved(error) from error

__all__ = [
    "INTERNALS", "SUPERLINK_NODE_ID", "SUPPORTED_FLOWER", "ErrorCode", "ProtoMessage", "Run",
    "SType", "TaskIdentity", "error_from_proto", "error_to_proto", "load_app", "make_message",
    "metadata_from_proto", "metadata_to_proto", "recorddict_from_proto", "recorddict_to_proto",
]
