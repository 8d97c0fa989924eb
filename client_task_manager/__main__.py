"""``python -m client_task_manager``: run compatible tasks on this device until SIGINT/SIGTERM."""

from __future__ import annotations

import sys
from collections.abc import Callable

from pydantic import BaseModel

from agata_common.config import ConfigError, settings
from agata_common.process import run_service
from agata_contracts.queues import outbox_queue, task_events_exchange
from agata_contracts.tasks import (
    CLIENT_REQUESTING_TASK,
    DOWNLOAD_TASK_FILE,
    ClientRequestingTaskRequest,
    DownloadTaskFileRequest,
    TaskEvent,
    TaskFileContent,
    TaskOffer,
)
from client_task_manager.identity import ClientIdentity
from client_task_manager.manager import ClientTaskManager
from client_task_manager.scheduler import Policy, TaskBook
from microservice_interconnect.broadcast import Subscriber
from microservice_interconnect.outbox import Outbox
from microservice_interconnect.runtime import ServiceRuntime
from microservice_interconnect.spec import RpcSpec


def start() -> Callable[[], None]:
    """Connect to the client broker and start the loop; return the stop function."""
    config = settings()
    params = config.client_params
    try:
        policy = Policy(params.policy)
    except ValueError:
        raise ConfigError(
            f"[client.params] policy must be one of {', '.join(p.value for p in Policy)}, "
            f"not {params.policy!r} (env AGATA_CLIENT_PARAMS_POLICY)"
        ) from None
    data_dir = config.storage.resolved_data_dir()
    identity = ClientIdentity(params, data_dir / "client_info")
    runtime = ServiceRuntime("client_task_manager", config, config.client_broker)
    outbox = Outbox(runtime.link, outbox_queue(config.client_broker.queue_prefix))

    def query_offers(client_id: str) -> list[TaskOffer]:
        request = ClientRequestingTaskRequest(client_id=client_id)
        return runtime.client.call(CLIENT_REQUESTING_TASK, request).tasks

    def fetch_file(request: DownloadTaskFileRequest) -> TaskFileContent:
        return runtime.client.call(DOWNLOAD_TASK_FILE, request, timeout=60)

    def send_report(spec: RpcSpec[BaseModel, BaseModel], report: BaseModel) -> None:
        outbox.send(spec, report)

    manager = ClientTaskManager(
        identity,
        TaskBook(policy, params.max_parallel_tasks, params.task_retry_s,
                 params.task_retry_max_s),
        query_offers=query_offers,
        fetch_file=fetch_file,
        send_report=send_report,
        work_dir=data_dir / "client_tasks",
        request_interval_s=params.request_interval,
    )
    Subscriber(runtime.link, task_events_exchange(config.client_broker.queue_prefix), TaskEvent,
               manager.on_task_event)
    runtime.start()
    manager.start()

    def stop() -> None:
        manager.stop()
        runtime.stop()

    return stop


if __name__ == "__main__":
    sys.exit(run_service("client_task_manager", start))
