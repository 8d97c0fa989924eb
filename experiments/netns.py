"""Hosts on one machine: network namespaces on a bridge, each with its own RabbitMQ node.

A :class:`Host` is a network namespace with its own loopback and one address on a bridge in the
root namespace, which takes the subnet's first address so that an operator script reaches every
host. A :class:`RabbitNode` is a RabbitMQ node of its own inside a host (its own epmd, node
name, ports, data and log directories owned by the ``rabbitmq`` user), listening on the host's
address only. :func:`netns_stack` runs AGATA across such hosts: the cloud in one, each device in
another, each side with its own broker as AGATA deploys them, so nothing can lean on 127.0.0.1.

Everything made here is removed again, also when a step fails: processes by pid (SIGTERM, then
SIGKILL after a bound), then namespaces, links, the bridge and the brokers' directories. The
machine's own broker lives in the root namespace and is never touched.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pika

from agata_cli.supervisor import pid_alive
from experiments.stack import Stack

logger = logging.getLogger(__name__)

COMMAND_TIMEOUT_S = 10.0
"""Bound on one ``ip`` (or ``epmd -names``) command."""
STOP_GRACE_S = 15.0
"""SIGTERM, then SIGKILL once this has passed."""
BROKER_PORT = 5701
"""The cloud node's AMQP port; device ``i``'s node takes the next ones (never 5672, so a
service that ignored its broker settings would find nothing)."""
DIST_PORT_OFFSET = 20000
"""A node's distribution port is its AMQP port plus this (RabbitMQ's own convention)."""
RABBITMQ_SCRIPTS = Path("/usr/lib/rabbitmq/bin")
"""Debian keeps the real scripts here; its ``/usr/sbin/rabbitmq-server`` switches user itself
and writes to ``/var/log/rabbitmq``, the machine broker's logs."""
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RABBITMQ_USER = "rabbitmq"


class NetnsError(RuntimeError):
    """A namespace, a link or a broker could not be set up."""


def _which(name: str) -> str | None:
    return shutil.which(name, path=f"{os.environ.get('PATH', '')}:{SYSTEM_PATH}")


def run_ip(*args: str) -> str:
    """Run ``ip ARGS`` (bounded) and return its output; NetnsError says what went wrong."""
    try:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False,
                              timeout=COMMAND_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"ip {' '.join(args)}: {exc}") from exc
    if done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def netns_unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if _which("ip") is None:
        return "no `ip` command (iproute2)"
    probe = f"agata-probe-{secrets.token_hex(3)}"
    try:
        run_ip("netns", "add", probe)
    except NetnsError as exc:
        return f"cannot create a network namespace: {exc}"
    with contextlib.suppress(NetnsError):
        run_ip("netns", "delete", probe)
    return None


def rabbitmq_server() -> Path | None:
    """The script that runs a RabbitMQ node in the foreground as the calling user."""
    if (RABBITMQ_SCRIPTS / "rabbitmq-server").is_file():
        return RABBITMQ_SCRIPTS / "rabbitmq-server"
    found = _which("rabbitmq-server")
    return Path(found) if found else None


def rabbitmq_unavailable() -> str | None:
    """Why RabbitMQ nodes of our own cannot be started here, or None when they can."""
    if rabbitmq_server() is None:
        return "rabbitmq-server is not installed"
    for tool in ("epmd", "setpriv"):
        if _which(tool) is None:
            return f"no `{tool}` command"
    try:
        pwd.getpwnam(RABBITMQ_USER)
    except KeyError:
        return f"no `{RABBITMQ_USER}` user"
    return None


def _free_subnet() -> ipaddress.IPv4Network:
    """A random 10.x.y.0/24 that no address or route of the root namespace overlaps."""
    taken = []
    for line in run_ip("-o", "-4", "addr", "show").splitlines():
        words = line.split()
        if "inet" in words:
            taken.append(ipaddress.ip_network(words[words.index("inet") + 1], strict=False))
    for line in run_ip("-4", "route", "show", "table", "all").splitlines():
        for word in line.split()[:2]:
            with contextlib.suppress(ValueError):
                taken.append(ipaddress.ip_network(word, strict=False))
                break
    for _ in range(50):
        candidate = ipaddress.IPv4Network(
            f"10.{secrets.randbelow(156) + 100}.{secrets.randbelow(256)}.0/24")
        if not any(candidate.overlaps(network) for network in taken):
            return candidate
    raise NetnsError("no free 10.x.y.0/24 subnet found")


def stop_processes(processes: list[subprocess.Popen[bytes]], grace: float = STOP_GRACE_S) -> None:
    """SIGTERM every process at once, SIGKILL (with its process group) what is left after
    ``grace``; every one is waited for, with a bound."""
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(OSError):
                process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.warning("pid %d did not stop in %.0f s; killing it", process.pid, grace)
            process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(COMMAND_TIMEOUT_S)
        with contextlib.suppress(OSError):
            os.killpg(process.pid, signal.SIGKILL)


def stop_namespace_processes(namespace: str, grace: float = STOP_GRACE_S) -> None:
    """Stop whatever still runs in ``namespace`` (ours by construction): SIGTERM, SIGKILL after
    ``grace``."""
    with contextlib.suppress(NetnsError):
        pids = [int(word) for word in run_ip("netns", "pids", namespace).split()]
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, COMMAND_TIMEOUT_S)):
            pids = [pid for pid in pids if pid_alive(pid)]
            if not pids:
                return
            logger.warning("%s: %s left running; sending %s", namespace, pids, sig.name)
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and any(pid_alive(pid) for pid in pids):
                time.sleep(0.05)


@dataclass(frozen=True)
class Host:
    """A network namespace: a host with its own loopback and one address on the bridge."""

    name: str
    namespace: str
    address: str

    @property
    def command(self) -> list[str]:
        """What to put in front of a command to run it on this host."""
        return ["ip", "netns", "exec", self.namespace]

    def connects(self, address: str, port: int, timeout: float = 2.0) -> bool:
        """Whether a TCP connection from this host to ``address:port`` is accepted."""
        probe = ("import socket, sys\n"
                 "socket.create_connection((sys.argv[1], int(sys.argv[2])), float(sys.argv[3]))")
        try:
            done = subprocess.run([*self.command, sys.executable, "-I", "-c", probe, address,
                                   str(port), str(timeout)], capture_output=True, check=False,
                                  timeout=timeout + COMMAND_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0


def _allow_forwarding(bridge: str, action: str) -> bool:
    """Insert (``-I``) or delete (``-D``) a firewall rule letting hosts on ``bridge`` talk to
    each other, for machines whose FORWARD policy drops bridged traffic (as Docker's rules set
    it); False when there is no ``iptables`` or it refuses."""
    iptables = shutil.which("iptables") or shutil.which("iptables", path="/usr/sbin:/sbin")
    if iptables is None:
        return False
    done = subprocess.run([iptables, action, "FORWARD", "-i", bridge, "-o", bridge,
                           "-j", "ACCEPT"], capture_output=True, text=True, timeout=10,
                          check=False)
    return done.returncode == 0


class Network:
    """Hosts (network namespaces) on one bridge; the root namespace takes the first address.

    Names carry a random tag, so that runs side by side never meet; :meth:`close` removes
    everything made so far and may be called any time, more than once.
    """

    def __init__(self, tag: str | None = None) -> None:
        self.tag = tag or secrets.token_hex(3)
        self.bridge = f"agt{self.tag}br"
        self.subnet = _free_subnet()
        self.hosts: list[Host] = []
        self._namespaces: list[str] = []
        self._links: list[str] = []
        self._forwarding = False

    @property
    def root_address(self) -> str:
        """The root namespace's address on the bridge."""
        return str(self.subnet.network_address + 1)

    def start(self) -> Network:
        """Make the bridge and give the root namespace its address on it."""
        run_ip("link", "add", self.bridge, "type", "bridge")
        self._links.append(self.bridge)
        run_ip("addr", "add", f"{self.root_address}/{self.subnet.prefixlen}", "dev", self.bridge)
        run_ip("link", "set", self.bridge, "up")
        self._forwarding = _allow_forwarding(self.bridge, "-I")
        return self

    def add_host(self, name: str) -> Host:
        """A new namespace with ``lo`` up and a veth on the bridge holding the next address."""
        index = len(self.hosts)
        namespace = f"agata-{self.tag}-{name}"
        address = str(self.subnet.network_address + 2 + index)
        link = f"agt{self.tag}h{index}"
        run_ip("netns", "add", namespace)
        self._namespaces.append(namespace)
        run_ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        self._links.insert(0, link)
        run_ip("link", "set", link, "master", self.bridge, "up")
        run_ip("-n", namespace, "link", "set", "lo", "up")
        run_ip("-n", namespace, "addr", "add", f"{address}/{self.subnet.prefixlen}",
               "dev", "eth0")
        run_ip("-n", namespace, "link", "set", "eth0", "up")
        host = Host(name, namespace, address)
        self.hosts.append(host)
        return host

    def close(self) -> None:
        """Stop what still runs on the hosts, remove the namespaces, links and the bridge."""
        for namespace in self._namespaces:
            stop_namespace_processes(namespace)
        for namespace in self._namespaces:
            with contextlib.suppress(NetnsError):
                run_ip("netns", "delete", namespace)
        for link in self._links:
            with contextlib.suppress(NetnsError):
                run_ip("link", "delete", link)
        if self._forwarding:
            _allow_forwarding(self.bridge, "-D")
            self._forwarding = False
        self._namespaces.clear()
        self._links.clear()
        self.hosts.clear()


@dataclass
class RabbitNode:
    """A RabbitMQ node of its own on ``host``: its own epmd, node name, AMQP and distribution
    ports, data and log directories (owned by the ``rabbitmq`` user), listening on the host's
    address alone, with ``guest`` allowed from other hosts."""

    host: Host
    port: int
    log_dir: Path
    """Where its logs are copied when it stops (its own directories are removed)."""
    base_dir: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    epmd: subprocess.Popen[bytes] | None = None
    _console: list[IO[bytes]] = field(default_factory=list)

    @property
    def node_name(self) -> str:
        """The Erlang node name (``rabbitmqctl -n``, run on the host)."""
        return f"rabbit-{self.host.namespace}@localhost"

    def overrides(self, section: str) -> dict[str, str]:
        """The ``AGATA_*`` variables pointing ``section`` (``server`` or ``client``) at it."""
        prefix = f"AGATA_{section.upper()}_BROKER"
        return {f"{prefix}_HOST": self.host.address, f"{prefix}_PORT": str(self.port)}

    def _user_command(self, *argv: str) -> list[str]:
        return [*self.host.command, "setpriv", f"--reuid={RABBITMQ_USER}",
                f"--regid={RABBITMQ_USER}", "--init-groups", *argv]

    def _prepare(self) -> dict[str, str]:
        user = pwd.getpwnam(RABBITMQ_USER)
        base = Path(tempfile.mkdtemp(prefix=f"agata-{self.host.namespace}-"))
        self.base_dir = base
        (base / "mnesia").mkdir()
        (base / "log").mkdir()
        (base / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = {self.host.address}:{self.port}\n"
            "loopback_users.guest = false\n")
        (base / "rabbitmq-env.conf").write_text("")
        for path in (base, *base.rglob("*")):
            os.chown(path, user.pw_uid, user.pw_gid)
        base.chmod(0o755)
        return {
            "PATH": SYSTEM_PATH, "HOME": user.pw_dir, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODENAME": self.node_name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.port + DIST_PORT_OFFSET),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
        }

    def _spawn(self, argv: list[str], environ: Mapping[str, str], name: str,
               ) -> subprocess.Popen[bytes]:
        assert self.base_dir is not None
        console = (self.base_dir / "log" / f"{name}.out").open("ab")
        self._console.append(console)
        return subprocess.Popen(argv, cwd=self.base_dir, env=dict(environ), stdout=console,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)

    def start(self) -> None:
        """Start its epmd (waited for) and the node (not waited for: see :meth:`wait_ready`)."""
        environ = self._prepare()
        self.epmd = self._spawn(self._user_command("epmd", "-address", "127.0.0.1"),
                                environ, "epmd")
        deadline = time.monotonic() + COMMAND_TIMEOUT_S
        while subprocess.run([*self.host.command, "epmd", "-names"], capture_output=True,
                             env=environ, check=False,
                             timeout=COMMAND_TIMEOUT_S).returncode != 0:
            if self.epmd.poll() is not None or time.monotonic() > deadline:
                raise NetnsError(f"epmd did not start on {self.host.name}: {self.tail()}")
            time.sleep(0.05)
        server = rabbitmq_server()
        if server is None:
            raise NetnsError("rabbitmq-server is not installed")
        self.process = self._spawn(self._user_command(str(server)), environ, "rabbitmq-server")
        logger.info("RabbitMQ node %s starting on %s:%d (pid %d)", self.node_name,
                    self.host.address, self.port, self.process.pid)

    def wait_ready(self, deadline: float) -> None:
        """Wait until an AMQP login on its address succeeds (until ``deadline``, monotonic)."""
        parameters = pika.ConnectionParameters(
            host=self.host.address, port=self.port, connection_attempts=1, socket_timeout=1,
            stack_timeout=2, blocked_connection_timeout=2,
            credentials=pika.PlainCredentials("guest", "guest"))
        last = "no answer"
        while True:
            if self.process is None or self.process.poll() is not None:
                raise NetnsError(f"RabbitMQ node {self.node_name} exited: {self.tail()}")
            try:
                socket.create_connection((self.host.address, self.port), 1).close()
            except OSError as exc:
                last = str(exc)
            else:
                try:
                    pika.BlockingConnection(parameters).close()
                    return
                except pika.exceptions.AMQPError as exc:
                    last = repr(exc)
            if time.monotonic() > deadline:
                raise NetnsError(f"RabbitMQ node {self.node_name} did not answer on "
                                 f"{self.host.address}:{self.port} ({last}): {self.tail()}")
            time.sleep(0.2)

    def tail(self, lines: int = 15) -> str:
        """The last lines of the node's console output."""
        if self.base_dir is None:
            return ""
        text = "\n".join(path.read_text(errors="replace")
                         for path in sorted((self.base_dir / "log").glob("*.out")))
        return "\n".join(text.splitlines()[-lines:])

    @property
    def processes(self) -> list[subprocess.Popen[bytes]]:
        """Its node and epmd processes, as far as started."""
        return [p for p in (self.process, self.epmd) if p is not None]

    def stop(self) -> None:
        """Stop the node and its epmd by pid, keep the logs, remove its directories."""
        stop_processes(self.processes)
        self.process = self.epmd = None
        for console in self._console:
            console.close()
        self._console.clear()
        if self.base_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            for path in (self.base_dir / "log").iterdir():
                if path.is_file():
                    shutil.copyfile(path, self.log_dir / path.name)
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None


def start_brokers(nodes: list[RabbitNode], timeout: float = 60.0) -> None:
    """Start the nodes side by side and wait (up to ``timeout`` in all) until each answers."""
    for node in nodes:
        node.start()
    deadline = time.monotonic() + timeout
    for node in nodes:
        node.wait_ready(deadline)


def stop_brokers(nodes: list[RabbitNode]) -> None:
    """Stop the nodes side by side (SIGTERM to all, SIGKILL after a bound), then tidy up."""
    stop_processes([process for node in nodes for process in node.processes])
    for node in nodes:
        node.stop()


@dataclass
class HostsStack:
    """A :class:`Stack` spread over hosts: the cloud on one, each device on its own."""

    stack: Stack
    network: Network
    cloud: Host
    devices: list[Host]
    brokers: dict[str, RabbitNode]
    """Each host's RabbitMQ node, by host name."""


@contextlib.contextmanager
def netns_stack(out_dir: Path, devices: int = 2, *,
                client_params: Mapping[str, str] | None = None,
                cloud_overrides: Mapping[str, str] | None = None,
                broker_timeout_s: float = 60.0) -> Iterator[HostsStack]:
    """The cloud and ``devices`` devices on hosts of their own, each with its own RabbitMQ node;
    the cloud's services are not started yet (``stack.start_cloud``, ``stack.start_clients``).

    The cloud's gateway listens on the cloud's address, which the devices call, and tasks
    created through ``stack.create_task`` run on it. Everything is stopped and removed on exit.
    """
    with contextlib.ExitStack() as cleanup:
        network = Network()
        cleanup.callback(network.close)
        network.start()
        cloud = network.add_host("cloud")
        device_hosts = [network.add_host(f"dev{index}") for index in range(devices)]
        nodes = [RabbitNode(host, BROKER_PORT + index, out_dir / "logs" / f"rabbit-{host.name}")
                 for index, host in enumerate([cloud, *device_hosts])]
        cleanup.callback(stop_brokers, nodes)
        started = time.monotonic()
        start_brokers(nodes, broker_timeout_s)
        logger.info("%d RabbitMQ nodes answered in %.1f s", len(nodes),
                    time.monotonic() - started)
        stack = Stack(out_dir, client_count=devices, client_params=dict(client_params or {}),
                      cloud_overrides={**nodes[0].overrides("server"), **(cloud_overrides or {})},
                      host=cloud.address, cloud_command=cloud.command,
                      client_commands=[host.command for host in device_hosts],
                      client_overrides=[node.overrides("client") for node in nodes[1:]])
        cleanup.callback(stack.stop)
        yield HostsStack(stack, network, cloud, device_hosts,
                         {node.host.name: node for node in nodes})
