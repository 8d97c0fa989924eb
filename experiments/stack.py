"""The whole system on one machine for an experiment: every service its own ``python -m``.

Cloud side and client side get separate data directories and queue prefixes on the local
RabbitMQ (as if they were separate brokers), fresh tokens, a free gateway port, and events
switched on; everything is stopped by pid at the end, the event reader last so that
``events.json`` holds every step. Given the cloud's address, a command prefix per side and
each device's own overrides, the same stack runs across hosts (``experiments.netns_stack``).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from agata_cli.app_archive import is_app_folder, zip_folder
from agata_cli.client import ApiError, CliError, Gateway
from agata_cli.local_deployment import LocalDeployment, secret_files_for
from agata_common.config_cloud import CloudTaskManagerSettings
from agata_common.config_device import ClientParams
from experiments.processes import ProcessGroup, free_port

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
TASKS_DIR = REPO_ROOT / "tasks"
T = TypeVar("T")
SERVING = "CloudTaskManager serving"
"""What a cloud task manager logs once it takes requests."""
WARM_HOSTS = "AGATA_CLOUD_TASK_MANAGER_WARM_HOSTS"
FLOWER_WORKERS = "AGATA_CLIENT_PARAMS_FLOWER_WORKERS"


def spare_counts(warm: bool) -> tuple[dict[str, str], dict[str, str]]:
    """The cloud's and each device's settings for warm spares: the shipped defaults (``warm``)
    or none at all."""
    hosts = CloudTaskManagerSettings.model_fields["warm_hosts"].default if warm else 0
    workers = ClientParams.model_fields["flower_workers"].default if warm else 0
    return {WARM_HOSTS: str(hosts)}, {FLOWER_WORKERS: str(workers)}


class Api(Gateway):
    """The cloud gateway's HTTP API as an operator script uses it (the ``agata`` command's
    client, plus what experiments need)."""

    def upload_files(self, task_id: str, files: list[Path]) -> list[Any]:
        """Upload every file of a task."""
        return [self.upload(task_id, path) for path in files]

    def wait_until_ended(self, task_id: str, timeout: float,
                         poll_s: float = 0.05) -> dict[str, Any]:
        """The task once its run has ended (``TimeoutError`` after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while (task := self.get(f"/api/tasks/{task_id}"))["status"] == "running":
            if time.monotonic() > deadline:
                raise TimeoutError(f"task {task_id} did not end within {timeout:.0f} s")
            time.sleep(poll_s)
        return dict(task)

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait until the gateway and the services behind it answer."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._send("GET", "/health", auth=False, timeout_s=1)
                break
            except CliError as error:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.url}/health did not answer within "
                                       f"{timeout:.0f} s ({error})") from None
            time.sleep(0.05)
        while True:
            try:
                self.post("/rpc_exec_list_tasks", {"limit": 1})
                self.post("/rpc_exec_list_users", {"limit": 1})
                return
            except ApiError as error:
                if error.status not in (503, 504) or time.monotonic() > deadline:
                    raise
            time.sleep(0.1)


@dataclass(frozen=True)
class TlsFiles:
    """The gateway's certificate and key, and the CA that signed it."""

    cert: Path
    key: Path
    ca: Path


@dataclass
class Stack:
    """Every process of a one-machine deployment, started and stopped together."""

    out_dir: Path
    client_count: int = 1
    client_params: dict[str, str] = field(default_factory=dict)
    cloud_overrides: dict[str, str] = field(default_factory=dict)
    processes: ProcessGroup | None = None
    api: Api | None = None
    deployment: LocalDeployment | None = None
    cloud_env: dict[str, str] = field(default_factory=dict)
    client_envs: list[dict[str, str]] = field(default_factory=list)
    host: str = "127.0.0.1"
    """The cloud's address: the gateway listens on it, devices call it, tasks run on it."""
    cloud_command: list[str] = field(default_factory=list)
    """Put in front of every cloud service's command (e.g. ``ip netns exec NS``)."""
    client_commands: list[list[str]] = field(default_factory=list)
    """Put in front of device ``i``'s commands, when given for it."""
    client_overrides: list[dict[str, str]] = field(default_factory=list)
    """Device ``i``'s own ``AGATA_*`` overrides (e.g. its broker), when given for it."""
    tls: TlsFiles | None = None
    """Serve the gateway over HTTPS with these files; devices and the API verify it with the CA."""
    warm_spares: bool | None = None
    """Keep the shipped number of warm ServerApp hosts and ClientApp workers (True), none
    (False: each run starts its own), or what the environment says (None); ``cloud_overrides``
    and ``client_overrides`` still win."""
    replicas: int = 1
    """Cloud task managers sharing one database, each with its own data folder (more than one
    needs ``cloud_overrides`` naming a PostgreSQL ``AGATA_CLOUD_TASK_MANAGER_DATABASE_URL``)."""

    @property
    def events_path(self) -> Path:
        """Where the event reader writes."""
        return self.out_dir / "events.json"

    def _environments(self) -> None:
        run = uuid.uuid4().hex[:8]
        port = free_port()
        deployment = LocalDeployment(
            data_dir=self.out_dir, port=port, api_token=secrets.token_hex(16),
            devices=self.client_count, prefix=f"exp-{run}.",
            overrides={"AGATA_EVENTS_REGISTER_EVENTS": "true",
                       "AGATA_EVENTS_EXCHANGE": f"exp-{run}.events",
                       "AGATA_CLOUD_TASK_MANAGER_STOP_GRACE_S": "3"},
            device_overrides={f"AGATA_CLIENT_PARAMS_{key.upper()}": value
                              for key, value in self.client_params.items()},
            host=self.host)
        url = deployment.url
        tls_env: dict[str, str] = {}
        device_tls: dict[str, str] = {}
        if self.tls is not None:
            url = url.replace("http://", "https://", 1)
            tls_env = {"AGATA_SERVER_GATEWAY_TLS_CERT": str(self.tls.cert),
                       "AGATA_SERVER_GATEWAY_TLS_KEY": str(self.tls.key)}
            device_tls = {"AGATA_CLIENT_PARAMS_CLOUD_URL": url,
                          "AGATA_CLIENT_PARAMS_CLOUD_CA_FILE": str(self.tls.ca)}
        download_secret = secret_files_for(
            {"AGATA_CLOUD_TASK_MANAGER_DOWNLOAD_SECRET": secrets.token_hex(16)},
            deployment.cloud_data_dir / "secrets")
        cloud_spares, device_spares = ({}, {}) if self.warm_spares is None else spare_counts(
            self.warm_spares)
        self.cloud_env = {**os.environ, **cloud_spares, **deployment.cloud_environ(),
                          **deployment.api_token_environ(), **download_secret,
                          **tls_env, **self.cloud_overrides}
        self.client_envs = [{**os.environ, **device_spares, **deployment.device_environ(index),
                             **device_tls,
                             **_item(self.client_overrides, index, {})}
                            for index in range(self.client_count)]
        self.deployment = deployment
        self.api = Api(url, deployment.api_token,
                       ca_file=str(self.tls.ca) if self.tls is not None else "")

    def start_cloud(self) -> Api:
        """Start the event reader and the cloud services; wait until they answer."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._environments()
        assert self.api is not None
        self.processes = ProcessGroup(self.cloud_env, self.out_dir / "logs")
        self.processes.start("event_reader", "event_reader",
                             "--output", str(self.events_path), prefix=self.cloud_command)
        self.processes.start("user_manager", "user_manager", prefix=self.cloud_command)
        first = self._launch_replica(0)
        # the gateway needs no database: it starts while the first replica prepares the schema
        self.processes.start("cloud_gateway", "cloud_gateway", prefix=self.cloud_command)
        self._wait_serving(*first)
        for index in range(1, self.replicas):
            self.start_replica(index)
        self.api.wait_ready()
        return self.api

    @staticmethod
    def replica_name(index: int) -> str:
        """The process name of cloud task manager replica ``index`` (0: the only one)."""
        return "cloud_task_manager" if index == 0 else f"cloud_task_manager_{index + 1}"

    def replica_data_dir(self, index: int) -> Path:
        """Cloud task manager replica ``index``'s data folder (the cloud's, for the first)."""
        if index == 0:
            return Path(self.cloud_env["AGATA_STORAGE_DATA_DIR"])
        return self.out_dir / f"cloud-replica-{index + 1}"

    def replica_process(self, replica_id: str) -> str:
        """The process name of the replica whose id is ``replica_id`` (it keeps it in its
        data folder); KeyError when none of this stack's replicas has it."""
        for index in range(self.replicas):
            kept = self.replica_data_dir(index) / "replica_id"
            if kept.is_file() and kept.read_text().strip() == replica_id:
                return self.replica_name(index)
        raise KeyError(replica_id)

    def start_replica(self, index: int, timeout: float = 60) -> None:
        """Start cloud task manager replica ``index`` (its own data folder past the first) and
        wait until it serves (one at a time: each prepares the shared schema)."""
        self._wait_serving(*self._launch_replica(index), timeout)

    def _launch_replica(self, index: int) -> tuple[str, Path, int]:
        """Start replica ``index``'s process; its name, log and how often it said it serves."""
        assert self.processes is not None
        name = self.replica_name(index)
        environ = {**self.cloud_env, "AGATA_STORAGE_DATA_DIR": str(self.replica_data_dir(index))}
        log = self.out_dir / "logs" / f"{name}.log"
        served = log.read_text(errors="replace").count(SERVING) if log.exists() else 0
        self.processes.environ = environ
        try:
            self.processes.start(name, "cloud_task_manager", prefix=self.cloud_command)
        finally:
            self.processes.environ = self.cloud_env
        return name, log, served

    @staticmethod
    def _wait_serving(name: str, log: Path, served: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not (log.exists() and log.read_text(errors="replace").count(SERVING) > served):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} did not serve within {timeout:.0f} s")
            time.sleep(0.05)

    def start_clients(self) -> list[str]:
        """Enroll each device, start its client gateway and client task manager (it joins
        with its one-time token) and wait until it reported its stats; return client ids."""
        assert self.processes is not None and self.api is not None
        ids = []
        for index, env in enumerate(self.client_envs):
            token = self.api.enroll(env["AGATA_CLIENT_PARAMS_CLIENT_ID"])["join_token"]
            assert self.deployment is not None
            self.processes.environ = {**env, **self.deployment.join_token_environ(index, token)}
            prefix = _item(self.client_commands, index, [])
            self.processes.start(f"client{index}_gateway", "client_gateway", prefix=prefix)
            self.processes.start(f"client{index}_task_manager", "client_task_manager",
                                 prefix=prefix)
            ids.append(env["AGATA_CLIENT_PARAMS_CLIENT_ID"])
        self.processes.environ = self.cloud_env
        deadline = time.monotonic() + 60
        for client_id in ids:
            while True:
                try:
                    client = self.api.get(f"/api/clients/{client_id}")
                    if (datetime.fromisoformat(client["last_seen"])
                            > datetime.fromisoformat(client["created"])):
                        break
                except ApiError as error:
                    if error.status != 404:
                        raise
                if time.monotonic() > deadline:
                    raise TimeoutError(f"device {client_id} did not report within 60 s")
                time.sleep(0.05)
        return ids

    def client_pids(self) -> dict[str, int]:
        """Pids of the client task managers (for CPU measurements)."""
        assert self.processes is not None
        return {name: p.pid for name, p in self.processes.processes.items()
                if name.startswith("client") and name.endswith("_task_manager")}

    def stop(self) -> dict[str, int | None]:
        """Stop every process, a tier at a time and the processes of a tier together: the
        devices' task managers, then their gateways (so their last reports go out), the
        cloud's services, its gateway, the event reader last; return exit codes."""
        if self.processes is None:
            return {}
        codes: dict[str, int | None] = {}

        def tier(name: str) -> tuple[bool, bool, bool]:
            return (name == "event_reader", not name.startswith("client"),
                    name.endswith("_gateway"))

        for _, names in itertools.groupby(sorted(self.processes.processes, key=tier), key=tier):
            codes.update(self.processes.stop_together(list(names)))
        self.processes.stop_all()
        return codes

    def create_task(self, task_id: str, source: Path, port: int | None, *,
                    server_arguments: dict[str, Any] | None = None,
                    client_arguments: dict[str, Any] | None = None,
                    selection_criteria: str = "", tags: list[str] | None = None,
                    devices: int = 2, deadline_s: int | None = None,
                    min_devices: int | None = None) -> Any:
        """Create a task through the gateway (``port`` None: the task has none) and upload
        ``source``: a Flower App folder as one zip archive, a script task's ``*.py``, ``*.npz``
        and ``*.json`` files one by one."""
        assert self.api is not None
        self.api.post("/rpc_exec_create_task", {
            "task_id": task_id, "host": self.host,
            **({} if port is None else {"port": port}),
            "selection_criteria": selection_criteria,
            "server_arguments": server_arguments or {},
            "client_arguments": client_arguments or {}, "tags": tags or [],
            "devices": devices, **({} if deadline_s is None else {"deadline_s": deadline_s}),
            **({} if min_devices is None else {"min_devices": min_devices})})
        if is_app_folder(source):
            return self.api.upload_archive(task_id, f"{source.name}.zip", zip_folder(source))
        files = sorted(p for p in source.iterdir()
                       if p.is_file() and p.suffix in {".py", ".npz", ".json"})
        return self.api.upload_files(task_id, files)


def _item(items: Sequence[T], index: int, default: T) -> T:
    """``items[index]`` when the list goes that far, else ``default``."""
    return items[index] if index < len(items) else default


def read_events(path: Path, timeout: float = 5) -> list[dict[str, Any]]:
    """The events file (waiting for it to appear)."""
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return json.loads(path.read_text()) if path.exists() else []


def first_event(events: list[dict[str, Any]], text: str, after: float = 0.0,
                function: str | None = None) -> float | None:
    """Time of the first event whose text starts with ``text`` at or after ``after`` (and
    registered by ``function``, when given)."""
    for event in events:
        if (str(event.get("event", "")).startswith(text) and float(event["time"]) >= after
                and (function is None or event.get("function") == function)):
            return float(event["time"])
    return None


def last_event(events: list[dict[str, Any]], text: str, before: float) -> float | None:
    """Time of the last event whose text starts with ``text`` at or before ``before``."""
    found = None
    for event in events:
        if float(event["time"]) > before:
            break
        if str(event.get("event", "")).startswith(text):
            found = float(event["time"])
    return found


def merge_events(path: Path, marks: dict[str, float], experiment: str) -> list[dict[str, Any]]:
    """Service events plus the experiment's own marks, sorted, written back to ``path``."""
    events = read_events(path)
    events += [{"time": t, "service": "experiment", "function": experiment, "event": name}
               for name, t in marks.items()]
    events.sort(key=lambda e: float(e["time"]))
    path.write_text(json.dumps(events, indent=1))
    return events


def span(start: float | None, end: float | None) -> float | None:
    """Seconds from ``start`` to ``end`` when both happened."""
    return None if start is None or end is None else end - start
