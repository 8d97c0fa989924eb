"""Experiment events: the recorder, per-RPC events from the service host, the event reader."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from interconnect.mi_helpers import blocking_connection, wait_until
from pydantic import BaseModel
from support import free_port

from agata_common.config import Settings
from agata_common.runtime import cloud_runtime
from microservice_interconnect import RpcSpec
from microservice_interconnect.event_reader import EventReader, write_events
from microservice_interconnect.events import NO_EVENTS, EventRecorder
from microservice_interconnect.link import AmqpLink
from microservice_interconnect.service import rpc
from microservice_interconnect.settings import EventSettings


@pytest.fixture
def links() -> Iterator[list[AmqpLink]]:
    started: list[AmqpLink] = []
    yield started
    for link in started:
        link.close()


def read_json(path: Path) -> list[dict]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []


def reader_on(config: Settings, links: list[AmqpLink], output: Path) -> EventReader:
    link = AmqpLink(config.server_broker, name="mi_events_reader")
    links.append(link)
    reader = EventReader(link, config.events.exchange, output)
    link.start()
    assert reader.ready.wait(10)
    return reader


def recorder_on(config: Settings, links: list[AmqpLink]) -> EventRecorder:
    link = AmqpLink(config.server_broker, name="mi_events_recorder")
    links.append(link)
    recorder = EventRecorder.on_link(link, config.events)
    link.start()
    return recorder


# -- switched off ------------------------------------------------------------------------------


def test_a_recorder_switched_off_publishes_nothing_and_opens_nothing(settings: Settings, links):
    assert settings.events.register_events is False
    link = AmqpLink(settings.server_broker, name="mi_events_off")
    links.append(link)
    recorder = EventRecorder.on_link(link, settings.events)
    assert not recorder.enabled
    assert link._users == [] or all(
        not type(user).__name__.startswith("Broadcaster") for user in link._users)
    recorder.register_event("svc", "fn", "started")
    recorder.register_event("svc", "fn", "done", at=1.0)
    assert not NO_EVENTS.enabled
    NO_EVENTS.register_event("svc", "fn", "ignored")


def test_register_event_never_raises_into_the_caller():
    class Exploding:
        def publish(self, _message: BaseModel) -> None:
            raise RuntimeError("broken publisher")

    recorder = EventRecorder(Exploding())  # type: ignore[arg-type]
    recorder.register_event("svc", "fn", "lost")


# -- switched on -------------------------------------------------------------------------------


def test_events_reach_the_reader_sorted_by_time(make_settings, links, tmp_path):
    config = make_settings(AGATA_EVENTS_REGISTER_EVENTS="true")
    output = tmp_path / "out" / "events.json"
    reader = reader_on(config, links, output)
    recorder = recorder_on(config, links)

    def probe_seen() -> bool:
        recorder.register_event("test", "probe", "probe", at=0.0)
        return any(event.get("event") == "probe" for event in reader.events)

    assert wait_until(probe_seen, 10, interval=0.2)

    def mine() -> list[dict]:
        return [event for event in list(reader.events) if event.get("event") != "probe"]

    recorder.register_event("cloud_task_manager", "start_task", "third", at=3.0)
    recorder.register_event("cloud_task_manager", "start_task", "first", at=1.0)
    recorder.register_event("user_manager", "get_user_info", "second", at=2.0)
    before = time.time()
    recorder.register_event("client_task_manager", "poll", "now")
    assert wait_until(lambda: len(mine()) == 4, 5), reader.events

    reader.flush()
    written = [e for e in json.loads(output.read_text(encoding="utf-8")) if e["event"] != "probe"]
    assert isinstance(written, list)
    assert [event["event"] for event in written] == ["first", "second", "third", "now"]
    times = [event["time"] for event in written]
    assert times == sorted(times)
    assert written[0] == {"time": 1.0, "service": "cloud_task_manager",
                          "function": "start_task", "event": "first"}
    assert before - 1 <= written[-1]["time"] <= time.time() + 1
    assert not list(output.parent.glob(".events-*")), "temporary files left behind"


class Ping(BaseModel):
    text: str


PING: RpcSpec[Ping, Ping] = RpcSpec("mi_events_ping", "mi_events", Ping, Ping, "Echo.")


class Echo:
    @rpc(PING)
    def ping(self, request: Ping) -> Ping:
        return request


def test_the_service_host_records_received_and_replied_for_every_rpc(make_settings, links,
                                                                     tmp_path):
    config = make_settings(AGATA_EVENTS_REGISTER_EVENTS="true")
    reader = reader_on(config, links, tmp_path / "events.json")
    service = cloud_runtime("mi_events_service", config)
    host = service.serve(Echo())
    caller = cloud_runtime("mi_events_caller", config)
    service.start()
    caller.start()
    try:
        assert host.ready.wait(10)
        assert caller.client.call(PING, Ping(text="hi")).text == "hi"
        mine = [("mi_events_service", "mi_events_ping", "received"),
                ("mi_events_service", "mi_events_ping", "replied")]

        def recorded() -> list[tuple[str, str, str]]:
            return [(e["service"], e["function"], e["event"]) for e in list(reader.events)
                    if e.get("function") == "mi_events_ping"]

        assert wait_until(lambda: recorded() == mine, 10), recorded()
    finally:
        caller.stop()
        service.stop()


def test_reader_ignores_malformed_events(make_settings, links, tmp_path):
    config = make_settings(AGATA_EVENTS_REGISTER_EVENTS="true")
    reader = reader_on(config, links, tmp_path / "events.json")
    connection = blocking_connection(config.server_broker)
    try:
        channel = connection.channel()
        for body in (b"not json", b"[1, 2]", b'{"time": 5, "event": "ok"}'):
            channel.basic_publish(config.events.exchange, "", body)
    finally:
        connection.close()
    assert wait_until(lambda: len(reader.events) == 1, 5)
    reader.flush()
    assert read_json(tmp_path / "events.json") == [{"time": 5, "event": "ok"}]


def test_register_event_does_not_wait_for_an_unreachable_broker(make_settings, links):
    config = make_settings(AGATA_EVENTS_REGISTER_EVENTS="true",
                           AGATA_SERVER_BROKER_HOST="127.0.0.1",
                           AGATA_SERVER_BROKER_PORT=str(free_port()))
    recorder = recorder_on(config, links)
    assert recorder.enabled
    for index in range(50):
        recorder.register_event("svc", "fn", f"lost {index}")
    assert not links[0].connected


def test_event_settings_default_to_off():
    assert EventSettings().register_events is False


def test_write_events_sorts_and_replaces_atomically(tmp_path):
    path = tmp_path / "nested" / "events.json"
    write_events(path, [{"time": 2, "event": "b"}, {"time": 1, "event": "a"}, {"event": "x"}])
    assert [event["event"] for event in read_json(path)] == ["x", "a", "b"]
    write_events(path, [])
    assert read_json(path) == []
    assert sorted(p.name for p in path.parent.iterdir()) == ["events.json"]


