"""The gateway's HTTP API for the command line: requests, and errors mapped to exit codes."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Any

# Exit codes scripts can rely on (also listed in ``agata --help``).
EXIT_OK = 0
EXIT_TASK_FAILED = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_NOT_FOUND = 4
EXIT_INVALID = 5
EXIT_UNAVAILABLE = 6
EXIT_SERVER_ERROR = 7
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\
exit codes:
  0    success
  1    the followed task failed or was stopped
  2    usage error (bad option, bad name=value, missing local file)
  3    not authenticated (no token, or the gateway refused it)
  4    not found (unknown task or client)
  5    invalid input or conflict (HTTP 400/409/413); field errors are listed
  6    gateway unreachable, service unavailable or timed out (HTTP 502/503/504,
       network error, or tasks follow --timeout reached): try again later
  7    unexpected server error (HTTP 500; the error id points at the service log)
  130  interrupted (Ctrl-C)"""


class CliError(Exception):
    """A problem to report on stderr (one line plus optional detail lines) with an exit code."""

    def __init__(self, message: str, exit_code: int, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.details = details or []


class ApiError(CliError):
    """The gateway answered with an error status."""

    def __init__(self, status: int, message: str, exit_code: int,
                 details: list[str] | None = None) -> None:
        super().__init__(message, exit_code, details)
        self.status = status


def _field_lines(errors: Any) -> list[str]:
    lines = []
    if isinstance(errors, list):
        for error in errors:
            if isinstance(error, Mapping):
                message = str(error.get("message", "")).removeprefix("Value error, ")
                lines.append(f"{error.get('field') or 'body'}: {message}")
    return lines


def error_from_response(status: int, body: Any, token_source: str) -> ApiError:
    """An error answer of the gateway as a CLI error with the documented exit code."""
    if isinstance(body, Mapping):
        text = str(body.get("exception") or f"HTTP {status}")
        fields = _field_lines(body.get("errors"))
        error_id = body.get("error_id")
    else:
        text = f"HTTP {status}: {str(body).strip()[:200] or 'no details'}"
        fields, error_id = [], None
    if status in (401, 403):
        return ApiError(status, f"not authenticated: the gateway refused the API token "
                        f"from the {token_source} ({text})", EXIT_AUTH)
    if status == 404:
        hint = " (is the URL the AGATA cloud gateway?)" if text == "no such route" else ""
        return ApiError(status, f"not found: {text}{hint}", EXIT_NOT_FOUND)
    if status in (400, 409, 413, 422):
        kind = {409: "conflict", 413: "too large"}.get(status, "invalid input")
        if fields:
            return ApiError(status, f"{kind}:", EXIT_INVALID, fields)
        return ApiError(status, f"{kind}: {text}", EXIT_INVALID)
    if status in (502, 503, 504):
        what = "timed out" if status == 504 else "unavailable"
        return ApiError(status, f"service {what} (HTTP {status}): {text}", EXIT_UNAVAILABLE)
    suffix = f"; look for error {error_id} in the service logs" if error_id else ""
    return ApiError(status, f"the server failed (HTTP {status}): {text}{suffix}",
                    EXIT_SERVER_ERROR)


@dataclass
class Gateway:
    """An operator's session with the cloud gateway (``Authorization: Bearer <token>``)."""

    url: str
    token: str | None
    token_source: str = "environment variable AGATA_API_TOKEN"  # noqa: S105 (a variable's name)
    timeout_s: float = 30.0
    ca_file: str = ""
    """A PEM bundle to verify an https gateway with (default: the system's CAs)."""

    def _request(self, method: str, path: str, *, query: Mapping[str, Any] | None = None,
                 data: bytes | None = None, content_type: str | None = None,
                 auth: bool = True, timeout_s: float | None = None) -> Any:
        """Send one request; return the parsed JSON body or raise ``CliError``."""
        raw = self._send(method, path, query=query, data=data, content_type=content_type,
                         auth=auth, timeout_s=timeout_s)
        parsed, body = _parse(raw)
        if not parsed:
            raise CliError(f"the answer from {self.url}{path} is not JSON; is it the AGATA "
                           "cloud gateway?", EXIT_SERVER_ERROR)
        return body

    def _send(self, method: str, path: str, *, query: Mapping[str, Any] | None = None,
              data: bytes | None = None, content_type: str | None = None,
              auth: bool = True, timeout_s: float | None = None) -> bytes:
        """Send one request; return the body's bytes or raise ``CliError``."""
        url = self.url.rstrip("/") + path
        if query:
            pairs = {k: v for k, v in query.items() if v is not None}
            if pairs:
                url += "?" + urllib.parse.urlencode(pairs)
        headers = {"Accept": "application/json", "User-Agent": "agata-cli"}
        if auth:
            if not self.token:
                raise CliError(f"no API token: the {self.token_source} is not set; export "
                               "it or use --token-file PATH", EXIT_AUTH)
            headers["Authorization"] = f"Bearer {self.token}"
        if content_type:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310 (URL checked in check_url)
        try:
            context = (ssl.create_default_context(cafile=self.ca_file or None)
                       if url.startswith("https:") else None)
            with urllib.request.urlopen(  # noqa: S310 (http(s) only, see check_url)
                    request, timeout=timeout_s or self.timeout_s, context=context) as response:
                raw: bytes = response.read()
        except urllib.error.HTTPError as error:
            with error:
                raw = error.read()
            parsed, body = _parse(raw)
            raise error_from_response(error.code, body if parsed else raw.decode(
                errors="replace"), self.token_source) from None
        except TimeoutError:
            raise CliError(f"the gateway at {self.url} did not answer within "
                           f"{timeout_s or self.timeout_s:.0f} s", EXIT_UNAVAILABLE) from None
        except urllib.error.URLError as error:
            reason = error.reason
            if isinstance(reason, TimeoutError):
                raise CliError(f"the gateway at {self.url} did not answer within "
                               f"{timeout_s or self.timeout_s:.0f} s", EXIT_UNAVAILABLE) from None
            detail = getattr(reason, "strerror", None) or str(reason)
            raise CliError(f"cannot reach the gateway at {self.url}: {detail} "
                           "(check --url or AGATA_URL)", EXIT_UNAVAILABLE) from None
        except (OSError, HTTPException) as error:
            raise CliError(f"connection to the gateway at {self.url} failed: "
                           f"{error or type(error).__name__}", EXIT_UNAVAILABLE) from None
        return raw

    def download(self, path: str) -> bytes:
        """GET a file's bytes (errors still come as JSON and raise ``CliError``)."""
        return self._send("GET", path, timeout_s=max(self.timeout_s, 120.0))

    def get(self, path: str, query: Mapping[str, Any] | None = None, *,
            auth: bool = True) -> Any:
        """GET a JSON resource."""
        return self._request("GET", path, query=query, auth=auth)

    def post(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """POST a JSON body (an empty body when ``body`` is None)."""
        data = json.dumps(body).encode() if body is not None else b""
        return self._request("POST", path, data=data, content_type="application/json")

    def enroll(self, client_id: str | None = None, ttl_s: int = 3600) -> Any:
        """A one-time join token for a device (``{client_id, join_token, expires_at}``)."""
        body: dict[str, Any] = {"ttl_s": ttl_s}
        if client_id:
            body["client_id"] = client_id
        return self.post("/api/clients/enroll", body)

    def upload(self, task_id: str, path: Path, name: str | None = None) -> Any:
        """Upload one file of a task, stored as ``name`` (a path in the task; default: the
        file's own name)."""
        return self._upload_part(task_id, "files", name or path.name, path.read_bytes())

    def upload_archive(self, task_id: str, name: str, content: bytes) -> Any:
        """Upload a zip or .fab whose files replace the task's."""
        return self._upload_part(task_id, "archive", name, content)

    def _upload_part(self, task_id: str, field: str, name: str, content: bytes) -> Any:
        boundary = uuid.uuid4().hex
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        data = b"".join((
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
            f'filename="{quoted}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode(),
            content,
            f"\r\n--{boundary}--\r\n".encode(),
        ))
        return self._request("POST", f"/api/tasks/{quote(task_id)}/files", data=data,
                             content_type=f"multipart/form-data; boundary={boundary}",
                             timeout_s=max(self.timeout_s, 120.0))


def quote(segment: str) -> str:
    """A path segment, percent-encoded."""
    return urllib.parse.quote(segment, safe="")


def check_url(url: str) -> str:
    """The gateway URL if it is an http(s) URL with a host; otherwise a usage error."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise CliError(f"bad gateway URL {url!r}: give http://host:port", EXIT_USAGE)
    return url.rstrip("/")


def _parse(raw: bytes) -> tuple[bool, Any]:
    """``(True, value)`` for a JSON body (None when empty), ``(False, None)`` otherwise."""
    if not raw.strip():
        return True, None
    try:
        return True, json.loads(raw)
    except ValueError:
        return False, None
