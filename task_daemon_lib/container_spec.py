"""What a task container is: its image, mounts, user, network and limits, and whether a Docker
engine here can run it (:mod:`task_daemon_lib.containers` runs one)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from docker.errors import DockerException, ImageNotFound
from docker.types import Mount

from task_daemon_lib.container_owners import docker_client

DEFAULT_IMAGE = "agata-task:local"
"""The task image ``scripts/docker_engine.sh`` builds."""

CONTAINER_TMP = "/tmp"  # noqa: S108  (a private tmpfs inside the container)

NetworkMode = Literal["none", "host"]


@dataclass(frozen=True)
class ContainerLimits:
    """Resources a task container may use."""

    cpus: float = 1.0
    memory_mb: int = 1024
    pids: int = 1024
    tmp_mb: int = 256


@dataclass(frozen=True)
class ContainerSpec:
    """Where and how a task container runs.

    ``task_dir`` is mounted read-only and ``results_dir`` read-write, each at its own path;
    ``read_only_mounts`` are further host paths mounted read-only at their own paths,
    ``writable_mounts`` read-write (a ServerApp host's state folder).
    ``working_dir`` defaults to ``task_dir``; ``user`` (``"uid:gid"``) to this process's.
    """

    task_dir: Path
    results_dir: Path
    image: str = DEFAULT_IMAGE
    read_only_mounts: tuple[Path, ...] = ()
    writable_mounts: tuple[Path, ...] = ()
    network_mode: NetworkMode = "none"
    limits: ContainerLimits = field(default_factory=ContainerLimits)
    working_dir: Path | None = None
    user: str | None = None

    def mounts(self) -> list[Mount]:
        """The container's bind mounts, one per target path (read-write wins)."""
        modes: dict[str, bool] = {}
        for path in self.read_only_mounts:
            modes[str(Path(path).absolute())] = True
        modes[str(Path(self.task_dir).absolute())] = True
        modes[str(Path(self.results_dir).absolute())] = False
        for path in self.writable_mounts:
            modes[str(Path(path).absolute())] = False
        return [Mount(target=target, source=str(Path(target).resolve()), type="bind",
                      read_only=read_only) for target, read_only in sorted(modes.items())]

    def container_user(self) -> str:
        """``user``, or the uid:gid of this process (root stays root, without capabilities)."""
        return self.user if self.user is not None else f"{os.getuid()}:{os.getgid()}"


def engine_available(image: str = DEFAULT_IMAGE) -> str | None:
    """None when a Docker engine answers and has ``image``; otherwise why not."""
    try:
        client = docker_client(timeout=5.0)
    except DockerException as exc:
        return f"no Docker engine answers ({exc}); run scripts/docker_engine.sh"
    try:
        client.ping()
        client.images.get(image)
    except ImageNotFound:
        return f"Docker image {image} is missing; run scripts/docker_engine.sh"
    except DockerException as exc:
        return f"the Docker engine does not answer ({exc}); run scripts/docker_engine.sh"
    finally:
        client.close()
    return None
