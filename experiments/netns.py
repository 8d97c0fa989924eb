"""Hosts on one machine: network namespaces on a bridge.

A :class:`Host` is a network namespace with its own loopback and one address on a bridge in the
root namespace, which takes the subnet's first address so that an operator script reaches every
host. Each may run a RabbitMQ node of its own (:mod:`experiments.rabbit_nodes`), and
:func:`experiments.netns_stack.netns_stack` runs AGATA across such hosts.

Everything made here is removed again, also when a step fails: processes by pid (SIGTERM, then
SIGKILL after a bound), then namespaces, links and the bridge. The machine's own broker lives in
the root namespace and is never touched.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from agata_cli.supervisor import pid_alive

logger = logging.getLogger(__name__)

COMMAND_TIMEOUT_S = 10.0
"""Bound on one ``ip`` (or ``epmd -names``) command."""
STOP_GRACE_S = 15.0
"""SIGTERM, then SIGKILL once this has passed."""
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class NetnsError(RuntimeError):
    """A namespace, a link or a broker could not be set up."""


def which(name: str) -> str | None:
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
    if which("ip") is None:
        return "no `ip` command (iproute2)"
    probe = f"agata-probe-{secrets.token_hex(3)}"
    try:
        run_ip("netns", "add", probe)
    except NetnsError as exc:
        return f"cannot create a network namespace: {exc}"
    with contextlib.suppress(NetnsError):
        run_ip("netns", "delete", probe)
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


