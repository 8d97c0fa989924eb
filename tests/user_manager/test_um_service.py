"""The user manager over RabbitMQ on SQLite and PostgreSQL: upsert, get, list, validation."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from support import Cloud, start_cloud

from agata_contracts.users import GET_USER_INFO, LIST_USERS, UPDATE_USER_INFO
from microservice_interconnect import NotFound, wire


def raw_call(cloud: Cloud, name: str, body: dict[str, Any] | bytes) -> tuple[int, Any, dict]:
    """Send a body the client-side model would refuse; return (status, return, envelope)."""
    data = body if isinstance(body, bytes) else wire.dumps(body)
    return wire.split_reply(cloud.client.call_raw(name, data))


def test_upsert_creates_then_updates_only_sent_fields(cloud_on_each_db: Cloud) -> None:
    client = cloud_on_each_db.client
    created = client.call(UPDATE_USER_INFO, {"user_id": "dev-1", "data_qnt": 40,
                                             "sensors": ["camera", "gps"]})
    assert (created.id, created.data_qnt, created.sensors) == ("dev-1", 40, ["camera", "gps"])
    assert created.avg_acc_contrib is None and created.avg_disconnection_per_round is None
    assert created.created == created.modified == created.last_seen

    updated = client.call(UPDATE_USER_INFO, {"user_id": "dev-1", "avg_acc_contrib": 0.25})
    assert updated.data_qnt == 40
    assert updated.sensors == ["camera", "gps"]
    assert updated.avg_acc_contrib == 0.25
    assert updated.created == created.created
    assert updated.modified > created.modified
    assert updated.last_seen > created.last_seen

    fetched = client.call(GET_USER_INFO, {"user_id": "dev-1"})
    assert fetched == updated


def test_modified_only_changes_with_a_value_but_last_seen_always(
        cloud_on_each_db: Cloud) -> None:
    client = cloud_on_each_db.client
    first = client.call(UPDATE_USER_INFO, {"user_id": "dev-2", "data_qnt": 7,
                                           "sensors": ["gps"], "avg_acc_contrib": 0.5})
    same = client.call(UPDATE_USER_INFO, {"user_id": "dev-2", "data_qnt": 7,
                                          "sensors": ["gps"], "avg_acc_contrib": 0.5})
    assert same.modified == first.modified
    assert same.last_seen > first.last_seen
    heartbeat = client.call(UPDATE_USER_INFO, {"user_id": "dev-2"})
    assert heartbeat.modified == first.modified
    assert heartbeat.last_seen > same.last_seen
    assert (heartbeat.data_qnt, heartbeat.sensors) == (7, ["gps"])
    changed = client.call(UPDATE_USER_INFO, {"user_id": "dev-2", "sensors": ["gps", "imu"]})
    assert changed.modified > first.modified
    assert changed.modified == changed.last_seen
    stored = client.call(GET_USER_INFO, {"user_id": "dev-2"})
    assert stored.modified == changed.modified and stored.last_seen == changed.last_seen


def test_get_unknown_client_is_404_with_a_clear_message(cloud_on_each_db: Cloud) -> None:
    with pytest.raises(NotFound) as info:
        cloud_on_each_db.client.call(GET_USER_INFO, {"user_id": "nobody"})
    assert "nobody" in info.value.message and "not registered" in info.value.message
    status, _, envelope = raw_call(cloud_on_each_db, GET_USER_INFO.name, {"user_id": "ghost"})
    assert status == 404 and "ghost" in envelope["exception"]


def test_list_pages_most_recently_seen_first_with_total(cloud_on_each_db: Cloud) -> None:
    client = cloud_on_each_db.client
    assert client.call(LIST_USERS, {}).model_dump() == {"users": [], "total": 0}
    for index in range(5):
        client.call(UPDATE_USER_INFO, {"user_id": f"c{index}", "data_qnt": index})
    client.call(UPDATE_USER_INFO, {"user_id": "c0"})  # seen again: now the most recent

    pages = [client.call(LIST_USERS, {"limit": 2, "offset": offset}) for offset in (0, 2, 4)]
    assert [page.total for page in pages] == [5, 5, 5]
    assert [len(page.users) for page in pages] == [2, 2, 1]
    ids = [user.id for page in pages for user in page.users]
    assert ids == ["c0", "c4", "c3", "c2", "c1"]
    seen = [user.last_seen for page in pages for user in page.users]
    assert seen == sorted(seen, reverse=True)

    beyond = client.call(LIST_USERS, {"limit": 10, "offset": 50})
    assert (beyond.users, beyond.total) == ([], 5)
    assert client.call(LIST_USERS, {"limit": 1000}).total == 5


INVALID_UPDATES = [
    ({"user_id": "dev", "data_qnt": -1}, "data_qnt"),
    ({"user_id": "dev", "data_qnt": "many"}, "data_qnt"),
    ({"user_id": "../x"}, "user_id"),
    ({"user_id": "a b"}, "user_id"),
    ({"user_id": ""}, "user_id"),
    ({"user_id": "x" * 65}, "user_id"),
    ({"user_id": "dev", "avg_acc_contrib": 2.0}, "avg_acc_contrib"),
    ({"user_id": "dev", "avg_disconnection_per_round": -0.5}, "avg_disconnection_per_round"),
    ({"user_id": "dev", "sensors": "camera"}, "sensors"),
    ({"user_id": "dev", "is_admin": True}, "is_admin"),
    ({"data_qnt": 3}, "user_id"),
]


def test_invalid_update_is_400_naming_the_field(cloud_on_each_db: Cloud) -> None:
    for body, field in INVALID_UPDATES:
        status, _, envelope = raw_call(cloud_on_each_db, UPDATE_USER_INFO.name, body)
        assert status == 400, (body, envelope)
        fields = [problem["field"] for problem in envelope["errors"]]
        assert any(name == field or name.startswith(f"{field}.") for name in fields), envelope
        assert field in envelope["exception"]
    # Nothing was stored by a refused request.
    assert cloud_on_each_db.client.call(LIST_USERS, {}).total == 0


def test_invalid_get_and_list_requests_are_400(cloud_on_each_db: Cloud) -> None:
    for name, body, field in [
        (GET_USER_INFO.name, {"user_id": "a/b"}, "user_id"),
        (GET_USER_INFO.name, {"user_id": "a", "extra": 1}, "extra"),
        (LIST_USERS.name, {"limit": 0}, "limit"),
        (LIST_USERS.name, {"offset": -1}, "offset"),
    ]:
        status, _, envelope = raw_call(cloud_on_each_db, name, body)
        assert status == 400, envelope
        assert field in [problem["field"] for problem in envelope["errors"]]
    status, _, envelope = raw_call(cloud_on_each_db, UPDATE_USER_INFO.name, b"{not json")
    assert status == 400 and "JSON" in envelope["exception"]


def test_concurrent_upserts_of_one_new_client_all_succeed(cloud_on_each_db: Cloud) -> None:
    client = cloud_on_each_db.client

    def upsert(index: int) -> int:
        return client.call(UPDATE_USER_INFO, {"user_id": f"burst-{index % 2}",
                                              "data_qnt": index}).data_qnt

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(upsert, range(24)))
    assert sorted(results) == list(range(24))
    listed = client.call(LIST_USERS, {})
    assert sorted(user.id for user in listed.users) == ["burst-0", "burst-1"]


def test_a_client_not_heard_from_within_lost_after_s_is_lost_until_its_next_beat(
        make_settings, database_url: str) -> None:
    settings = make_settings(AGATA_USER_MANAGER_LOST_AFTER_S="1.5",
                             AGATA_USER_MANAGER_CACHE_TTL_S="0")
    cloud = start_cloud(settings, database_url)
    try:
        beat = cloud.client.call(UPDATE_USER_INFO, {"user_id": "dev-hb"})
        assert beat.online
        time.sleep(1.7)  # longer than lost_after_s: time itself is what is tested
        assert not cloud.client.call(GET_USER_INFO, {"user_id": "dev-hb"}).online
        listed = cloud.client.call(LIST_USERS, {}).users
        assert [u.online for u in listed if u.id == "dev-hb"] == [False]
        assert cloud.client.call(UPDATE_USER_INFO, {"user_id": "dev-hb"}).online
        assert cloud.client.call(GET_USER_INFO, {"user_id": "dev-hb"}).online
    finally:
        cloud.stop()
