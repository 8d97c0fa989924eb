"""Who is calling, decided once, at the edge.

* Operators: ``Authorization: Bearer <api_token>``.
* Devices: ``Authorization: Bearer <client_id>:<secret>``, the secret a device got when it
  joined (checked by the user manager, then remembered for ``cache_s`` seconds, or until the
  device changes: a revoked device is refused at once).
* The shared ``client_token`` of earlier versions, only while ``shared_client_token`` allows
  it: it proves no device in particular, so it may speak only for devices that have no
  credential of their own; any enrolled device (revoked ones too) it names is a 403.

Tokens are compared in constant time; an unset token admits nobody (fail closed).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from agata_common.config import GatewaySettings
from agata_contracts.common import CLIENT_ID_PATTERN
from agata_contracts.rpc import Audience
from microservice_interconnect import Forbidden

_CLIENT_ID = re.compile(CLIENT_ID_PATTERN)
_SECRET = re.compile(r"^[A-Za-z0-9_-]{32,128}$")
MAX_CACHED_DEVICES = 100_000

VerifyDevice = Callable[[str, str], Awaitable[bool]]
"""Whether a device's presented secret is its own (and the device not revoked)."""
IsEnrolled = Callable[[str], Awaitable[bool]]
"""Whether a device id belongs to an enrolled device (one with a credential, even revoked)."""


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: its audience and, for a device, which one."""

    audience: Audience
    client_id: str | None = None
    shared: bool = False
    """The shared client token: a client proving no device in particular."""


def bearer_token(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header, if any."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def device_token(token: str) -> tuple[str, str] | None:
    """``(client_id, secret)`` of a device token, None when it is not one."""
    client_id, separator, secret = token.rpartition(":")
    if not separator or not _CLIENT_ID.match(client_id) or not _SECRET.match(secret):
        return None
    return client_id, secret


def _same(presented: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(presented.encode(), expected.encode())


def unauthorized(allowed: frozenset[Audience]) -> web.HTTPUnauthorized:
    """The 401 naming what the route takes."""
    who = " or ".join(sorted(a.value for a in allowed if a is not Audience.INTERNAL))
    return web.HTTPUnauthorized(
        text=f'{{"exception":"authentication required: send Authorization: Bearer '
        f'<{who} token>"}}',
        content_type="application/json",
        headers={"WWW-Authenticate": 'Bearer realm="agata"'},
    )


class Authenticator:
    """Authenticates requests; ``verify`` (set once the gateway's RPC client exists) checks a
    device secret it has not seen lately."""

    def __init__(self, gateway: GatewaySettings, verify: VerifyDevice | None = None,
                 cache_s: float = 60.0, is_enrolled: IsEnrolled | None = None) -> None:
        self._api_token = gateway.api_token
        self._client_token = gateway.client_token if gateway.shared_client_token else ""
        self.verify = verify
        self.is_enrolled = is_enrolled
        self.cache_s = cache_s
        self._verified: dict[str, tuple[str, float]] = {}
        self._enrolled: set[str] = set()
        self._forgotten = 0

    async def refuse_enrolled(self, client_id: str) -> None:
        """A 403 when ``client_id`` is an enrolled device: the shared token never acts for one
        (fails closed: without a way to ask, every device counts as enrolled)."""
        if client_id not in self._enrolled:
            if self.is_enrolled is None:
                raise Forbidden(f"cannot tell yet whether device {client_id!r} is enrolled: "
                                "the shared client token does not speak for it")
            if not await self.is_enrolled(client_id):
                return
            if len(self._enrolled) >= MAX_CACHED_DEVICES:
                self._enrolled.clear()
            self._enrolled.add(client_id)
        raise Forbidden(f"device {client_id!r} is enrolled: only its own credential speaks for "
                        "it, not the shared client token")

    def forget(self, client_id: str) -> None:
        """Check the device's secret again at its next request (it changed or was revoked)."""
        self._forgotten += 1
        self._verified.pop(client_id, None)

    async def _device(self, client_id: str, secret: str) -> bool:
        digest = hashlib.sha256(secret.encode()).hexdigest()
        known = self._verified.get(client_id)
        if (known is not None and hmac.compare_digest(known[0], digest)
                and known[1] > time.monotonic()):
            return True
        forgotten = self._forgotten
        if self.verify is None or not await self.verify(client_id, secret):
            return False
        if forgotten != self._forgotten:
            return True  # a device changed while we asked: this answer is not remembered
        if len(self._verified) >= MAX_CACHED_DEVICES:
            self._verified.clear()
        self._verified[client_id] = (digest, time.monotonic() + self.cache_s)
        return True

    async def caller(self, request: web.Request) -> Caller | None:
        """Who the request's token proves, or None."""
        token = bearer_token(request)
        if token is None:
            return None
        if _same(token, self._api_token):
            return Caller(Audience.OPERATOR)
        device = device_token(token)
        if device is not None and await self._device(*device):
            return Caller(Audience.CLIENT, device[0])
        if _same(token, self._client_token):
            return Caller(Audience.CLIENT, shared=True)
        return None

    async def authenticate(self, request: web.Request,
                           allowed: frozenset[Audience]) -> Caller:
        """The caller if its audience is allowed; otherwise a 401."""
        caller = await self.caller(request)
        if caller is None or caller.audience not in allowed:
            raise unauthorized(allowed)
        return caller
