"""Every request body is read within a bounded time, or the request ends with a 408.

A timer starts with each request whose body has not fully arrived; if the body is still
incomplete when it fires, the body stream fails, so whatever the handler is reading it with
(JSON, multipart) stops at once, and the caller gets a JSON 408 on a connection that is then
closed. A request whose body has arrived (a GET, the long poll) is not touched: its own waits
keep their own bounds.
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import web
from aiohttp.typedefs import Middleware

from cloud_gateway.app import Handler


class BodyTooSlow(Exception):
    """The request body did not arrive within the gateway's ``body_timeout_s``."""


def body_deadline(timeout_s: float) -> Middleware:
    """A middleware that bounds the time a request's body may take to arrive."""

    @web.middleware
    async def bounded(request: web.Request, handler: Handler) -> web.StreamResponse:
        content = request.content
        if content.is_eof():
            return await handler(request)
        expired = BodyTooSlow()

        def expire() -> None:
            if not content.is_eof():
                content.set_exception(expired)

        timer = asyncio.get_running_loop().call_later(timeout_s, expire)
        try:
            response = await handler(request)
        except BodyTooSlow:
            response = web.Response(
                status=408, content_type="application/json",
                text=json.dumps({"exception": "the request body did not arrive within "
                                 f"{timeout_s:g} s (body_timeout_s)"}))
        finally:
            timer.cancel()
        if content.exception() is expired:
            response.force_close()
        return response

    return bounded
