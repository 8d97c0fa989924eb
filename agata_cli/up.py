"""``agata up`` and ``agata status``: the whole system on this machine, kept running.

``up`` makes sure RabbitMQ answers (starting a local one when it is installed) and is locked
(a virtual host and user per role, guest kept out: ``broker_roles``), generates the operator
token on first use (kept 0600 in the data directory, never printed), starts every service as
its own process (optionally with local devices; secrets reach each only as 0600 files in its
data directory, never in its environment), restarts one that
crashes, prints where the web interface is and how to sign in, and stops everything on Ctrl-C
or SIGTERM. ``status`` reads the state file ``up`` keeps and shows each service.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType
from typing import Any

from agata_cli.app_archive import zip_folder
from agata_cli.broker_roles import BrokerAdminError, BrokerUnavailable, lock_broker
from agata_cli.client import (
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    ApiError,
    CliError,
    Gateway,
)
from agata_cli.local_deployment import DEVICE_SERVICES, LocalDeployment
from agata_cli.output import out, table
from agata_cli.supervisor import Supervisor, pid_alive
from agata_common.config_loader import env_name, secret_env_names
from agata_common.device_identity import load_secret
from agata_common.disk import disk_space
from agata_common.secret_files import kept_or_new_secret
from microservice_interconnect.settings import BrokerSettings
from task_daemon_lib import confinement

logger = logging.getLogger("agata.up")

STATE_FILE = "up.json"
OPERATOR_TOKEN_ENV = env_name("server.gateway", "api_token")
"""Not passed on: ``up`` uses the operator token it keeps in its data directory."""
EXIT_NOT_UP = 1
BROKER_START_S = 90.0
READY_TIMEOUT_S = 90.0
DEMO_TASK = "demo-digits"
SOURCE_TASKS = Path(__file__).resolve().parent.parent / "tasks"


def data_dir_of(args: argparse.Namespace) -> Path:
    """The data directory: ``--data-dir``, else the configured one."""
    if args.data_dir:
        path = Path(args.data_dir).expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path
    from agata_common.config import settings

    return settings().storage.resolved_data_dir()


def ensure_token(path: Path) -> str:
    """The token kept in ``path``, created (random, 0600) on first use."""
    try:
        token, new = kept_or_new_secret(path, 32, 32)
    except ValueError:
        raise CliError(f"the token in {path} is too short; delete the file to get a new "
                       "one", EXIT_USAGE) from None
    if new:
        logger.info("generated a new token in %s", path)
    return token


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def ensure_broker(host: str, port: int) -> None:
    """RabbitMQ answers at host:port, or is started here when it is local and installed."""
    if _answers(host, port):
        return
    server = shutil.which("rabbitmq-server") or (
        "/usr/sbin/rabbitmq-server" if Path("/usr/sbin/rabbitmq-server").exists() else None)
    if host not in ("localhost", "127.0.0.1", "::1") or server is None:
        raise CliError(f"RabbitMQ does not answer at {host}:{port}"
                       + ("" if server else " and rabbitmq-server is not installed "
                          "(scripts/bootstrap.sh installs it)"), EXIT_UNAVAILABLE)
    out(f"starting RabbitMQ ({server} -detached)")
    subprocess.run([server, "-detached"], check=False, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=60)
    deadline = time.monotonic() + BROKER_START_S
    while not _answers(host, port):
        if time.monotonic() > deadline:
            raise CliError(f"RabbitMQ did not come up on {host}:{port} within "
                           f"{BROKER_START_S:.0f} s", EXIT_UNAVAILABLE)
        time.sleep(0.5)


def lock(deployment: LocalDeployment, broker: BrokerSettings, events_exchange: str) -> None:
    """The deployment's broker roles ready and guest kept out of their virtual hosts
    (``RABBITMQCTL`` names the command that administers the broker, default rabbitmqctl);
    a broker that has just opened its port is given ``BROKER_START_S`` to answer AMQP."""
    command = shlex.split(os.environ.get("RABBITMQCTL", "")) or None
    deadline = time.monotonic() + BROKER_START_S
    while True:
        try:
            changed = lock_broker(broker, deployment.broker_roles(), events_exchange, command)
            break
        except BrokerUnavailable as error:
            if time.monotonic() > deadline:
                raise CliError(f"the broker is not ready for AGATA: {error}",
                               EXIT_UNAVAILABLE) from None
            time.sleep(1)
        except BrokerAdminError as error:
            raise CliError(f"the broker is not ready for AGATA: {error}",
                           EXIT_UNAVAILABLE) from None
    cloud = deployment.cloud_role()
    out(f"broker {'locked' if changed else 'already locked'}: the cloud on virtual host "
        f"{cloud.virtual_host} as {cloud.user}, each device on its own; guest kept out")


def read_state(data_dir: Path) -> dict[str, Any] | None:
    """What the last ``agata up`` wrote (None when it never ran here)."""
    try:
        state = json.loads((data_dir / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _wait_ready(supervisor: Supervisor, deployment: LocalDeployment, api: Gateway, *,
                devices: bool = True) -> None:
    """Until the gateway answers and (``devices``) every local device is registered (crashes
    restarted)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    pending = [deployment.device_id(i) for i in range(deployment.devices if devices else 0)]
    while not supervisor.stopping.is_set():
        supervisor.check()
        if _healthy(deployment.url):
            still = []
            for device in pending:
                try:
                    api.get(f"/api/clients/{device}")
                except (ApiError, CliError):
                    still.append(device)
            pending = still
            if not pending and (devices or _answers_api(api)):
                return
        if time.monotonic() > deadline:
            raise CliError(f"the system did not come up within {READY_TIMEOUT_S:.0f} s; see "
                           f"the logs in {supervisor.log_dir}", EXIT_UNAVAILABLE)
        time.sleep(0.2)


def _answers_api(api: Gateway) -> bool:
    """Whether the services behind the gateway answer an operator call."""
    try:
        api.get("/api/clients", {"limit": 1})
    except (ApiError, CliError):
        return False
    return True


def join_token(api: Gateway, deployment: LocalDeployment, index: int) -> str | None:
    """A join token for local device ``index``, None when it kept a credential already."""
    client_id = deployment.device_id(index)
    if load_secret(deployment.device_data_dir(index), client_id) is not None:
        return None
    return str(api.enroll(client_id)["join_token"])


def start_demo_task(api: Gateway, devices: int) -> None:
    """Create (once) and start the digits Flower App, sized for the local devices."""
    source = SOURCE_TASKS / "app_digits"
    if not source.is_dir():
        out(f"(no demo task: {source} is not here; it ships with the source tree)")
        return
    try:
        task = api.get(f"/api/tasks/{DEMO_TASK}")
    except ApiError as error:
        if error.status != 404:
            raise
        api.post("/rpc_exec_create_task", {
            "task_id": DEMO_TASK, "host": "127.0.0.1",
            "server_arguments": {"num-server-rounds": 2000, "local-epochs": 5,
                                 "min-nodes": devices},
            "devices": devices, "tags": ["demo"]})
        api.upload_archive(DEMO_TASK, f"{source.name}.zip", zip_folder(source))
        task = api.get(f"/api/tasks/{DEMO_TASK}")
    if task["status"] != "running":
        api.post("/rpc_exec_start_server_task", {"task_id": DEMO_TASK})


def up(args: argparse.Namespace) -> int:
    """Bring the system up and keep it running until Ctrl-C or SIGTERM."""
    from agata_common.config import settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s agata up: %(message)s",
                        stream=sys.stderr)
    config = settings()
    data_dir = data_dir_of(args)
    previous = read_state(data_dir)
    if previous and pid_alive(previous.get("supervisor_pid")):
        raise CliError(f"agata is already up here (pid {previous['supervisor_pid']}); "
                       "see 'agata status'", EXIT_USAGE)
    broker = config.server_broker
    ensure_broker(broker.host, broker.port)
    secrets_dir = data_dir / "secrets"
    api_token_file = secrets_dir / "api_token"
    deployment = LocalDeployment(
        data_dir=data_dir, port=args.port or config.server_gateway.port,
        api_token=ensure_token(api_token_file),
        devices=args.devices, prefix=args.queue_prefix, locked_broker=True,
        device_overrides={"AGATA_CLIENT_PARAMS_REQUEST_INTERVAL": "5"},
        secrets={name: os.environ[name] for name in sorted(secret_env_names())
                 if os.environ.get(name) and name != OPERATOR_TOKEN_ENV})
    if _answers("127.0.0.1", deployment.port):
        raise CliError(f"port {deployment.port} is taken; choose another with --port",
                       EXIT_USAGE)
    lock(deployment, broker, config.events.exchange)
    supervisor = Supervisor(deployment.cloud_services(), data_dir / "logs",
                            data_dir / STATE_FILE,
                            extra_state={"url": deployment.url, "data_dir": str(data_dir)})

    def stop_on(signum: int, _frame: FrameType | None) -> None:
        logger.info("%s received: stopping", signal.Signals(signum).name)
        supervisor.stopping.set()

    signal.signal(signal.SIGINT, stop_on)
    signal.signal(signal.SIGTERM, stop_on)
    supervisor.start()
    try:
        api = Gateway(deployment.url, deployment.api_token, f"token file {api_token_file}")
        _wait_ready(supervisor, deployment, api, devices=False)
        if not supervisor.stopping.is_set():
            supervisor.add([service for index in range(deployment.devices)
                            for service in deployment.device_services(
                                index, join_token(api, deployment, index))])
        _wait_ready(supervisor, deployment, api)
        if args.demo_task and not supervisor.stopping.is_set():
            start_demo_task(api, max(1, args.devices))
        if not supervisor.stopping.is_set():
            _welcome(deployment, api_token_file, data_dir, args.demo_task)
            supervisor.watch()
    finally:
        codes = supervisor.stop()
        out(f"agata stopped ({len(codes)} processes ended)")
    return 0


def _welcome(deployment: LocalDeployment, token_file: Path, data_dir: Path, demo: bool) -> None:
    processes = len(deployment.cloud_services()) + len(DEVICE_SERVICES) * deployment.devices
    out(f"AGATA is up: {processes} processes "
        f"({deployment.devices} local device(s)); logs in {data_dir / 'logs'}")
    out(f"  web interface  {deployment.url}/ui/"
        + (f"   (task {DEMO_TASK} is training: {deployment.url}/ui/task.html?id={DEMO_TASK})"
           if demo else ""))
    out(f"  sign in with   the operator token kept in {token_file}")
    out(f"                 (copy it: cat {token_file})")
    out(f"  command line   agata --url {deployment.url} --token-file {token_file} tasks list")
    out(f"  status         agata status{_data_dir_option(data_dir)}   stop: Ctrl-C, or "
        f"kill -TERM {os.getpid()}")


def _data_dir_option(data_dir: Path) -> str:
    return f" --data-dir {data_dir}"


def status(args: argparse.Namespace) -> int:
    """Show what ``agata up`` runs here (exit 1 when it is not up)."""
    data_dir = data_dir_of(args)
    state = read_state(data_dir)
    if state is None:
        out(f"agata is not up here: no {STATE_FILE} in {data_dir}")
        return EXIT_NOT_UP
    running = pid_alive(state.get("supervisor_pid"))
    now = time.time()
    rows = []
    for service in state.get("services", []):
        alive = running and pid_alive(service.get("pid"))
        shown = service.get("state") if alive or service.get("state") != "running" else "gone"
        if not running:
            shown = "stopped"
        uptime = f"{now - float(service.get('since') or now):.0f} s" if alive else "-"
        confined = _confinement(service)
        if confined is not None:
            service["confinement"] = confined
        rows.append([service.get("name"), shown, service.get("pid") or "-", uptime,
                     service.get("restarts", 0), _confinement_cell(confined)])
    disk = _disk_line(data_dir)
    if args.json:
        out(json.dumps({"up": running, **state, "disk": disk or "ok"}, indent=1))
        return 0 if running else EXIT_NOT_UP
    heading = (f"agata is up (pid {state['supervisor_pid']}) at {state.get('url')}/ui/"
               if running else "agata is not up here (state of its last run below)")
    out(heading)
    for line in table(["SERVICE", "STATE", "PID", "UPTIME", "RESTARTS", "TASK CONFINEMENT"],
                      rows):
        out(line)
    if disk:
        out(disk)
    return 0 if running else EXIT_NOT_UP


def _disk_line(data_dir: Path) -> str | None:
    """What ``agata status`` says about the data folder's disk: a line when it is full (the
    state file may be stale then: it could not be written), else None."""
    from agata_common.config import settings

    space = disk_space(data_dir, settings().storage.min_free_mb)
    if space is None or not space.full:
        return None
    return (f"{space.describe()}; runs that cannot record are paused until space is freed "
            "(the states above may be older than that)")


def _confinement(service: dict[str, Any]) -> dict[str, str] | None:
    """What confines a task manager's task processes, as it recorded it (None for the other
    services)."""
    data_dir = service.get("data_dir")
    if not str(service.get("module", "")).endswith("task_manager") or not data_dir:
        return None
    return confinement.read(Path(data_dir)) or {"mechanism": "unknown",
                                                 "detail": "not recorded yet"}


def _confinement_cell(confined: dict[str, str] | None) -> str:
    """The table's cell: the mechanism, loud when there is none."""
    if confined is None:
        return "-"
    mechanism = confined.get("mechanism", "unknown")
    return "NONE (unconfined!)" if mechanism == "none" else mechanism
