"""RabbitMQ nodes of our own, one per network namespace host (:mod:`experiments.netns`).

A :class:`RabbitNode` has its own epmd, node name, ports, data and log directories owned by the
``rabbitmq`` user, and listens on its host's address only. Its directories are removed when it
stops (its logs are copied out first). The machine's own broker is never touched.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pika

from experiments.netns import (
    COMMAND_TIMEOUT_S,
    SYSTEM_PATH,
    Host,
    NetnsError,
    stop_processes,
    which,
)

logger = logging.getLogger(__name__)

BROKER_PORT = 5701
"""The cloud node's AMQP port; device ``i``'s node takes the next ones (never 5672, so a
service that ignored its broker settings would find nothing)."""
DIST_PORT_OFFSET = 20000
"""A node's distribution port is its AMQP port plus this (RabbitMQ's own convention)."""
RABBITMQ_SCRIPTS = Path("/usr/lib/rabbitmq/bin")
"""Debian keeps the real scripts here; its ``/usr/sbin/rabbitmq-server`` switches user itself
and writes to ``/var/log/rabbitmq``, the machine broker's logs."""
RABBITMQ_USER = "rabbitmq"


def rabbitmq_server() -> Path | None:
    """The script that runs a RabbitMQ node in the foreground as the calling user."""
    if (RABBITMQ_SCRIPTS / "rabbitmq-server").is_file():
        return RABBITMQ_SCRIPTS / "rabbitmq-server"
    found = which("rabbitmq-server")
    return Path(found) if found else None


def rabbitmq_unavailable() -> str | None:
    """Why RabbitMQ nodes of our own cannot be started here, or None when they can."""
    if rabbitmq_server() is None:
        return "rabbitmq-server is not installed"
    for tool in ("epmd", "setpriv"):
        if which(tool) is None:
            return f"no `{tool}` command"
    try:
        pwd.getpwnam(RABBITMQ_USER)
    except KeyError:
        return f"no `{RABBITMQ_USER}` user"
    return None


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


