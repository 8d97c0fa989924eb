"""Delivering the outbox's reports to the cloud: which failures are worth another try."""

from __future__ import annotations

import logging

from agata_contracts.results import UPLOAD_RESULT
from agata_contracts.tasks import REPORT_CLIENT_TASK
from agata_contracts.users import UPDATE_USER_INFO
from client_gateway.http import CloudGatewayHttp
from microservice_interconnect import RpcError, RpcTimeout, ServiceUnavailable, Unauthorized
from microservice_interconnect.outbox_worker import DeliveryResult

logger = logging.getLogger(__name__)

FORWARDED_REPORTS = frozenset({UPDATE_USER_INFO.name, REPORT_CLIENT_TASK.name,
                               UPLOAD_RESULT.name})
"""The RPCs the outbox may carry to the cloud."""

RETRIED_STATUSES = frozenset({408, 425, 429})
"""Client errors that say "later", not "never"."""


class ReportForwarder:
    """The outbox worker's ``deliver``: POST the report to the cloud, classify the outcome."""

    def __init__(self, http: CloudGatewayHttp) -> None:
        self.http = http
        self._token_refused = False

    def __call__(self, rpc_name: str, body: bytes) -> DeliveryResult:
        """Deliver one report (runs on the outbox worker's thread)."""
        if rpc_name not in FORWARDED_REPORTS:
            return DeliveryResult.rejected(f"{rpc_name} is not a report the cloud takes")
        try:
            self.http.post_rpc(rpc_name, body)
        except (ServiceUnavailable, RpcTimeout) as exc:
            return DeliveryResult.retry(exc.message)
        except Unauthorized as exc:
            # the token is wrong, not the report: keep every report until it is fixed
            if not self._token_refused:
                logger.error("the cloud gateway refuses the client token (%s); reports are "
                             "kept until [client.params] client_token is fixed", exc.message)
            self._token_refused = True
            return DeliveryResult.retry(f"client token refused: {exc.message}")
        except RpcError as exc:
            reason = f"HTTP {exc.status_code}: {exc.message}"
            if exc.status_code >= 500 or exc.status_code in RETRIED_STATUSES:
                return DeliveryResult.retry(reason)
            return DeliveryResult.rejected(reason)
        self._token_refused = False
        return DeliveryResult.DELIVERED
