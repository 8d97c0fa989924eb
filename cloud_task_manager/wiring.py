"""Assembling the cloud task manager from the configuration, and starting it.

``build`` only constructs (no database, process or network side effects); ``start`` prepares
the schema, reconciles runs an earlier process left behind, and serves the RPCs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sqlalchemy import Engine

from agata_common.config import CloudSettings
from agata_common.database import make_engine
from agata_common.runtime import cloud_runtime
from agata_contracts.queues import client_changes_exchange, task_events_exchange
from agata_contracts.tasks import Task, TaskEvent, TaskIdRequest
from agata_contracts.users import GET_USER_INFO, GetUserInfoRequest, UserInfo
from cloud_task_manager.clients import ClientCache
from cloud_task_manager.doors import DataPlane, RunDoors
from cloud_task_manager.records import TaskRecords
from cloud_task_manager.replicas import (
    STOP_OWNED_RUN,
    LeaseKeeper,
    OrphanScans,
    OwnerEndpoint,
    Replicas,
    TasksChanged,
    owner_queue_prefix,
    replica_id_for,
    tasks_changed_exchange,
)
from cloud_task_manager.results import RunResultsStore
from cloud_task_manager.run_states import RunStates
from cloud_task_manager.runs import Peers, RunController, RunTimings
from cloud_task_manager.selection import TaskSelector
from cloud_task_manager.service import CloudTaskManager
from cloud_task_manager.storage import Credentials, TaskStorage
from flower_runtime import SERVER_HOST_MODULE, flower_installed
from flower_runtime.spare_imports import SpareImports
from microservice_interconnect.broadcast import Broadcaster, Subscriber
from microservice_interconnect.runtime import ServiceRuntime
from microservice_interconnect.service import ServiceHost
from task_daemon_lib import confinement
from task_daemon_lib.executors import make_executor
from task_daemon_lib.warm import WarmPool

NAME = "cloud_task_manager"


def build(config: CloudSettings, runtime: ServiceRuntime, engine: Engine,
          replicas: Replicas) -> CloudTaskManager:
    """The manager and its parts (this process being the replica ``replicas`` names); client
    lookups, task events and stops handed to the replica owning a run use the runtime's
    link."""
    section = config.cloud_task_manager
    data_dir = config.storage.resolved_data_dir()
    prefix = runtime.link.broker.queue_prefix

    def forward_stop(owner: str, task_id: str) -> Task:
        spec = dataclasses.replace(STOP_OWNED_RUN, name=owner_queue_prefix("", owner)
                                   + STOP_OWNED_RUN.name)
        return runtime.client.call(spec, TaskIdRequest(task_id=task_id),
                                   timeout=section.stop_grace_s + 10)

    def lookup_client(client_id: str) -> UserInfo:
        return runtime.client.call(GET_USER_INFO, GetUserInfoRequest(user_id=client_id))

    changes: Subscriber[UserInfo] = Subscriber(
        runtime.link, client_changes_exchange(prefix), UserInfo,
        lambda info: clients.changed(info))

    def current_connection() -> int:
        return changes.connections if changes.connected else 0

    clients = ClientCache(lookup_client, current_connection)

    announcer: Broadcaster[TaskEvent] = Broadcaster(
        runtime.link, task_events_exchange(prefix))
    storage = TaskStorage(data_dir, int(section.max_file_mb * 1024 * 1024), engine)
    records = TaskRecords(engine, Credentials.from_config(
        section.download_secret, data_dir, shared_database=engine.dialect.name == "postgresql"))
    results = RunResultsStore(records, storage, data_dir, section.retention(), runtime.events)
    executor = make_executor(section.executor, image=section.container_image,
                             cpus=section.container_cpus,
                             memory_mb=section.container_memory_mb,
                             readable=section.confined_paths())
    timings = RunTimings(stop_grace_s=section.stop_grace_s,
                         device_join_s=section.device_join_s,
                         device_rejoin_s=section.device_rejoin_s,
                         device_answer_s=section.device_answer_s,
                         default_deadline_s=section.default_deadline_s,
                         lease_s=replicas.lease_s)
    host_imports = SpareImports(SERVER_HOST_MODULE, section.preload_modules())
    runs = RunController(records, storage, results, timings=timings,
                         peers=Peers(replicas.replica_id, forward_stop, replicas.alive),
                         announce=announcer.publish, events=runtime.events,
                         executor=executor,
                         states=RunStates(engine, int(section.max_checkpoint_mb * 1024 * 1024)),
                         data_plane=DataPlane(section.run_host, section.max_message_mb),
                         min_free_mb=config.storage.min_free_mb,
                         warm=WarmPool(host_imports.argv(), data_dir / "hosts",
                                       name="ServerApp host", executor=executor,
                                       spares=section.warm_hosts if flower_installed() else 0,
                                       retarget=host_imports.after_run_of))
    selector = TaskSelector(records, clients.lookup)
    changed: Broadcaster[TasksChanged] = Broadcaster(runtime.link,
                                                     tasks_changed_exchange(prefix))
    records.on_change(lambda: changed.publish(TasksChanged(replica=replicas.replica_id)))

    def other_replica_changed(message: TasksChanged) -> None:
        if message.replica != replicas.replica_id:
            selector.invalidate()

    Subscriber(runtime.link, tasks_changed_exchange(prefix), TasksChanged, other_replica_changed)
    return CloudTaskManager(records, storage, runs, selector,
                            results, RunDoors(records, clients.lookup),
                            max_files_per_task=section.max_files_per_task,
                            max_task_bytes=int(section.max_task_mb * 1024 * 1024))


@dataclass
class RunningCloudTaskManager:
    """A serving cloud task manager."""

    manager: CloudTaskManager
    runtime: ServiceRuntime
    host: ServiceHost
    engine: Engine
    replicas: Replicas
    lease: LeaseKeeper

    def stop(self) -> None:
        """Finish requests in hand, stop every task server (leaving its run to another replica
        when one lives), then give up the lease (renewed until the servers are down, so no
        other replica starts a run while its server here still holds the port), disconnect,
        close the database."""
        self.lease.stop_working()
        handover = self.replicas.others_alive()

        def release() -> None:
            self.manager.runs.shutdown(handover=handover)
            self.lease.stop()
            self.replicas.leave()

        self.runtime.stop(before_close=release)
        self.engine.dispose()


def start(config: CloudSettings, engine: Engine | None = None, *,
          name: str = NAME) -> RunningCloudTaskManager:
    """Open the database (the configured one unless ``engine`` is given), reconcile, serve."""
    if engine is None:
        engine = make_engine(config.cloud_task_manager.database_url,
                             config.storage.resolved_data_dir() / "tasks.db")
    runtime = cloud_runtime(name, config)
    section = config.cloud_task_manager
    replicas = Replicas(engine, replica_id_for(section.replica_id,
                                               config.storage.resolved_data_dir()),
                        section.replica_lease_s)
    manager = build(config, runtime, engine, replicas)
    manager.records.create_schema()
    runs = manager.runs

    scans = OrphanScans()

    def tick(alive: set[str]) -> None:
        runs.fence()
        if scans.due(alive):
            runs.take_over(alive)
            scans.done()

    confinement.record(config.storage.resolved_data_dir(), runs.servers.executor.confinement)
    lease = LeaseKeeper(replicas, tick)
    lease.start()
    runs.reconcile()
    runs.servers.prepare_spare()
    host = runtime.serve(manager)
    runtime.hosts.append(ServiceHost(
        OwnerEndpoint(lambda task_id: runs.stop(task_id, forward=False)), runtime.link,
        name=name, queue_prefix=owner_queue_prefix(runtime.link.broker.queue_prefix,
                                                   replicas.replica_id),
        threads=2, events=runtime.events))
    runtime.start()
    return RunningCloudTaskManager(manager, runtime, host, engine, replicas, lease)
