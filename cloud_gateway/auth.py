"""Who is calling: operators carry the API token, clients the client token (Bearer)."""

from __future__ import annotations

import hmac

from aiohttp import web

from agata_common.config import GatewaySettings
from microservice_interconnect import Audience


def bearer_token(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header, if any."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _same(presented: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(presented.encode(), expected.encode())


class Authenticator:
    """Checks tokens in constant time; an unset token admits nobody (fail closed)."""

    def __init__(self, gateway: GatewaySettings) -> None:
        self._api_token = gateway.api_token
        self._client_token = gateway.client_token

    def audience_of(self, request: web.Request) -> Audience | None:
        """The audience the request's token proves, or None."""
        token = bearer_token(request)
        if token is None:
            return None
        if _same(token, self._api_token):
            return Audience.OPERATOR
        if _same(token, self._client_token):
            return Audience.CLIENT
        return None

    def require(self, request: web.Request, allowed: frozenset[Audience]) -> Audience:
        """The caller's audience if it is allowed; otherwise raise a 401."""
        audience = self.audience_of(request)
        if audience is None or audience not in allowed:
            who = " or ".join(sorted(a.value for a in allowed if a is not Audience.INTERNAL))
            raise web.HTTPUnauthorized(
                text=f'{{"exception":"authentication required: send Authorization: Bearer '
                f'<{who} token>"}}',
                content_type="application/json",
                headers={"WWW-Authenticate": 'Bearer realm="agata"'},
            )
        return audience
