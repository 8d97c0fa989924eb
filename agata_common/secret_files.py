"""Secrets kept in files that only their owner may read, never in the environment.

A secret key of the configuration (``api_token``, ``password``, ...) has a file form
(``api_token_file``, ``password_file``) naming such a file: the file must be a regular file
with no permission for group or others (``chmod 600``), and its content, without the trailing
newline, is the secret. ``agata up`` writes the files of the processes it starts this way.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

MAX_SECRET_BYTES = 4096


class SecretFileError(ValueError):
    """A secret file is missing, unreadable, readable by others, empty or too large."""


def read_secret_file(name: str) -> str:
    """The secret kept in the file ``name`` (``~`` expanded), checked first."""
    path = Path(name).expanduser()
    try:
        with path.open("rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise SecretFileError(f"secret file {path} is not a regular file")
            if info.st_mode & 0o077:
                raise SecretFileError(
                    f"secret file {path} is readable by others (mode "
                    f"{stat.S_IMODE(info.st_mode):04o}): run chmod 600 {path}")
            raw = handle.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise SecretFileError(f"cannot read secret file {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_SECRET_BYTES:
        raise SecretFileError(f"secret file {path} is larger than {MAX_SECRET_BYTES} bytes")
    try:
        value = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SecretFileError(f"secret file {path} is not UTF-8 text") from None
    if not value:
        raise SecretFileError(f"secret file {path} is empty")
    return value


def write_secret_file(path: Path, value: str) -> Path:
    """Write ``value`` to ``path`` (mode 0600, its folder 0700 when made here), replacing what
    was there atomically; return the path."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(descriptor, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as output:
            output.write(value + "\n")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def kept_or_new_secret(path: Path, random_bytes: int, min_length: int) -> tuple[str, bool]:
    """The secret kept in ``path`` and False, or a new random one (``random_bytes`` of
    entropy) written there first (0600, its folder 0700) and True. ``ValueError`` when the
    kept one is shorter than ``min_length``."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        kept = path.read_text(encoding="utf-8").strip()
        if len(kept) < min_length:
            raise ValueError(f"the secret in {path} is too short") from None
        return kept, False
    value = secrets.token_urlsafe(random_bytes)
    with os.fdopen(descriptor, "w", encoding="utf-8") as output:
        output.write(value + "\n")
    return value, True
