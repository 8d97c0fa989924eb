"""Which process owns a task container, and making sure none outlives its owner.

Each container is labelled with its owner's pid (and start time, against pid reuse). A small
guard process, started with an owner's first container, waits for end-of-file on a pipe only
the owner holds and then removes the owner's containers, however the owner died;
:func:`remove_orphans` removes those of any owner that is gone.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, cast

import docker
from docker.errors import DockerException, NotFound

logger = logging.getLogger(__name__)

OWNER_LABEL = "agata.owner"
"""Label holding the pid of the process that started a container."""

OWNER_START_LABEL = "agata.owner_start"
"""Label holding the owner's start time (clock ticks since boot), against pid reuse."""

API_TIMEOUT_S = 30.0
"""How long one Docker API call may take."""


def docker_client(timeout: float = API_TIMEOUT_S) -> Any:
    """A Docker client from the environment (``DOCKER_HOST`` or the local socket)."""
    return docker.from_env(timeout=timeout)


def start_time(pid: int) -> str | None:
    """Start time of process ``pid`` (clock ticks since boot), None when it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def _owner_alive(owner: str | None, owner_start: str | None) -> bool:
    """True while the process named by a container's owner labels (pid, and start time when
    recorded) still runs."""
    try:
        pid = int(owner or "")
    except ValueError:
        return False
    started = start_time(pid)
    return started is not None and (not owner_start or owner_start == started)


def remove_orphans(owner_label: str = OWNER_LABEL, *, owner: int | None = None,
                   client: Any = None) -> list[str]:
    """Remove containers carrying ``owner_label`` whose owner process is gone (or, with
    ``owner``, every container of that owner pid); return their names."""
    own = client is None
    client = docker_client() if own else client
    removed: list[str] = []
    try:
        for container in client.containers.list(all=True, filters={"label": owner_label}):
            labels = cast(dict[str, str], container.labels)
            if owner is not None:
                if labels.get(owner_label) != str(owner):
                    continue
            elif _owner_alive(labels.get(owner_label), labels.get(OWNER_START_LABEL)):
                continue
            try:
                container.remove(force=True)
            except NotFound:
                continue
            removed.append(str(container.name))
            logger.info("removed container %s of owner %s", container.name,
                        labels.get(owner_label))
    finally:
        if own:
            client.close()
    return removed


class _OwnerGuard:
    """A process that removes this process's containers once this process is gone."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner = 0

    def ensure(self) -> None:
        """Start the guard unless one for this process runs."""
        with self._lock:
            if self._proc is not None and self._owner == os.getpid() and self._proc.poll() is None:
                return
            root = str(Path(__file__).resolve().parents[1])
            env = {name: value for name, value in os.environ.items()
                   if name in ("PATH", "DOCKER_HOST", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY")}
            env["PYTHONPATH"] = root
            code = ("import sys; from task_daemon_lib.container_owners import _guard_main; "
                    "sys.exit(_guard_main(int(sys.argv[1])))")
            # Not through the spawner: the guard must outlive us. Only we hold its stdin.
            self._proc = subprocess.Popen(
                [sys.executable, "-c", code, str(os.getpid())], stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL, env=env, cwd=root, start_new_session=True,
            )
            self._owner = os.getpid()


GUARD = _OwnerGuard()
"""This process's guard (started by :meth:`_OwnerGuard.ensure`)."""


def _guard_main(owner: int) -> int:
    """Body of the guard process: wait for end-of-file on stdin, then remove the containers
    labelled with ``owner``."""
    while sys.stdin.buffer.read(4096):
        pass
    try:
        remove_orphans(owner=owner)
    except DockerException as exc:
        logging.basicConfig()
        logger.error("cannot remove the containers of %d: %s", owner, exc)
        return 1
    return 0


def running_containers(owner: int | None = None, client: Any = None) -> list[str]:
    """Names of the containers labelled with ``owner`` (default: this process)."""
    own = client is None
    client = docker_client() if own else client
    try:
        label = f"{OWNER_LABEL}={owner if owner is not None else os.getpid()}"
        return [str(c.name) for c in client.containers.list(all=True, filters={"label": label})]
    finally:
        if own:
            client.close()
