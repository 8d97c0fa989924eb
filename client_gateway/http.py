"""The client side's only HTTP code: calls to the cloud gateway, from plain threads.

Built on ``http.client`` with one persistent (keep-alive) connection per calling thread: every
caller here is a blocking worker thread (RPC handler threads, the outbox worker, the long-poll
thread), so a private connection per thread needs no event loop, no locking and no hand-off
between threads, and a long poll never holds up a forwarded query. A connection the server
closed while idle is noticed on reuse and the request is sent again once on a fresh one.

Errors come out as the RPC errors the rest of the system uses: an unreachable gateway (refused,
DNS, connect timeout, connection cut) is ``ServiceUnavailable``, a gateway that accepted the
request but did not answer in time is ``RpcTimeout``, and an HTTP error status becomes the
matching ``RpcError`` with the cloud's message.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import ssl
import threading
from email.message import Message
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from microservice_interconnect.errors import (
    RpcError,
    RpcTimeout,
    ServiceUnavailable,
    error_for_status,
)

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 2.0
DOWNLOAD_TIMEOUT_S = 55.0
USER_AGENT = "agata-client-gateway/1"
HEALTH_TIMEOUT_S = 1.0
"""A health probe gives up after this long (the cloud counts as away)."""
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
          ConnectionAbortedError)


class CloudGatewayHttp:
    """Blocking calls to the cloud gateway with the device's token, safe from any thread."""

    def __init__(self, base_url: str, client_token: str, timeout_s: float = 10.0, *,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S,
                 download_timeout_s: float | None = None, ca_file: str = "") -> None:
        parts = urlsplit(base_url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"cloud URL must look like http://host:port, not {base_url!r}")
        if parts.query or parts.fragment:
            raise ValueError(f"cloud URL must not have a query or fragment: {base_url!r}")
        self.base_url = base_url.strip().rstrip("/")
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.download_timeout_s = (max(timeout_s, DOWNLOAD_TIMEOUT_S)
                                   if download_timeout_s is None else download_timeout_s)
        self._https = parts.scheme == "https"
        self._tls = (ssl.create_default_context(cafile=ca_file or None)
                     if self._https else None)
        self._host = parts.hostname
        self._port = parts.port
        self._path = parts.path.rstrip("/")
        self._token = client_token
        self._local = threading.local()
        self._connections: set[http.client.HTTPConnection] = set()
        self._lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"CloudGatewayHttp({self.base_url})"

    # -- the calls ------------------------------------------------------------------------------

    def post_rpc(self, name: str, body: bytes) -> bytes:
        """``POST /<name>`` with a JSON body; the reply's JSON (the RPC's ``return``)."""
        _status, _headers, data = self._call(
            "POST", f"/{quote(name, safe='')}", body=body, read_timeout=self.timeout_s,
            what=name)
        return data

    def download(self, task_id: str, filename: str, credential: str,
                 client_id: str | None = None) -> tuple[bytes, str]:
        """A task file and its ``X-Content-SHA256`` header (``client_id``: whose credential it
        is, for a cloud that cannot tell from the token)."""
        path = f"/download/{quote(task_id, safe='')}/{quote(filename, safe='/')}"
        sent = {"X-Download-Credential": credential}
        if client_id:
            sent["X-Client-Id"] = client_id
        _status, headers, data = self._call(
            "GET", path, headers=sent,
            read_timeout=self.download_timeout_s, what=f"download of {task_id}/{filename}")
        return data, headers.get("X-Content-SHA256", "")

    def task_events(self, after: int, timeout: float, epoch: str = "",
                    client_id: str | None = None) -> dict[str, Any]:
        """Long poll for task events after a cursor of a feed ``epoch``:
        ``{"epoch", "cursor", "reset", "events"}`` (``client_id``: whose tasks, for a cloud
        that cannot tell from the token)."""
        fields: dict[str, Any] = {"after": after, "timeout": f"{timeout:g}", "epoch": epoch}
        if client_id:
            fields["client_id"] = client_id
        query = urlencode(fields)
        _status, _headers, data = self._call(
            "GET", f"/api/client/task_events?{query}", read_timeout=timeout + self.timeout_s,
            what="task events")
        try:
            result = json.loads(data)
            int(result["cursor"])
        except (ValueError, KeyError, TypeError) as exc:
            raise RpcError(f"task events: malformed answer from {self.base_url}: {exc}") from None
        return dict(result)

    def join(self, join_token: str, client_id: str) -> str:
        """Spend a one-time join token for this device's own secret (``POST /api/client/join``)."""
        body = json.dumps({"join_token": join_token, "client_id": client_id}).encode()
        _status, _headers, data = self._call("POST", "/api/client/join", body=body,
                                             read_timeout=self.timeout_s, what="join")
        try:
            secret = json.loads(data)["secret"]
        except (ValueError, KeyError, TypeError) as exc:
            raise RpcError(f"join: malformed answer from {self.base_url}: {exc}") from None
        if not isinstance(secret, str) or not secret:
            raise RpcError(f"join: no secret in the answer from {self.base_url}")
        return secret

    def healthy(self, timeout: float = HEALTH_TIMEOUT_S) -> bool:
        """Whether the cloud gateway answers ``GET /health`` with 200 (its broker connected)
        right now; never raises. A fresh short-lived connection, so it cannot hold up a call."""
        connection = self._connection(timeout)
        try:
            connection.request("GET", f"{self._path}/health",
                               headers={"User-Agent": USER_AGENT})
            response = connection.getresponse()
            response.read()
            return response.status == http.HTTPStatus.OK
        except (OSError, http.client.HTTPException):
            return False
        finally:
            connection.close()

    # -- plumbing -------------------------------------------------------------------------------

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        """A new connection: HTTPS verifying the cloud's certificate (system CAs, or the
        configured bundle), or plain HTTP."""
        if self._tls is not None:
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout,
                                               context=self._tls)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def _new_connection(self) -> http.client.HTTPConnection:
        connection = self._connection(self.connect_timeout_s)
        with self._lock:
            self._connections.add(connection)
        return connection

    def _drop(self, connection: http.client.HTTPConnection) -> None:
        if getattr(self._local, "connection", None) is connection:
            self._local.connection = None
        with self._lock:
            self._connections.discard(connection)
        connection.close()

    def _unreachable(self, exc: BaseException) -> ServiceUnavailable:
        detail = str(exc) or type(exc).__name__
        return ServiceUnavailable(f"cloud gateway unreachable at {self.base_url}: {detail}")

    def _call(self, method: str, path: str, *, body: bytes | None = None,
              headers: dict[str, str] | None = None, read_timeout: float, what: str
              ) -> tuple[int, Message, bytes]:
        """Send one request (again once if a kept-alive connection turns out closed)."""
        sent_headers = {
            "Authorization": f"Bearer {self._token}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
            **(headers or {}),
        }
        if body is not None:
            sent_headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            if self._closed:
                raise ServiceUnavailable(f"{what}: the connection to {self.base_url} is closed")
            connection = getattr(self._local, "connection", None)
            reused = connection is not None
            if connection is None:
                connection = self._local.connection = self._new_connection()
                try:
                    connection.connect()
                except ssl.SSLCertVerificationError as exc:
                    self._drop(connection)
                    raise RpcError(f"{what}: the cloud gateway's certificate at {self.base_url} "
                                   f"is not trusted ({exc.verify_message}); set [client.params] "
                                   "cloud_ca_file to the CA that signed it") from None
                except OSError as exc:
                    self._drop(connection)
                    raise self._unreachable(exc) from None
            if connection.sock is not None:
                connection.sock.settimeout(read_timeout)
            try:
                connection.request(method, self._path + path, body=body, headers=sent_headers)
                response = connection.getresponse()
                data = response.read()
            except TimeoutError:
                self._drop(connection)
                raise RpcTimeout(f"{what}: no answer from the cloud gateway at {self.base_url} "
                                 f"within {read_timeout:.1f} s") from None
            except _STALE as exc:
                self._drop(connection)
                if reused and attempt == 1 and not self._closed:
                    logger.debug("%s: kept-alive connection was closed (%s); reconnecting",
                                 what, exc)
                    continue
                raise self._unreachable(exc) from None
            except (OSError, http.client.HTTPException) as exc:
                self._drop(connection)
                raise self._unreachable(exc) from None
            if response.will_close:
                self._drop(connection)
            if response.status >= 400:
                raise self._error(response.status, data, what)
            return response.status, response.headers, data
        raise AssertionError("unreachable")  # pragma: no cover

    def _error(self, status: int, data: bytes, what: str) -> RpcError:
        """The RPC error an HTTP error answer stands for."""
        try:
            body = json.loads(data)
            message = str(body["exception"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            text = data[:200].decode("utf-8", "replace").strip()
            return error_for_status(
                status, f"{what}: cloud gateway answered HTTP {status}"
                + (f": {text}" if text else ""))
        errors = body.get("errors")
        error_id = body.get("error_id")
        return error_for_status(
            status, message,
            errors=errors if isinstance(errors, list) else None,
            error_id=str(error_id) if error_id else None,
        )

    def close(self) -> None:
        """Cut every connection (a long poll in progress ends with ``ServiceUnavailable``)."""
        self._closed = True
        with self._lock:
            connections = list(self._connections)
            self._connections.clear()
        for connection in connections:
            sock = connection.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError as exc:
                    logger.debug("closing a connection to %s: %s", self.base_url, exc)
