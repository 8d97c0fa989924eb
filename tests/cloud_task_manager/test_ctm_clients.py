"""ClientCache: stats from memory while a broadcast keeps them fresh, else from the source."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agata_contracts.users import UserInfo
from cloud_task_manager.clients import ClientCache

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def info(client_id: str, data_qnt: int, modified: datetime = T0) -> UserInfo:
    return UserInfo(id=client_id, data_qnt=data_qnt, avg_acc_contrib=None,
                    avg_disconnection_per_round=None, sensors=[], created=T0,
                    modified=modified, last_seen=modified, online=True)


class Source:
    """The user manager as the cache sees it: counts its lookups."""

    def __init__(self) -> None:
        self.stats = {"dev": info("dev", 1)}
        self.calls = 0

    def lookup(self, client_id: str) -> UserInfo:
        self.calls += 1
        return self.stats[client_id]


def test_a_client_is_asked_for_once_and_then_kept_fresh_by_broadcasts() -> None:
    source, connection = Source(), [1]
    cache = ClientCache(source.lookup, lambda: connection[0])
    assert cache.lookup("dev").data_qnt == 1
    assert cache.lookup("dev").data_qnt == 1
    assert source.calls == 1
    cache.changed(info("dev", 7, T0 + timedelta(seconds=1)))
    assert cache.lookup("dev").data_qnt == 7 and source.calls == 1
    # an answer older than a broadcast already in hand does not win
    cache.changed(info("dev", 9, T0 + timedelta(seconds=3)))
    source.stats["dev"] = info("dev", 8, T0 + timedelta(seconds=2))
    cache._put(source.lookup("dev"), 1)
    assert cache.lookup("dev").data_qnt == 9


def test_without_a_current_subscription_or_past_max_age_the_source_is_asked() -> None:
    source, connection = Source(), [0]
    cache = ClientCache(source.lookup, lambda: connection[0])
    cache.lookup("dev")
    cache.lookup("dev")
    assert source.calls == 2  # not subscribed: nothing is kept
    connection[0] = 1
    cache.lookup("dev")
    cache.lookup("dev")
    assert source.calls == 3
    connection[0] = 2  # reconnected: broadcasts may have been missed meanwhile
    cache.lookup("dev")
    assert source.calls == 4
    aged = ClientCache(source.lookup, lambda: 1, max_age_s=0)
    aged.lookup("dev")
    aged.lookup("dev")
    assert source.calls == 6
