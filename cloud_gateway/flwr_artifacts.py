"""Download links for ``flwr pull``: Flower's PullArtifacts answers with a URL, so the
gateway hands out a short-lived signed link to the run's results archive.

A link names one run's task, its run number and when it expires, signed with HMAC-SHA256
under a key derived from the operator token (``[server.gateway] api_token``, which every
gateway of the cloud shares): any gateway serves it, none keeps it, nobody forges or changes
it, and it opens that run's ``results.zip`` and nothing else, without the operator token, for
``LINK_TTL_S`` seconds. Without an operator token no link is made (fail closed).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time

from aiohttp import web

from cloud_gateway.app import SETTINGS
from cloud_gateway.flwr_runs import run_id_of
from cloud_gateway.result_files import archive_response
from microservice_interconnect import NotFound

LINK_TTL_S = 900
_LINK = re.compile(r"^(flwr-[0-9]{1,16})\.([0-9]{1,10})\.([0-9]{1,12})\.([0-9a-f]{64})$")


class LinkKeyMissing(Exception):
    """No operator token is configured, so no link can be signed."""


def link_key(api_token: str) -> bytes:
    """The links' signing key, derived from the operator token (never the token itself)."""
    if not api_token:
        raise LinkKeyMissing("[server.gateway] api_token is not set")
    return hmac.new(api_token.encode(), b"agata flwr artifact links", hashlib.sha256).digest()


def _mac(key: bytes, body: str) -> str:
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


def sign_link(key: bytes, task_id: str, run: int, now: float | None = None) -> str:
    """A link token for the task's run, valid ``LINK_TTL_S`` seconds from ``now``."""
    expires = int((time.time() if now is None else now) + LINK_TTL_S)
    body = f"{task_id}.{run}.{expires}"
    return f"{body}.{_mac(key, body)}"


def open_link(key: bytes, token: str, now: float | None = None) -> tuple[str, int] | None:
    """The task and run a link token opens, None when it is malformed, forged or expired."""
    match = _LINK.match(token)
    if match is None or run_id_of(match.group(1)) is None:
        return None
    task_id, run, expires, mac = match.groups()
    if not hmac.compare_digest(mac, _mac(key, f"{task_id}.{run}.{expires}")):
        return None
    if int(expires) <= (time.time() if now is None else now):
        return None
    return task_id, int(run)


async def download_artifacts(request: web.Request) -> web.Response:
    """``GET /api/flwr/artifacts/{token}``: the results archive a link opens."""
    try:
        key = link_key(request.app[SETTINGS].server_gateway.api_token)
    except LinkKeyMissing:
        key = b""
    found = open_link(key, request.match_info["token"][:200]) if key else None
    if found is None:
        raise NotFound("this download link is unknown or expired; run flwr pull again")
    return await archive_response(request, *found)
