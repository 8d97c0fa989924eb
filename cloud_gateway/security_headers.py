"""Headers every gateway response carries: a content security policy (strict for the pages,
nothing at all for the API's JSON), no framing, no type sniffing, no referrer, no version."""

from __future__ import annotations

from aiohttp import web

PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
"""The web interface's pages: everything from the gateway itself, nothing inline."""
API_POLICY = "default-src 'none'; frame-ancestors 'none'"
"""Everything else is data, never a document to render."""
COMMON = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: set the headers, drop the server banner."""
    response.headers.update(COMMON)
    page = request.path == "/ui" or request.path.startswith("/ui/")
    response.headers["Content-Security-Policy"] = PAGE_POLICY if page else API_POLICY
    response.headers["Server"] = "agata"
