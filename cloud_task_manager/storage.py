"""Task files (AGATA's ``tasks/task_<id>/`` layout, backed by the database) and download
credentials."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from agata_common.paths import prepare_parent, resolve_inside
from agata_contracts.common import SCRIPT_NAME_PATTERN, is_task_id
from cloud_task_manager.file_store import FileContent, FileStore
from microservice_interconnect import BadRequest, NotFound

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredFile:
    """A file written into a task folder."""

    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class IndexEntry:
    """A file this replica placed in a task folder: its sha256 and the stat it had then
    (None: unknown, hash the file again)."""

    sha256: str
    stat: tuple[int, ...] | None


def _stat_key(path: Path) -> tuple[int, ...]:
    """What changes when a file is replaced or edited: inode, size, mtime, ctime."""
    status = path.stat()
    return (status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)


def _load_index(path: Path) -> dict[str, IndexEntry]:
    """A task's saved index (empty when missing or unreadable: every copy is hashed)."""
    try:
        saved = json.loads(path.read_text())
        return {str(name): IndexEntry(str(entry["sha256"]),
                                      tuple(entry["stat"]) if entry["stat"] else None)
                for name, entry in saved.items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        logger.warning("ignoring the unreadable file index %s: %s", path, exc)
        return {}


def replace_atomically(path: Path, content: bytes) -> None:
    """Write ``content`` at ``path`` through a temporary file in the same folder, so that a
    reader sees the old bytes or the new ones, never half of them."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
    try:
        with os.fdopen(handle, "wb") as output:
            output.write(content)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_inside(folder: Path, name: str, content: bytes) -> StoredFile:
    """Write ``content`` at the relative path ``name`` under ``folder``, atomically (a reader
    never sees half of it); 400 when the path is not a task path or leaves the folder."""
    try:
        path = resolve_inside(folder, name)
        prepare_parent(folder, path)
    except ValueError as exc:
        raise BadRequest(f"cannot store {name!r}: {exc}") from None
    replace_atomically(path, content)
    return StoredFile(name, len(content), hashlib.sha256(content).hexdigest())


class TaskStorage:
    """Task files, kept in the database and cached in ``<data_dir>/tasks``.

    The database (shared by every replica) holds each file's bytes; the local folder of a task
    is this replica's copy, checked against the database's sha256 before use and repaired
    from it. Every path handed out is inside ``<data_dir>/tasks``. The files this storage
    placed are listed in ``<data_dir>/task_file_index`` with their sha256 and the stat they
    had, so an unchanged copy is not hashed again and a file the database no longer has is
    deleted, while files the task's own processes leave in its folder are not touched.
    """

    def __init__(self, data_dir: Path, max_file_bytes: int, engine: Engine) -> None:
        self.root = (data_dir / "tasks").resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_file_bytes = max_file_bytes
        self.files = FileStore(engine)
        self._index_root = data_dir / "task_file_index"
        self._indexes: dict[str, dict[str, IndexEntry]] = {}
        self._adopted: set[str] = set()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # -- public API --------------------------------------------------------------------

    def task_dir(self, task_id: str) -> Path:
        """The folder of a task, complete and current with the database: missing or stale
        files are written from it, files it no longer has are deleted."""
        folder = self._folder(task_id)
        self._adopt_local_files(task_id, folder)
        with self._lock(task_id):
            wanted = self.files.digests(task_id)
            index = self._index(task_id)
            changed = False
            stale = []
            for name, digest in wanted.items():
                path = self._placed_path(folder, name)
                if path is None:
                    continue
                current, refreshed = self._local_digest(path, index.get(name))
                if current != digest:
                    stale.append(name)
                elif refreshed is not None:
                    index[name], changed = refreshed, True
            for item in self.files.contents(task_id, stale):
                self._place(folder, index, item)
                changed = True
            for name in set(index) - set(wanted):
                path = self._placed_path(folder, name)
                if path is not None:
                    path.unlink(missing_ok=True)
                del index[name]
                changed = True
            if changed:
                self._save_index(task_id)
        return folder

    def file_path(self, task_id: str, name: str) -> Path:
        """The path of a task file (``name`` relative to the task folder), proven to lie
        inside the task folder."""
        try:
            return resolve_inside(self._folder(task_id), name)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None

    def write(self, task_id: str, name: str, content: bytes) -> StoredFile:
        """Store a task file in the database (one transaction) and in the local folder
        (atomically: a reader never sees half of it); 404 when the task does not exist."""
        if len(content) > self.max_file_bytes:
            raise BadRequest(
                f"file {name!r} is {len(content)} bytes; the limit is {self.max_file_bytes}"
            )
        folder = self._folder(task_id)
        with self._lock(task_id):
            stored = write_inside(folder, name, content)
            index = self._index(task_id)
            # Listed whatever happens next: should storing fail, the next check finds the
            # copy different from the database (or not in it) and repairs (or deletes) it.
            index[name] = IndexEntry(stored.sha256, None)
            try:
                self.files.put(task_id, name, stored.sha256, content)
                index[name] = IndexEntry(stored.sha256,
                                         _stat_key(resolve_inside(folder, name)))
            finally:
                self._save_index(task_id)
        return stored

    def read(self, task_id: str, name: str) -> bytes:
        """A task file's bytes (the local copy when it matches the database), or 404."""
        path = self.file_path(task_id, name)
        folder = self._folder(task_id)
        self._adopt_local_files(task_id, folder)
        digest = self.files.digest(task_id, name)
        if digest is None:
            raise NotFound(f"task {task_id!r} has no file {name!r}")
        if path.is_file():  # replaced atomically: read without the lock
            content = path.read_bytes()
            if hashlib.sha256(content).hexdigest() == digest:
                return content
        with self._lock(task_id):
            found = self.files.contents(task_id, [name])
            if not found:
                raise NotFound(f"task {task_id!r} has no file {name!r}")
            self._place(folder, self._index(task_id), found[0])
            self._save_index(task_id)
            return found[0].content

    def script(self, task_id: str, name: str) -> Path | None:
        """``<name>.py`` in the task folder (current with the database) when ``name`` is a
        plain script name and the task has that file, else None."""
        if not re.match(SCRIPT_NAME_PATTERN, name):
            return None
        try:
            self.read(task_id, f"{name}.py")
        except NotFound:
            return None
        return self.file_path(task_id, f"{name}.py")

    def remove(self, task_id: str, name: str) -> None:
        """Delete a task file, from the database and the local folder, if it is there."""
        path = self.file_path(task_id, name)
        with self._lock(task_id):
            self.files.delete(task_id, name)
            path.unlink(missing_ok=True)
            if self._index(task_id).pop(name, None) is not None:
                self._save_index(task_id)

    # -- the local copy ----------------------------------------------------------------

    def _folder(self, task_id: str) -> Path:
        """The task's local folder (created on demand), without checking its files."""
        if not is_task_id(task_id):
            raise BadRequest(f"task id {task_id!r} is not valid")
        folder = self.root / f"task_{task_id}"
        folder.mkdir(exist_ok=True)
        return folder

    def _lock(self, task_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(task_id, threading.Lock())

    @staticmethod
    def _placed_path(folder: Path, name: str) -> Path | None:
        """Where a file of the database goes, or None (logged) when its name is not safe."""
        try:
            return resolve_inside(folder, name)
        except ValueError as exc:
            logger.warning("not placing %r in %s: %s", name, folder, exc)
            return None

    @staticmethod
    def _local_digest(path: Path, entry: IndexEntry | None) -> tuple[str | None,
                                                                     IndexEntry | None]:
        """The local copy's sha256 (None when absent), and a fresh index entry when the
        index did not know the copy as it is (the file had to be hashed)."""
        try:
            key = _stat_key(path)
        except OSError:
            return None, None
        if not path.is_file():
            return None, None
        if entry is not None and entry.stat == key:
            return entry.sha256, None
        digest = hashlib.sha256()
        with path.open("rb") as source:
            for block in iter(lambda: source.read(1 << 20), b""):
                digest.update(block)
        fresh = IndexEntry(digest.hexdigest(), key)
        return fresh.sha256, fresh

    def _place(self, folder: Path, index: dict[str, IndexEntry], item: FileContent) -> None:
        """Write a file of the database into the local folder and list it."""
        write_inside(folder, item.name, item.content)
        index[item.name] = IndexEntry(item.sha256, _stat_key(resolve_inside(folder, item.name)))

    def _adopt_local_files(self, task_id: str, folder: Path) -> None:
        """Once per task and process: store the bytes of recorded files that only this
        replica's folder has (written before the database kept task files' bytes)."""
        if task_id in self._adopted:
            return
        unbacked = self.files.unbacked(task_id)
        with self._lock(task_id):
            index = self._index(task_id)
            for name, digest in unbacked.items():
                path = self._placed_path(folder, name)
                if path is None or not path.is_file():
                    continue
                content = path.read_bytes()
                if hashlib.sha256(content).hexdigest() != digest:
                    continue
                self.files.put_if_absent(task_id, name, digest, content)
                index[name] = IndexEntry(digest, _stat_key(path))
                logger.info("task %s: stored the bytes of %s in the database", task_id, name)
            if unbacked:
                self._save_index(task_id)
            self._adopted.add(task_id)

    def _index_file(self, task_id: str) -> Path:
        return self._index_root / f"task_{task_id}.json"

    def _index(self, task_id: str) -> dict[str, IndexEntry]:
        """The files this storage placed in the task's folder (loaded once per process)."""
        index = self._indexes.get(task_id)
        if index is None:
            index = _load_index(self._index_file(task_id))
            self._indexes[task_id] = index
        return index

    def _save_index(self, task_id: str) -> None:
        self._index_root.mkdir(exist_ok=True)
        entries = {name: {"sha256": entry.sha256, "stat": entry.stat}
                   for name, entry in self._index(task_id).items()}
        replace_atomically(self._index_file(task_id), json.dumps(entries, sort_keys=True).encode())


class Credentials:
    """Per-task download credentials: derived from a secret, only their hash is stored."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    @classmethod
    def from_config(cls, configured: str, data_dir: Path, *,
                    shared_database: bool = False) -> Credentials:
        """Use the configured secret, or one kept in ``data_dir/download.key`` (0600).

        Replicas (several managers on one database, each with its own data directory) must
        share the configured ``download_secret``: a key of one data directory derives
        credentials the other replicas refuse. The secret is never stored in the database;
        with ``shared_database`` (PostgreSQL) and no configured secret, a warning says so.
        """
        if configured:
            return cls(configured.encode())
        key_file = data_dir / "download.key"
        if shared_database:
            logger.warning(
                "[cloud_task_manager] download_secret is not set: using this data directory's "
                "key %s on a shared database; other replicas will refuse the download "
                "credentials this one derives (set the same download_secret on every replica)",
                key_file)
        if not key_file.exists():
            descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as output:
                output.write(secrets.token_hex(32))
        return cls(key_file.read_text().strip().encode())

    @staticmethod
    def new_nonce() -> str:
        """A fresh per-task nonce."""
        return secrets.token_hex(16)

    def credential(self, task_id: str, nonce: str) -> str:
        """The download credential handed to clients of a task."""
        message = f"{task_id}:{nonce}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    @staticmethod
    def digest(credential: str) -> str:
        """What is stored for a credential."""
        return hashlib.sha256(credential.encode()).hexdigest()

    @classmethod
    def matches(cls, credential: str, stored_digest: str) -> bool:
        """Constant-time check of a presented credential."""
        return hmac.compare_digest(cls.digest(credential), stored_digest)
