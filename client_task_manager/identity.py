"""Who this client is and the stats it reports (AGATA's ``client_info`` folder)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from pydantic import ValidationError

from agata_common.config import ClientParams
from agata_common.device_identity import device_id
from agata_contracts.users import UpdateUserInfoRequest

logger = logging.getLogger(__name__)


class ClientIdentity:
    """The client id (configured, or generated once and kept) and the current stats.

    Stats come from ``[client.params]`` (``data_qnt``, ``sensors``) unless
    ``<client_info>/stats.json`` exists; that file may change while the manager runs (a device
    agent updating it), and each change is reported.
    """

    def __init__(self, params: ClientParams, client_info_dir: Path) -> None:
        self.params = params
        self.folder = client_info_dir
        self.folder.mkdir(parents=True, exist_ok=True)
        self.client_id = device_id(params.client_id, client_info_dir.parent)
        self.stats_file = self.folder / "stats.json"
        self._last_signature: tuple[float, int] | None = None
        self._last_stats: UpdateUserInfoRequest | None = None

    def _configured(self) -> UpdateUserInfoRequest:
        sensors = [s.strip() for s in self.params.sensors.split(",") if s.strip()]
        return UpdateUserInfoRequest(user_id=self.client_id, data_qnt=self.params.data_qnt,
                                     sensors=sensors)

    def stats(self) -> UpdateUserInfoRequest:
        """The stats to report now (the file's, when present and valid)."""
        try:
            stat = os.stat(self.stats_file)
        except FileNotFoundError:
            return self._last_stats_or(self._configured(), None)
        signature = (stat.st_mtime, stat.st_size)
        if signature == self._last_signature and self._last_stats is not None:
            return self._last_stats
        try:
            values = json.loads(self.stats_file.read_text())
            if not isinstance(values, dict):
                raise ValueError("stats.json must hold a JSON object")
            values["user_id"] = self.client_id
            stats = UpdateUserInfoRequest.model_validate(values)
        except (ValueError, ValidationError) as exc:
            logger.warning("ignoring %s: %s", self.stats_file, exc)
            stats = self._last_stats or self._configured()
        return self._last_stats_or(stats, signature)

    def _last_stats_or(self, stats: UpdateUserInfoRequest,
                       signature: tuple[float, int] | None) -> UpdateUserInfoRequest:
        self._last_signature = signature
        self._last_stats = stats
        return stats
