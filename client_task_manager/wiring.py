"""Assembling the client task manager from the configuration, and starting it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agata_common.config import ConfigError, DeviceSettings
from agata_common.runtime import device_runtime
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
from agata_contracts.users import UPDATE_USER_INFO, UpdateUserInfoRequest
from client_task_manager.disk_gate import DiskGate
from client_task_manager.identity import ClientIdentity
from client_task_manager.manager import ClientTaskManager
from client_task_manager.run_retention import DeviceRunRetention
from client_task_manager.scheduler import Policy, TaskBook
from flower_runtime import CLIENT_WORKER_MODULE, flower_installed
from flower_runtime.spare_imports import SpareImports
from microservice_interconnect.broadcast import Subscriber
from microservice_interconnect.outbox import Outbox
from microservice_interconnect.runtime import ServiceRuntime
from microservice_interconnect.spec import RpcSpec
from task_daemon_lib import confinement
from task_daemon_lib.executors import make_executor
from task_daemon_lib.warm import WarmPool

NAME = "client_task_manager"


def policy_of(config: DeviceSettings) -> Policy:
    """The configured policy, or ``ConfigError`` naming the allowed ones."""
    raw = config.client_params.policy
    try:
        return Policy(raw)
    except ValueError:
        raise ConfigError(
            f"[client.params] policy must be one of {', '.join(p.value for p in Policy)}, "
            f"not {raw!r} (env AGATA_CLIENT_PARAMS_POLICY)"
        ) from None


@dataclass
class RunningClientTaskManager:
    """A started client task manager."""

    manager: ClientTaskManager
    runtime: ServiceRuntime

    def stop(self) -> None:
        """Stop the task clients and the loop, then disconnect."""
        self.manager.stop()
        self.runtime.stop()


def start(config: DeviceSettings) -> RunningClientTaskManager:
    """Connect to the client broker and start the loop."""
    params = config.client_params
    policy = policy_of(config)
    data_dir = config.storage.resolved_data_dir()
    identity = ClientIdentity(params, data_dir / "client_info")
    runtime = device_runtime(NAME, config)
    prefix = config.client_broker.queue_prefix
    outbox = Outbox(runtime.link, outbox_queue(prefix))

    def query_offers(client_id: str) -> list[TaskOffer]:
        request = ClientRequestingTaskRequest(client_id=client_id)
        return runtime.client.call(CLIENT_REQUESTING_TASK, request).tasks

    def fetch_file(request: DownloadTaskFileRequest) -> TaskFileContent:
        return runtime.client.call(DOWNLOAD_TASK_FILE, request, timeout=60)

    def send_report(spec: RpcSpec[Any, Any], report: BaseModel) -> None:
        outbox.send(spec, report)

    def heartbeat(client_id: str) -> None:
        runtime.client.call(UPDATE_USER_INFO, UpdateUserInfoRequest(user_id=client_id),
                            timeout=params.cloud_heartbeat_s)

    work_dir = data_dir / "client_tasks"
    ca_file = Path(params.cloud_ca_file).expanduser() if params.cloud_ca_file else None
    executor = make_executor(params.executor, image=params.container_image,
                             cpus=params.container_cpus, memory_mb=params.container_memory_mb,
                             readable=(*params.confined_paths(), *([ca_file] if ca_file else [])))
    confinement.record(data_dir, executor.confinement)
    worker_imports = SpareImports(CLIENT_WORKER_MODULE, params.preload_modules())
    manager = ClientTaskManager(
        identity,
        TaskBook(policy, params.max_parallel_tasks, params.task_retry_s,
                 params.task_retry_max_s),
        query_offers=query_offers,
        fetch_file=fetch_file,
        send_report=send_report,
        work_dir=work_dir,
        request_interval_s=params.request_interval,
        heartbeat=heartbeat,
        heartbeat_s=params.cloud_heartbeat_s,
        node_config=params.node_config_values(),
        events=runtime.events,
        executor=executor,
        cloud_url=params.cloud_url,
        cloud_ca_file=ca_file,
        retention=DeviceRunRetention(work_dir, params.retention(), runtime.events),
        disk=DiskGate(data_dir, config.storage.min_free_mb, events=runtime.events),
        warm=WarmPool(worker_imports.argv(), work_dir / "workers",
                      name="Flower worker", executor=executor,
                      spares=params.flower_workers if flower_installed() else 0,
                      retarget=worker_imports.after_run_of),
    )
    Subscriber(runtime.link, task_events_exchange(prefix), TaskEvent, manager.on_task_event)
    runtime.start()
    manager.start()
    return RunningClientTaskManager(manager, runtime)
