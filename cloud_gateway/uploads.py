"""The gateway's upload routes: ``POST /upload_files`` (AGATA's: multipart ``task_id``, then
``files``) and ``POST /api/tasks/{task_id}/files``; each file, or one archive, goes to the cloud
task manager once the whole form was read and checked."""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import EofStream

from agata_contracts.common import check_task_path
from agata_contracts.tasks import UPLOAD_TASK_ARCHIVE, UPLOAD_TASK_FILE
from cloud_gateway.app import AUTH, JSON, OPERATOR_ONLY, SETTINGS, call_rpc
from microservice_interconnect import BadRequest, wire


@dataclass
class _FormFile:
    """One file part of an upload form, read and checked."""

    field: str
    name: str
    content: bytes


async def _read_form(request: web.Request, task_id: str | None
                     ) -> tuple[str, list[_FormFile]]:
    """The whole upload form, read and checked before anything is stored: the task id, part
    names, file paths, per-file and total sizes, and the file count; a malformed body is a 400.
    """
    settings = request.app[SETTINGS]
    section = settings.cloud_task_manager
    file_limit = int(section.max_file_mb * 1024 * 1024)
    archive_limit = int(section.max_task_mb * 1024 * 1024)
    body_limit = int(settings.server_gateway.max_body_mb * 1024 * 1024)
    files: list[_FormFile] = []
    total = 0
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise BadRequest("nested multipart is not supported")
            if part.name == "task_id" and part.filename is None:
                task_id = (await part.read(decode=False)).decode("utf-8").strip()
                continue
            if part.name not in ("files", "archive") or part.filename is None:
                raise BadRequest(f"unexpected form field {part.name!r}; send task_id, then "
                                 "files or an archive")
            if part.name == "files":
                try:
                    check_task_path(part.filename)
                except ValueError as exc:
                    raise BadRequest(f"file name {part.filename!r}: {exc}") from None
                if len(files) >= section.max_files_per_task:
                    raise BadRequest(f"more than {section.max_files_per_task} files in one "
                                     "upload (max_files_per_task)")
            limit = archive_limit if part.name == "archive" else file_limit
            content = await _read_limited(part, min(limit, body_limit - total))
            total += len(content)
            files.append(_FormFile(part.name, part.filename, content))
    except (ValueError, UnicodeDecodeError, AssertionError, HttpProcessingError,
            asyncio.IncompleteReadError, EofStream) as exc:
        raise BadRequest(f"malformed multipart body: {exc or type(exc).__name__}") from None
    if not task_id:
        raise BadRequest("the form has no task_id (send it before the files)")
    if not files:
        raise BadRequest("no files in the form (field names: files, archive)")
    if sum(f.field == "archive" for f in files) > 1:
        raise BadRequest("send one archive at a time")
    return task_id, files


async def _upload(request: web.Request, task_id: str | None) -> web.Response:
    """Read a multipart form: ``task_id`` unless given, then one or more ``files`` (each named
    by its path in the task) and/or one ``archive`` (a zip or .fab replacing the task's files).
    Nothing is stored until the whole form has been read and checked.
    """
    await request.app[AUTH].authenticate(request, OPERATOR_ONLY)
    if not request.content_type.startswith("multipart/"):
        raise BadRequest("send multipart/form-data with task_id and files")
    task_id, files = await _read_form(request, task_id)
    stored: list[Any] = []
    skipped: list[str] = []
    for item in files:
        archive = item.field == "archive"
        payload = {"task_id": task_id, "filename": item.name,
                   "content": base64.b64encode(item.content).decode()}
        spec = UPLOAD_TASK_ARCHIVE if archive else UPLOAD_TASK_FILE
        result = await call_rpc(request, spec, payload)
        if archive:
            stored.extend(result["files"])
            skipped.extend(result["skipped"])
        else:
            stored.append(result)
    return web.Response(
        body=wire.dumps({"task_id": task_id, "files": stored, "skipped": skipped}),
        content_type=JSON)


async def _read_limited(part: BodyPartReader, limit: int) -> bytes:
    chunks = []
    size = 0
    while chunk := await part.read_chunk():
        size += len(chunk)
        if size > limit:
            raise BadRequest(f"file {part.filename!r} is over the size limit of {limit} bytes "
                             "(or the form over max_body_mb)")
        chunks.append(chunk)
    return b"".join(chunks)


async def upload_files(request: web.Request) -> web.Response:
    """``POST /upload_files``: AGATA's upload route."""
    return await _upload(request, None)


async def upload_task_files(request: web.Request) -> web.Response:
    """``POST /api/tasks/{task_id}/files``."""
    return await _upload(request, request.match_info["task_id"])
