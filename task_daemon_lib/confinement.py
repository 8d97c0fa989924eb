"""How a task process is confined without Docker: bubblewrap (``bwrap``), else nothing, said
loudly.

Task code is untrusted (users upload it, devices run it), so by default each task process runs
in a sandbox of its own that shows it only: its app folder read-only, its run's results folder
writable, a private ``/tmp``, the Python install, the project's runtime packages and the
system's libraries read-only, and its own PID namespace (``/proc`` holds none of the services,
so no ``/proc/<pid>/environ``). The network stays: a ClientApp worker reaches the cloud
gateway, a ServerApp host listens on its door port.

Why bubblewrap: it is unprivileged (it needs user namespaces, or root, and no setuid helper on
current kernels), has no daemon and no image to build, starts in a few milliseconds, and is a
Debian package (``bubblewrap``), so ``scripts/bootstrap.sh`` installs it like Chromium. It
builds the sandbox's root from nothing, so what is not bound is not there: an allow-list, not
a list of secrets to hide. The alternatives: a dedicated unprivileged user needs root to create
and to switch to, and hides only what file modes hide (``/proc`` stays visible, and every
data directory must be made unreadable to it); landlock restricts file access without
privileges but not ``/proc`` nor signals, and needs kernel 5.13 or later; the container
executor (``executor = docker``) confines as well but needs an engine, and gets no warm
spares.

Where the kernel refuses bubblewrap (no user namespaces for an unprivileged manager, as
Ubuntu's AppArmor does by default), or ``bwrap`` is missing, :func:`choose` falls back to
Landlock (:mod:`task_daemon_lib.landlock`: the same folders, but ``/proc`` still lists the
other processes, and no warm spares), and where that is refused too it says ``none`` with the
reasons: the manager logs it as an error and ``agata status`` shows it, so it is never silent.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from task_daemon_lib import landlock

logger = logging.getLogger(__name__)

STATUS_FILE = "confinement.json"
"""Where a task manager records the confinement in force, in its data directory."""

SANDBOX_TMP = "/tmp"  # noqa: S108 (the sandbox's own tmpfs, not the host's /tmp)
"""The sandbox's private temporary folder, also its ``HOME`` and ``TMPDIR``."""

TOP_LEVEL_SYSTEM = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
"""Folders of ``/`` a process needs to run (each bound read-only, or linked as on the host
where it is a link, as ``/lib -> usr/lib`` on merged-usr systems)."""

ETC_FILES = ("ssl", "ca-certificates", "alternatives", "resolv.conf", "hosts", "host.conf",
             "nsswitch.conf", "gai.conf", "localtime", "ld.so.cache", "ld.so.conf",
             "ld.so.conf.d", "passwd", "group", "mime.types")
"""What of ``/etc`` a task sees: certificates, name resolution, the loader's cache, time zone,
user names (never ``shadow`` or the rest)."""

SANDBOX_UID = 65534
"""The user a sandboxed process runs as, where bubblewrap makes a user namespace (nobody)."""

PROBE_TIMEOUT_S = 10.0


class Mechanism(StrEnum):
    """What confines task processes."""

    BWRAP = "bwrap"
    LANDLOCK = "landlock"
    DOCKER = "docker"
    NONE = "none"


@dataclass(frozen=True)
class Confinement:
    """The confinement in force for a manager's task processes, and why."""

    mechanism: Mechanism
    detail: str
    user_namespace: bool = False

    def as_json(self) -> dict[str, str]:
        """What the status file holds."""
        return {"mechanism": self.mechanism.value, "detail": self.detail}


@dataclass(frozen=True)
class SandboxView:
    """What one sandboxed process sees besides the system: folders read-only and writable, each
    at the path it has on the host, and the folder it starts in."""

    read_only: tuple[Path, ...]
    writable: tuple[Path, ...] = ()
    cwd: Path | None = None
    read_only_if_present: tuple[Path, ...] = ()
    """Read-only too, where they exist when the process starts (what the configuration names:
    a missing data set or CA file must not keep every task from starting)."""
    system: tuple[str, ...] = field(default_factory=tuple)
    """The system part of the argument list (:func:`system_arguments`)."""


def system_paths(root: Path = Path("/")) -> tuple[Path, ...]:
    """The system's folders and files a task reads (:data:`TOP_LEVEL_SYSTEM`, :data:`ETC_FILES`)
    that exist here."""
    names = [*TOP_LEVEL_SYSTEM, *(f"etc/{name}" for name in ETC_FILES)]
    return tuple(root / name for name in names if (root / name).exists())


def system_arguments(root: Path = Path("/")) -> tuple[str, ...]:
    """The bwrap arguments that show the system read-only: ``/usr`` and its siblings (a link
    stays a link), the chosen files of ``/etc``, a fresh ``/dev``, ``/proc`` of the sandbox's
    own PID namespace and a private ``/tmp``."""
    arguments: list[str] = []
    for name in TOP_LEVEL_SYSTEM:
        path = root / name
        if path.is_symlink():
            arguments += ["--symlink", os.readlink(path), f"/{name}"]
        elif path.is_dir():
            arguments += ["--ro-bind", str(path), f"/{name}"]
    for name in ETC_FILES:
        path = root / "etc" / name
        if path.exists():
            arguments += ["--ro-bind", str(path), f"/etc/{name}"]
    return (*arguments, "--dev", "/dev", "--proc", "/proc", "--tmpfs", SANDBOX_TMP)


def namespace_arguments(user_namespace: bool) -> list[str]:
    """Every namespace but the network's; in a user namespace the process is ``nobody``."""
    arguments = ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if user_namespace:
        arguments += ["--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID)]
    return [*arguments, "--cap-drop", "ALL", "--die-with-parent"]


def bwrap_argv(bwrap: str, view: SandboxView, argv: Sequence[str], *,
               user_namespace: bool = True) -> list[str]:
    """The command line running ``argv`` under bubblewrap with exactly ``view``."""
    arguments = [bwrap, *namespace_arguments(user_namespace), *view.system]
    for path in _unique(view.read_only):
        arguments += ["--ro-bind", str(path), str(path)]
    for path in _unique(view.read_only_if_present):
        arguments += ["--ro-bind-try", str(path), str(path)]
    for path in _unique(view.writable):
        arguments += ["--bind", str(path), str(path)]
    arguments += ["--remount-ro", "/"]  # the sandbox's own root: only /tmp and results write
    arguments += ["--setenv", "HOME", SANDBOX_TMP, "--setenv", "TMPDIR", SANDBOX_TMP]
    if view.cwd is not None:
        arguments += ["--chdir", str(view.cwd)]
    return [*arguments, "--", *argv]


def _unique(paths: Iterable[Path]) -> list[Path]:
    """Absolute paths, each once, in order."""
    return list(dict.fromkeys(Path(os.path.abspath(path)) for path in paths))


def choose() -> Confinement:
    """The strongest mechanism this kernel allows: bubblewrap with a user namespace, bubblewrap
    without one (the manager runs as root), else none, with the reason (each tried once)."""
    bwrap = shutil.which("bwrap")
    failures = []
    if bwrap is None:
        failures.append("bwrap is not installed (Debian: apt-get install bubblewrap, or "
                        "scripts/bootstrap.sh)")
    else:
        for user_namespace in (True, False):
            view = SandboxView(read_only=(), system=system_arguments())
            failure = _probe(bwrap_argv(bwrap, view, ["true"], user_namespace=user_namespace))
            if failure is None:
                how = "a user namespace" if user_namespace else "no user namespace (root)"
                return Confinement(Mechanism.BWRAP, f"{bwrap}, with {how}", user_namespace)
            failures.append(f"the kernel refuses bubblewrap: {failure}")
    failure = _probe(landlock.command([str(path) for path in system_paths()], [], ["true"]))
    if failure is None:
        return Confinement(Mechanism.LANDLOCK, f"Landlock ABI {landlock.abi_version()}, as "
                                               + "; ".join(failures))
    failures.append(f"Landlock refused: {failure}")
    return Confinement(Mechanism.NONE, "; ".join(failures))


def _probe(command: Sequence[str]) -> str | None:
    """None when ``command`` (a sandbox around ``true``) succeeds here, else why not."""
    try:
        result = subprocess.run(command, capture_output=True, timeout=PROBE_TIMEOUT_S,
                                check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if result.returncode == 0:
        return None
    return result.stderr.decode(errors="replace").strip() or f"exit {result.returncode}"


def record(data_dir: Path, confinement: Confinement) -> None:
    """Log the confinement in force (an error when there is none) and keep it in
    ``data_dir`` for ``agata status``."""
    if confinement.mechanism is Mechanism.NONE:
        logger.error("TASK CODE RUNS UNCONFINED: it can read this user's files, the data "
                     "directory's secrets and every process's environment (%s)",
                     confinement.detail)
    else:
        logger.info("task processes confined by %s (%s)", confinement.mechanism.value,
                    confinement.detail)
    data_dir.mkdir(parents=True, exist_ok=True)
    temporary = data_dir / f".{STATUS_FILE}.tmp"
    temporary.write_text(json.dumps(confinement.as_json()), encoding="utf-8")
    temporary.replace(data_dir / STATUS_FILE)


def read(data_dir: Path) -> dict[str, str] | None:
    """What :func:`record` kept in ``data_dir`` (None when nothing readable is there)."""
    try:
        value = json.loads((data_dir / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
