"""Flower's Control API on the wire: protobuf messages over HTTP, as Flower 1.41's CLI speaks
it (``POST /v1/control/<method>``, ``application/protobuf`` both ways, a stream as 4-byte
big-endian length-prefixed frames, errors as JSON ``{"code", "detail"}``).

The CLI sends its Flower version in ``flwr-package-version``; this gateway speaks Flower
1.41's messages, so another major.minor is refused with Flower's own version error (the CLI
exits saying so). The error codes are the numbers of Flower's ``ApiErrorCode``.
"""

from __future__ import annotations

import json
from typing import TypeVar

from aiohttp import web
from google.protobuf.message import DecodeError, Message
from packaging.version import InvalidVersion, Version

PROTOBUF = "application/protobuf"
PROTOBUF_STREAM = "application/flower-protobuf-stream"
SUPPORTED_FLOWER = (1, 41)
"""The Flower release (major, minor) whose CLI this gateway serves."""
VERSION_HEADER = "flwr-package-version"

NOT_SERVED = 1
"""Flower's code for "SuperLink does not support federation management"."""
NO_PERMISSIONS = 9
FAILED_TO_CREATE_RUN = 14
INVALID_RUN_CONFIG = 15
RUN_ID_NOT_FOUND = 16
RUN_ALREADY_FINISHED = 18
PULL_UNFINISHED_RUN = 21
INVALID_APP_SPEC = 33
ACCOUNT_AUTHENTICATION_FAILED = 36
RUNTIME_VERSION_INCOMPATIBLE = 1001
UNSUPPORTED_CONTENT_TYPE = 1002
INVALID_PROTOBUF_PAYLOAD = 1003
UNAVAILABLE = 3005

M = TypeVar("M", bound=Message)


class ControlError(Exception):
    """A Control API call refused: the HTTP status, Flower's error code and what was wrong."""

    def __init__(self, status: int, code: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


def error_response(error: ControlError) -> web.Response:
    """The error as Flower's CLI reads it; a 401 names the Bearer scheme (the CLI then
    refreshes its tokens once)."""
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else {}
    return web.Response(status=error.status, headers=headers, content_type="application/json",
                        text=json.dumps({"code": error.code, "detail": error.detail}))


def unauthenticated(detail: str) -> ControlError:
    """A 401: the call carries no valid token."""
    return ControlError(401, ACCOUNT_AUTHENTICATION_FAILED, detail)


def check_version(request: web.Request) -> None:
    """Refuse a Flower CLI of another major.minor than the one this gateway speaks."""
    sent = request.headers.get(VERSION_HEADER)
    if sent is None:
        return
    try:
        version = Version(sent)
    except InvalidVersion:
        raise ControlError(412, RUNTIME_VERSION_INCOMPATIBLE,
                           f"Flower version {sent[:40]!r} cannot be read") from None
    if (version.major, version.minor) != SUPPORTED_FLOWER:
        wanted = ".".join(map(str, SUPPORTED_FLOWER))
        raise ControlError(412, RUNTIME_VERSION_INCOMPATIBLE,
                           f"this cloud serves Flower {wanted}.x's CLI; yours is {version} "
                           f"(install flwr=={wanted}.*)")


async def read_message(request: web.Request, kind: type[M]) -> M:
    """The request's protobuf message of type ``kind``; 415 or 400 when it is not one."""
    if request.content_type != PROTOBUF:
        raise ControlError(415, UNSUPPORTED_CONTENT_TYPE,
                           f"send {PROTOBUF}, not {request.content_type!r}")
    message: M = kind()
    try:
        message.ParseFromString(await request.read())
    except DecodeError:
        raise ControlError(400, INVALID_PROTOBUF_PAYLOAD,
                           f"the body is not a {kind.DESCRIPTOR.name}") from None
    return message


def message_response(message: Message) -> web.Response:
    """A unary answer."""
    return web.Response(body=message.SerializeToString(), content_type=PROTOBUF)


def frame(message: Message) -> bytes:
    """One message of a stream: its length (4 bytes, big-endian), then its bytes."""
    payload: bytes = message.SerializeToString()
    return len(payload).to_bytes(4, "big") + payload
