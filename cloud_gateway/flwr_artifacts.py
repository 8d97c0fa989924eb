"""Download links for ``flwr pull``: Flower's PullArtifacts answers with a URL, so the
gateway hands out a short-lived link to the run's results archive.

A link is a random token in the path (kept only as its SHA-256, valid ``ttl_s`` seconds,
naming one task's one run), so the CLI's user can fetch it with any HTTP client without the
operator token; it opens that run's ``results.zip`` and nothing else.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from cloud_gateway.flwr_accounts import digest
from cloud_gateway.result_files import archive_response
from microservice_interconnect import NotFound

ARTIFACTS_ROUTE = "/api/flwr/artifacts/{token}"
MAX_LINKS = 4096


@dataclass
class ArtifactLinks:
    """Links to runs' results archives (thread-safe; ``clock`` in seconds, for tests)."""

    ttl_s: float = 900.0
    clock: Callable[[], float] = time.time
    _links: dict[str, tuple[str, int, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def issue(self, task_id: str, run: int) -> str:
        """A new link token for the task's run."""
        token = secrets.token_urlsafe(32)
        now = self.clock()
        with self._lock:
            self._links = {k: v for k, v in self._links.items() if v[2] > now}
            if len(self._links) >= MAX_LINKS:
                del self._links[min(self._links, key=lambda k: self._links[k][2])]
            self._links[digest(token)] = (task_id, run, now + self.ttl_s)
        return token

    def resolve(self, token: str) -> tuple[str, int] | None:
        """The task and run a token opens, None when it is unknown or expired."""
        with self._lock:
            found = self._links.get(digest(token))
        if found is None or found[2] <= self.clock():
            return None
        return found[0], found[1]


ARTIFACT_LINKS = web.AppKey("flwr_artifact_links", ArtifactLinks)


async def download_artifacts(request: web.Request) -> web.Response:
    """``GET /api/flwr/artifacts/{token}``: the results archive a link opens."""
    found = request.app[ARTIFACT_LINKS].resolve(request.match_info["token"][:100])
    if found is None:
        raise NotFound("this download link is unknown or expired; run flwr pull again")
    return await archive_response(request, *found)
