"""A device's id and its own credential, as both of its processes (the client gateway and the
client task manager) find them in the data directory.

The id is ``[client.params] client_id``, or one generated once and kept in
``client_info/client_id``. The secret the device got when it joined is kept in
``secrets/device_credential.json`` (mode 0600) and never logged.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

CREDENTIAL_FILE = "device_credential.json"


def device_id(configured: str, data_dir: Path) -> str:
    """The configured id, else the kept one, else a new one kept from now on (the first of the
    device's processes to ask creates it; the others read it)."""
    if configured:
        return configured
    folder = data_dir / "client_info"
    folder.mkdir(parents=True, exist_ok=True)
    id_file = folder / "client_id"
    if id_file.exists():
        stored = id_file.read_text().strip()
        if stored:
            return stored
    candidate = f"client-{secrets.token_hex(4)}"
    descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=".client_id-")
    try:
        with os.fdopen(descriptor, "w") as output:
            output.write(candidate + "\n")
        os.link(temporary, id_file)  # atomic: fails when another process put its id first
    except FileExistsError:
        return id_file.read_text().strip() or candidate
    finally:
        Path(temporary).unlink(missing_ok=True)
    logger.info("generated client id %s (kept in %s)", candidate, id_file)
    return candidate


def _credential_path(data_dir: Path) -> Path:
    return data_dir / "secrets" / CREDENTIAL_FILE


def load_secret(data_dir: Path, client_id: str) -> str | None:
    """The kept secret of ``client_id``, None when there is none (or it is another id's)."""
    path = _credential_path(data_dir)
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(stored, dict) or stored.get("client_id") != client_id:
        return None
    secret = stored.get("secret")
    return secret if isinstance(secret, str) and secret else None


def save_secret(data_dir: Path, client_id: str, secret: str) -> Path:
    """Keep the device's secret (0600, written whole or not at all); its path."""
    path = _credential_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".credential-")
    try:
        with os.fdopen(descriptor, "w") as output:
            json.dump({"client_id": client_id, "secret": secret}, output)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
