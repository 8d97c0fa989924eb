"""The client gateway's RPCs: the cloud's client-facing specs, served on the client broker.

Each call is forwarded to the cloud gateway over HTTP and answered with the cloud's reply (or
its error, status and message kept), so the client task manager calls the same specs on its own
broker as it would on the cloud's.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from agata_contracts.tasks import (
    CLIENT_REQUESTING_TASK,
    DOWNLOAD_TASK_FILE,
    REPORT_CLIENT_TASK,
    ClientRequestingTaskRequest,
    ClientTaskReport,
    DownloadTaskFileRequest,
    ReportClientTaskRequest,
    TaskFileContent,
    TaskOffers,
)
from agata_contracts.users import UPDATE_USER_INFO, UpdateUserInfoRequest, UserInfo
from client_gateway.http import CloudGatewayHttp
from microservice_interconnect import RpcError, Unauthorized
from microservice_interconnect.service import rpc
from microservice_interconnect.spec import RpcSpec

logger = logging.getLogger(__name__)

ResponseT = TypeVar("ResponseT", bound=BaseModel)


class ClientGateway:
    """Forwards the client's RPCs to the cloud gateway."""

    def __init__(self, http: CloudGatewayHttp) -> None:
        self.http = http

    def _forward(self, spec: RpcSpec[Any, ResponseT], request: BaseModel) -> ResponseT:
        reply = self.http.post_rpc(spec.name, request.model_dump_json().encode())
        try:
            return spec.response.model_validate_json(reply)
        except ValidationError as exc:
            raise RpcError(f"{spec.name}: the cloud's reply does not match the contract: "
                           f"{exc}") from None

    @rpc(CLIENT_REQUESTING_TASK)
    def client_requesting_task(self, request: ClientRequestingTaskRequest) -> TaskOffers:
        """Which running tasks this client may join (fails fast when the cloud is away)."""
        return self._forward(CLIENT_REQUESTING_TASK, request)

    @rpc(UPDATE_USER_INFO)
    def update_user_info(self, request: UpdateUserInfoRequest) -> UserInfo:
        """Register the client or update its stats, synchronously."""
        return self._forward(UPDATE_USER_INFO, request)

    @rpc(REPORT_CLIENT_TASK)
    def report_client_task(self, request: ReportClientTaskRequest) -> ClientTaskReport:
        """Tell the cloud how a task went here, synchronously."""
        return self._forward(REPORT_CLIENT_TASK, request)

    @rpc(DOWNLOAD_TASK_FILE)
    def download_task_file(self, request: DownloadTaskFileRequest) -> TaskFileContent:
        """A task file, fetched with the task's download credential.

        ``sha256`` is what the cloud announces (``X-Content-SHA256``); the client task manager
        checks the bytes against the sha256 of the task's offer before anything runs.
        """
        if not request.credential:
            raise Unauthorized(f"send the download credential of task {request.task_id!r} "
                               "(from its offer)")
        content, sha256 = self.http.download(request.task_id, request.filename,
                                             request.credential, request.client_id)
        actual = hashlib.sha256(content).hexdigest()
        return TaskFileContent(name=request.filename, size=len(content), sha256=sha256 or actual,
                               content=base64.b64encode(content))
