"""The one rule shared by the cloud and a run's host for download credentials: each device of
a run gets its own, derived from the run's credential and the device's id, so one device's
credential is no use to another and all of them die with the run."""

from __future__ import annotations

import hashlib
import hmac


def device_credential(run_credential: str, client_id: str) -> str:
    """The credential device ``client_id`` is offered for a run (HMAC-SHA256, hex)."""
    return hmac.new(run_credential.encode(), client_id.encode(), hashlib.sha256).hexdigest()


def is_device_credential(presented: str, run_credential: str, client_id: str) -> bool:
    """Whether ``presented`` is ``client_id``'s credential for the run (constant time)."""
    return bool(run_credential) and hmac.compare_digest(
        presented.encode(), device_credential(run_credential, client_id).encode())
