"""Operators' routes for a run's result files: one file, or all of them as one zip archive.

Result files come from task code, so they are never served as something a browser renders on
the gateway's origin: a PNG or JPEG image and plain text keep their type, everything else is
``application/octet-stream``, and every file is an attachment (``nosniff`` is always set).
"""

from __future__ import annotations

import base64
from pathlib import PurePosixPath
from typing import Any

from aiohttp import web

from agata_contracts.results import READ_RESULT, RESULTS_ARCHIVE
from cloud_gateway.app import AUTH, OPERATOR_ONLY, call_rpc
from microservice_interconnect import BadRequest

SAFE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
              ".txt": "text/plain; charset=utf-8", ".csv": "text/plain; charset=utf-8",
              ".log": "text/plain; charset=utf-8"}
"""The result types served as themselves; anything else is served as bytes."""


def _run(request: web.Request) -> int:
    text = request.match_info["run"]
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        raise BadRequest(f"run must be a run number (0: the latest), not {text!r}")
    return int(text)


def _attachment(body: bytes, name: str, content_type: str,
                extra: dict[str, str] | None = None) -> web.Response:
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "result"
    return web.Response(body=body, headers={
        "Content-Type": content_type,
        "Content-Disposition": f'attachment; filename="{safe}"',
        **(extra or {}),
    })


async def result_file(request: web.Request) -> web.Response:
    """``GET /api/tasks/{task_id}/runs/{run}/results/{path}``: one result file."""
    await request.app[AUTH].authenticate(request, OPERATOR_ONLY)
    payload: dict[str, Any] = {"task_id": request.match_info["task_id"], "run": _run(request),
                               "path": request.match_info["path"]}
    result = await call_rpc(request, READ_RESULT, payload)
    name = PurePosixPath(result["path"]).name
    content_type = SAFE_TYPES.get(PurePosixPath(name).suffix.lower(), "application/octet-stream")
    return _attachment(base64.b64decode(result["content"]), name, content_type,
                       {"X-Content-SHA256": result["sha256"]})


async def results_archive(request: web.Request) -> web.Response:
    """``GET /api/tasks/{task_id}/runs/{run}/results.zip``: every result file of the run."""
    await request.app[AUTH].authenticate(request, OPERATOR_ONLY)
    return await archive_response(request, request.match_info["task_id"], _run(request))


async def archive_response(request: web.Request, task_id: str, run: int) -> web.Response:
    """Every result file of a task's run (0: the latest) as one zip attachment."""
    payload = {"task_id": task_id, "run": run}
    result = await call_rpc(request, RESULTS_ARCHIVE, payload, timeout=120)
    return _attachment(base64.b64decode(result["content"]), result["name"], "application/zip",
                       {"X-Result-Files": str(result["files"])})
