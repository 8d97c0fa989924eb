"""Helpers shared by the tests: isolated settings, in-process services, the gateway."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from agata_cli.client import ApiError
from agata_common.config import DEFAULT_CONFIG_PATH, Settings
from agata_common.database import make_engine
from agata_common.runtime import cloud_runtime
from cloud_task_manager import wiring as task_manager_wiring
from cloud_task_manager.service import CloudTaskManager
from cloud_task_manager.wiring import RunningCloudTaskManager
from experiments.postgres import ADMIN_URL, PostgresUnavailable, temporary_database
from experiments.stack import Api, Stack
from microservice_interconnect.events import EventRecorder
from microservice_interconnect.rpc_client import RpcClient
from microservice_interconnect.runtime import ServiceRuntime
from user_manager import wiring as user_manager_wiring
from user_manager.service import UserManager
from user_manager.wiring import RunningUserManager

REPO_ROOT = Path(__file__).resolve().parent.parent
OPERATOR_TOKEN = "operator-test-token"
CLIENT_TOKEN = "client-test-token"
POSTGRES_ADMIN_URL = ADMIN_URL


@contextlib.contextmanager
def small_tmpfs(folder: Path, size_mb: int) -> Iterator[Path]:
    """``folder`` made and mounted as a tmpfs of ``size_mb`` MiB for the block, unmounted after;
    the test is skipped, saying why, where a tmpfs cannot be mounted."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs",
                              str(folder)], capture_output=True, text=True, timeout=30)
    if mounted.returncode != 0:
        print(f"skipped: a tmpfs cannot be mounted here: {mounted.stderr.strip()}")
        pytest.skip(f"a tmpfs cannot be mounted here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=30)


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections at host:port."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SUITE_SPARES = {"AGATA_CLOUD_TASK_MANAGER_WARM_HOSTS": "0",
                "AGATA_CLIENT_PARAMS_FLOWER_WORKERS": "0",
                "AGATA_CLOUD_TASK_MANAGER_WARM_PRELOAD": "numpy",
                "AGATA_CLIENT_PARAMS_WARM_PRELOAD": "numpy"}
"""The suite's services keep no warm ServerApp host or ClientApp worker: a run starts its own
(one import), where a spare costs its import at start and again when it is replaced, most
often for no run at all; the tests about spares ask for them (``Stack(warm_spares=True)``).
What spares there are import numpy ahead, not torch (the default: about 2.6 CPU seconds per
spare); the apps that use torch import it when their run starts."""


def isolated_environ(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """An environment for ``load_settings`` isolated to one test."""
    prefix = f"test-{uuid.uuid4().hex[:10]}."
    environ = {
        "AGATA_CONFIG": str(DEFAULT_CONFIG_PATH),
        "AGATA_STORAGE_DATA_DIR": str(tmp_path / "data"),
        "AGATA_SERVER_BROKER_QUEUE_PREFIX": prefix,
        "AGATA_CLIENT_BROKER_QUEUE_PREFIX": f"{prefix}client.",
        "AGATA_SERVER_GATEWAY_API_TOKEN": OPERATOR_TOKEN,
        # Service-level tests speak for many made-up devices: they use the shared client token
        # (an opt-in mode); device identity itself is tested with enrolled devices.
        "AGATA_SERVER_GATEWAY_CLIENT_TOKEN": CLIENT_TOKEN,
        "AGATA_SERVER_GATEWAY_SHARED_CLIENT_TOKEN": "true",
        "AGATA_SERVER_GATEWAY_PORT": str(free_port()),
        "AGATA_EVENTS_REGISTER_EVENTS": "false",
        "AGATA_EVENTS_EXCHANGE": f"{prefix}events",
        "AGATA_RPC_TIMEOUT_S": "10",
        "AGATA_CLOUD_TASK_MANAGER_STOP_GRACE_S": "2",
        **SUITE_SPARES,
    }
    environ.update(overrides)
    return environ


def _postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for one test; the test is skipped without PostgreSQL."""
    try:
        with temporary_database(POSTGRES_ADMIN_URL) as url:
            yield url
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))


@dataclass
class Cloud:
    """The cloud services running in this process on a real broker and database."""

    settings: Settings
    client: RpcClient
    users: RunningUserManager
    tasks: RunningCloudTaskManager
    caller: ServiceRuntime

    @property
    def user_manager(self) -> UserManager:
        return self.users.manager

    @property
    def task_manager(self) -> CloudTaskManager:
        return self.tasks.manager

    def stop(self) -> None:
        self.caller.stop()
        self.tasks.stop()
        self.users.stop()


def start_cloud(config: Settings, database_url: str) -> Cloud:
    """Start the user manager and the cloud task manager, plus a caller's runtime."""
    data_dir = config.storage.resolved_data_dir()
    users = user_manager_wiring.start(config, make_engine(database_url, data_dir / "users.db"),
                                      name="test_user_manager")
    tasks = task_manager_wiring.start(config, make_engine(database_url, data_dir / "tasks.db"),
                                      name="test_cloud_task_manager")
    caller = cloud_runtime("test_caller", config).start()
    for host in (users.host, tasks.host):
        assert host.ready.wait(10), "service did not come up"
    return Cloud(config, caller.client, users, tasks, caller)


@dataclass
class Gateway:
    """A running cloud gateway and an HTTP session to call it."""

    url: str
    http: ClientSession

    def operator(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {OPERATOR_TOKEN}"}

    def client(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {CLIENT_TOKEN}"}

    async def post(self, path: str, body: Any = None, headers: dict[str, str] | None = None,
                   **kwargs: Any) -> tuple[int, Any]:
        """POST JSON (or raw ``data=``), return (status, parsed JSON body)."""
        async with self.http.post(f"{self.url}{path}", json=body, headers=headers,
                                  **kwargs) as response:
            return response.status, await response.json(content_type=None)

    async def get(self, path: str, headers: dict[str, str] | None = None
                  ) -> tuple[int, Any]:
        async with self.http.get(f"{self.url}{path}", headers=headers) as response:
            return response.status, await response.json(content_type=None)




@dataclass
class Running:
    """A stack that is up, shared by a module's tests: the cloud's API and the devices' ids."""

    stack: Stack
    api: Api
    devices: list[str]


@contextlib.contextmanager
def started(stack: Stack) -> Iterator[Running]:
    """``stack``'s cloud and devices started for the block; every process stopped after it
    (each must exit 0). A module's tests share one such stack where each runs tasks of its own
    ids (a stack's start and stop cost about 3 s)."""
    try:
        api = stack.start_cloud()
        yield Running(stack, api, stack.start_clients())
    finally:
        codes = stack.stop()
        assert all(code == 0 for code in codes.values()), codes


def stop_runs_left(api: Api) -> None:
    """Stop every run still going, so the next test on a shared stack finds its devices free."""
    for task in api.post("/rpc_exec_list_tasks", {"limit": 100})["tasks"]:
        if task["status"] == "running":
            try:
                api.post("/rpc_exec_stop_server_task", {"task_id": task["id"]})
            except ApiError as error:  # it ended between the list and the stop
                if error.status != 409:
                    raise


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.1) -> Any:
    """The first truthy value of ``predicate``, asked every ``interval`` seconds; a failed
    assertion naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def openssl(*args: str, cwd: Path) -> None:
    """Run ``openssl`` in ``cwd`` (raises when it fails)."""
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(folder: Path, name: str) -> Path:
    """A self-signed CA: ``<name>.pem`` and its key."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=folder)
    return folder / f"{name}.pem"


def make_server_cert(folder: Path, ca: str) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by CA ``ca``."""
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "server.key", "-out", "server.csr", cwd=folder)
    (folder / "san.cnf").write_text("subjectAltName = IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.cnf", "-out", "server.pem",
            cwd=folder)
    return folder / "server.pem", folder / "server.key"


class RecordedEvents(EventRecorder):
    """An event recorder that keeps what it is given, as (service, function, event)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str, str]] = []

    def register_event(self, service: str, function: str, event: str, *,
                       at: float | None = None) -> None:
        self.seen.append((service, function, event))
