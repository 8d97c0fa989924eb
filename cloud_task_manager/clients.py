"""Clients' stats kept in memory for polls, fresh by the user manager's change broadcasts.

A poll needs the polling client's stats. Asking the user manager costs two broker messages and
a hop per poll; instead the first poll of a client asks, and every later change arrives as a
broadcast. An entry is trusted only while the subscription that kept it fresh is the same
connection (changes sent during a reconnect are missed) and for at most ``max_age_s`` (changes
the user manager could not broadcast are missed too).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from agata_contracts.users import UserInfo

ClientLookup = Callable[[str], UserInfo]
"""Fetches a client's stats by id (raises ``NotFound`` for an unknown client)."""


@dataclass(frozen=True)
class _Entry:
    info: UserInfo
    connection: int
    expires: float


class ClientCache:
    """``lookup`` with memory: ``changed`` feeds it broadcasts, ``connection`` says which
    subscription connection is current (0 or a change of value: not fresh)."""

    def __init__(self, lookup: ClientLookup, connection: Callable[[], int], *,
                 max_age_s: float = 10.0, max_entries: int = 100_000) -> None:
        self._lookup = lookup
        self._connection = connection
        self.max_age_s = max_age_s
        self.max_entries = max_entries
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def _put(self, info: UserInfo, connection: int) -> None:
        with self._lock:
            current = self._entries.get(info.id)
            if current is not None and current.info.modified > info.modified:
                return  # a broadcast newer than this answer already arrived
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[info.id] = _Entry(info, connection, time.monotonic() + self.max_age_s)

    def lookup(self, client_id: str) -> UserInfo:
        """The client's stats: from memory while fresh, else from the user manager."""
        connection = self._connection()
        with self._lock:
            entry = self._entries.get(client_id)
        if (entry is not None and connection and entry.connection == connection
                and entry.expires > time.monotonic()):
            return entry.info
        info = self._lookup(client_id)
        if connection:
            self._put(info, connection)
        return info

    def changed(self, info: UserInfo) -> None:
        """A broadcast: the client's stats changed (or it registered)."""
        connection = self._connection()
        if connection:
            self._put(info, connection)
