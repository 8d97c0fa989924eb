#!/usr/bin/env bash
# Make a local Docker engine answer and build the task image (agata-task:local) when missing.
# Safe to run again: it only does what is missing. Exits non-zero, saying why, when no engine
# can be started.
#
# The image holds no Python: containers bind-mount the host's Python install and the project's
# virtualenv read-only at their own paths (see task_daemon_lib/containers.py). Its root file
# system is built from this host: the shared libraries the Python install and the virtualenv's
# extension modules need (found with ldd), libc6, coreutils, dash, bash and setpriv, CA
# certificates, and generated /etc/passwd and /etc/group (root and nobody only). Nothing else
# of /etc, /root, /home or the project is copied. It takes about 10-15 s and 45 MB. Set
# AGATA_TASK_IMAGE to build under another tag, AGATA_TASK_IMAGE_REBUILD=1 to rebuild.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[docker] %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

IMAGE=${AGATA_TASK_IMAGE:-agata-task:local}
WAIT_S=${AGATA_DOCKER_WAIT_S:-60}
LOG_FILE=${AGATA_DOCKERD_LOG:-/var/log/dockerd.log}

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }

if ! engine_answers; then
  if ! command -v docker >/dev/null 2>&1 \
      || { ! command -v dockerd >/dev/null 2>&1 && [ ! -x /usr/sbin/dockerd ]; }; then
    log "dockerd is missing; installing docker.io"
    as_root apt-get update -qq || true
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >&2; then
      log "cannot install docker.io: no engine"
      exit 1
    fi
  fi
  if ! engine_answers; then
    log "starting dockerd (log: $LOG_FILE)"
    log_start=$(wc -c <"$LOG_FILE" 2>/dev/null || echo 0)
    new_log() { tail -c +"$((log_start + 1))" "$LOG_FILE" 2>/dev/null; }
    # Task containers use the host's network or none: dockerd gets no bridge and leaves the
    # firewall alone (its iptables rules set FORWARD to DROP, which cuts bridged namespaces).
    as_root env PATH="$PATH:/usr/sbin:/sbin" setsid nohup dockerd --iptables=false \
      --bridge=none >>"$LOG_FILE" 2>&1 </dev/null &
    started=$!
    for _ in $(seq 1 "$WAIT_S"); do
      engine_answers && break
      kill -0 "$started" 2>/dev/null || break
      sleep 1
    done
    if ! engine_answers; then
      log "no Docker engine answers (waited up to ${WAIT_S}s); what dockerd logged:"
      new_log | tail -n 15 >&2 || true
      exit 1
    fi
  fi
fi
log "engine answers ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"

if [ "${AGATA_TASK_IMAGE_REBUILD:-0}" != 1 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  log "image $IMAGE present"
  exit 0
fi

old_image=$(docker image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
started_at=$(date +%s)
stage=$(mktemp -d /tmp/agata-rootfs.XXXXXX)
trap 'rm -rf "$stage"' EXIT
log "building $IMAGE from this host's libraries in $stage"
"$PY" - "$stage" <<'PY'
"""Stage a minimal root file system for task containers in sys.argv[1]."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

root = Path(sys.argv[1])
SKIP = ("/usr/share/doc", "/usr/share/man", "/usr/share/info", "/usr/share/lintian",
        "/usr/share/locale", "/etc/ssl/private")


def canonical(path: str) -> Path:
    """The path with its directories resolved (merged /usr), the file name kept."""
    p = Path(path)
    return Path(os.path.realpath(p.parent)) / p.name


def add(path: str, seen: set[Path] = set()) -> None:
    """Copy one file or symlink (and the symlink's target) into the root at the same path."""
    src = canonical(path)
    if src in seen or str(src).startswith(SKIP) or not os.path.lexists(src):
        return
    seen.add(src)
    if src.is_dir() and not src.is_symlink():
        return
    dst = root / src.relative_to("/")
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_symlink():
        target = os.readlink(src)
        if not dst.is_symlink():
            dst.symlink_to(target)
        add(str(src.parent / target) if not os.path.isabs(target) else target, seen)
    else:
        shutil.copy2(src, dst)


def package_files(name: str) -> list[str]:
    """Files of an installed Debian package, [] when it is not installed."""
    out = subprocess.run(["dpkg", "-L", name], capture_output=True, text=True, check=False)
    return [line for line in out.stdout.splitlines() if line.startswith("/")]


def needed_libraries(files: list[str]) -> set[str]:
    """System libraries ``ldd`` resolves for ``files`` (outside the mounted trees)."""
    libs: set[str] = set()
    for start in range(0, len(files), 200):
        out = subprocess.run(["ldd", *files[start:start + 200]], capture_output=True,
                             text=True, check=False)
        for line in out.stdout.splitlines():
            parts = line.split()
            if "=>" in parts and len(parts) > parts.index("=>") + 1:
                lib = parts[parts.index("=>") + 1]
                if lib.startswith(("/lib", "/usr/lib")):
                    libs.add(lib)
            elif parts and parts[0].startswith("/"):
                libs.add(parts[0])
    return libs


# merged-/usr layout, as on the host
for name in ("usr/bin", "usr/sbin", "usr/lib", "usr/lib64"):
    (root / name).mkdir(parents=True, exist_ok=True)
for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"),
                     ("lib64", "usr/lib64")):
    (root / link).symlink_to(target)
for name in ("etc", "tmp", "proc", "sys", "dev", "run", "root", "home", "work"):
    (root / name).mkdir(exist_ok=True)
(root / "tmp").chmod(0o1777)

programs: list[str] = []
for package in ("libc6", "libgcc-s1", "libstdc++6", "coreutils", "dash", "bash", "ca-certificates"):
    for path in package_files(package):
        if os.path.isfile(path) or os.path.islink(path):
            add(path)
            if path.startswith(("/bin/", "/usr/bin/")):
                programs.append(path)
for extra in ("/bin/sh", "/usr/bin/setpriv"):  # setpriv: task_daemon_lib's spawner uses it
    if os.path.lexists(extra):
        add(extra)
        programs.append(extra)

trees = {sys.base_prefix, sys.prefix}
elf: list[str] = list(programs)
for tree in trees:
    for dirpath, _dirs, names in os.walk(tree):
        for name in names:
            if name.endswith(".so") or ".so." in name or dirpath.endswith("/bin"):
                path = os.path.join(dirpath, name)
                if os.path.isfile(path) and not os.path.islink(path):
                    elf.append(path)
libs = needed_libraries(elf)
for lib in sorted(libs):
    if not any(os.path.realpath(lib).startswith(os.path.realpath(t) + "/") for t in trees):
        add(lib)

for path in Path("/etc/ssl/certs").glob("*"):
    add(str(path))
add("/etc/ssl/openssl.cnf")
for path in ("/etc/nsswitch.conf", "/etc/ld.so.conf"):
    add(path)
for path in Path("/etc/ld.so.conf.d").glob("*.conf"):
    add(str(path))
(root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                 "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
(root / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
subprocess.run(["ldconfig", "-r", str(root)], check=False, stderr=subprocess.DEVNULL)
PY
size=$(du -sh "$stage" | cut -f1)
tar -C "$stage" --numeric-owner -c . | docker import \
  --message "agata task root file system (host libraries; Python mounted at run time)" \
  - "$IMAGE" >/dev/null
if [ -n "$old_image" ]; then
  docker image rm "$old_image" >/dev/null 2>&1 || true  # the replaced build, unless in use
fi
log "built $IMAGE ($size) in $(( $(date +%s) - started_at ))s"
