"""Task folders on disk (AGATA's ``tasks/task_<id>/`` layout) and download credentials."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agata_common.paths import prepare_parent, resolve_inside
from agata_contracts.common import SCRIPT_NAME_PATTERN, is_task_id
from microservice_interconnect import BadRequest, NotFound


@dataclass(frozen=True)
class StoredFile:
    """A file written into a task folder."""

    name: str
    size: int
    sha256: str


def write_inside(folder: Path, name: str, content: bytes) -> StoredFile:
    """Write ``content`` at the relative path ``name`` under ``folder``, atomically (a reader
    never sees half of it); 400 when the path is not a task path or leaves the folder."""
    try:
        path = resolve_inside(folder, name)
        prepare_parent(folder, path)
    except ValueError as exc:
        raise BadRequest(f"cannot store {name!r}: {exc}") from None
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
    try:
        with os.fdopen(handle, "wb") as output:
            output.write(content)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return StoredFile(name, len(content), hashlib.sha256(content).hexdigest())


class TaskStorage:
    """Owns ``<data_dir>/tasks``: every path it hands out is inside that folder."""

    def __init__(self, data_dir: Path, max_file_bytes: int) -> None:
        self.root = (data_dir / "tasks").resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_file_bytes = max_file_bytes

    def task_dir(self, task_id: str) -> Path:
        """The folder of a task (created on demand)."""
        if not is_task_id(task_id):
            raise BadRequest(f"task id {task_id!r} is not valid")
        folder = self.root / f"task_{task_id}"
        folder.mkdir(exist_ok=True)
        return folder

    def file_path(self, task_id: str, name: str) -> Path:
        """The path of a task file (``name`` relative to the task folder), proven to lie
        inside the task folder."""
        try:
            return resolve_inside(self.task_dir(task_id), name)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None

    def write(self, task_id: str, name: str, content: bytes) -> StoredFile:
        """Write a task file atomically (a reader never sees half of it)."""
        if len(content) > self.max_file_bytes:
            raise BadRequest(
                f"file {name!r} is {len(content)} bytes; the limit is {self.max_file_bytes}"
            )
        return write_inside(self.task_dir(task_id), name, content)

    def read(self, task_id: str, name: str) -> bytes:
        """A task file's bytes, or 404."""
        path = self.file_path(task_id, name)
        if not path.is_file():
            raise NotFound(f"task {task_id!r} has no file {name!r}")
        return path.read_bytes()

    def script(self, task_id: str, name: str) -> Path | None:
        """``<name>.py`` in the task folder when ``name`` is a plain script name, else None."""
        if not re.match(SCRIPT_NAME_PATTERN, name):
            return None
        path = self.file_path(task_id, f"{name}.py")
        return path if path.is_file() else None

    def remove(self, task_id: str, name: str) -> None:
        """Delete a task file if it is there."""
        self.file_path(task_id, name).unlink(missing_ok=True)


class Credentials:
    """Per-task download credentials: derived from a secret, only their hash is stored."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    @classmethod
    def from_config(cls, configured: str, data_dir: Path) -> Credentials:
        """Use the configured secret, or one kept in ``data_dir/download.key`` (0600)."""
        if configured:
            return cls(configured.encode())
        key_file = data_dir / "download.key"
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
