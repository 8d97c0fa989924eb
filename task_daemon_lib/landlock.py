"""``python -m task_daemon_lib.landlock --ro P ... --rw P ... -- ARGV``: run ARGV under a Landlock
ruleset, the fallback where the kernel refuses bubblewrap (no user namespaces for an
unprivileged manager) but has Landlock (Linux 5.13 or later, unprivileged).

The process may read (and execute) only the ``--ro`` paths, read and write only the ``--rw``
ones, list the ``--ls`` folders (names only, beneath them too: Python lists the folder holding
a package to import it), read :data:`ALWAYS_READABLE` (of ``/proc`` only itself, so no other
process's ``environ``) and use ``/dev``; from ABI 6 it cannot signal processes outside its
ruleset. Weaker than bubblewrap: other processes still exist for it (``kill`` below ABI 6,
sockets), the host's ``/tmp`` is not granted (its ``TMPDIR`` is in its results folder), and it
gets no warm spare.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
from collections.abc import Sequence

SYS_CREATE_RULESET, SYS_ADD_RULE, SYS_RESTRICT_SELF = 444, 445, 446
CREATE_RULESET_VERSION = 1
RULE_PATH_BENEATH = 1
PR_SET_NO_NEW_PRIVS = 38

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
TRUNCATE, IOCTL_DEV = 1 << 14, 1 << 15
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1
FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
"""The rights a rule on a file (not a folder) may grant."""

READ = EXECUTE | READ_FILE | READ_DIR
DEVICES = READ_FILE | READ_DIR | WRITE_FILE | IOCTL_DEV
ALWAYS_READABLE = ("/proc/self", "/proc/cpuinfo", "/proc/meminfo", "/sys")
"""Read by everything: of ``/proc`` only the process itself (Landlock does not stop reading
``/proc/<pid>/environ`` of a process's ancestors, so no other pid is granted) and what libraries
read to size themselves."""


def handled_rights(abi: int) -> int:
    """Every file system right the kernel's Landlock ABI knows."""
    rights = (1 << 13) - 1
    if abi >= 2:
        rights |= 1 << 13  # REFER
    if abi >= 3:
        rights |= TRUNCATE
    if abi >= 5:
        rights |= IOCTL_DEV
    return rights


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def abi_version() -> int:
    """The kernel's Landlock ABI (0 when it has none or it is disabled)."""
    version = _libc().syscall(SYS_CREATE_RULESET, None, ctypes.c_size_t(0),
                              ctypes.c_uint32(CREATE_RULESET_VERSION))
    return max(0, int(version))


def rules(read_only: Sequence[str], writable: Sequence[str],
          listable: Sequence[str] = ()) -> list[tuple[str, int]]:
    """Each existing path with the rights it gets (the system's devices and ``/proc`` too)."""
    wanted = [(path, READ_DIR) for path in listable]
    wanted += [(path, READ) for path in (*read_only, *ALWAYS_READABLE)]
    wanted += [("/dev", DEVICES), *((path, -1) for path in writable)]
    return [(path, access) for path, access in wanted if os.path.exists(path)]


def restrict(read_only: Sequence[str], writable: Sequence[str],
             listable: Sequence[str] = ()) -> None:
    """Confine this process (and what it executes) to the paths given; OSError when the kernel
    refuses."""
    abi = abi_version()
    if abi < 1:
        raise OSError("this kernel has no Landlock")
    libc = _libc()
    handled = handled_rights(abi)
    attr = _RulesetAttr(handled, 0, SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0)
    size = 24 if abi >= 6 else 8
    ruleset = libc.syscall(SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size),
                           ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        for path, access in rules(read_only, writable, listable):
            descriptor = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                allowed = handled if access < 0 else access & handled
                if not os.path.isdir(path):
                    allowed &= FILE_RIGHTS
                rule = _PathBeneathAttr(allowed, descriptor)
                if libc.syscall(SYS_ADD_RULE, ruleset, RULE_PATH_BENEATH, ctypes.byref(rule),
                                ctypes.c_uint32(0)) < 0:
                    raise OSError(ctypes.get_errno(), f"landlock_add_rule {path} failed")
            finally:
                os.close(descriptor)
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if libc.syscall(SYS_RESTRICT_SELF, ruleset, ctypes.c_uint32(0)) < 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(ruleset)


def command(read_only: Sequence[str], writable: Sequence[str], argv: Sequence[str],
            listable: Sequence[str] = ()) -> list[str]:
    """The command line running ``argv`` under this module's ruleset."""
    paths = [word for path in read_only for word in ("--ro", str(path))]
    paths += [word for path in writable for word in ("--rw", str(path))]
    paths += [word for path in listable for word in ("--ls", str(path))]
    return [sys.executable, "-m", __name__, *paths, "--", *argv]


def main(argv: Sequence[str] | None = None) -> int:
    """Restrict this process, then become ARGV (exit 126 when the kernel refuses)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--ro", action="append", default=[])
    parser.add_argument("--rw", action="append", default=[])
    parser.add_argument("--ls", action="append", default=[])
    parser.add_argument("argv", nargs="+")
    args = parser.parse_args(argv)
    try:
        restrict(args.ro, args.rw, args.ls)
    except OSError as exc:
        sys.stderr.write(f"landlock: {exc}\n")
        return 126
    os.execvp(args.argv[0], args.argv)  # noqa: S606 (becoming the task is the point)


if __name__ == "__main__":
    sys.exit(main())
