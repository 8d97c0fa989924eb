"""Experiment events: register_event, the publisher and the event reader (in-process and CLI)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from interconnect.mi_helpers import blocking_connection, wait_until
from support import REPO_ROOT, free_port, isolated_environ

from agata_common.config import EventSettings, Settings, load_settings
from microservice_interconnect import events
from microservice_interconnect.event_reader import EventReader, write_events
from microservice_interconnect.events import register_event
from microservice_interconnect.link import AmqpLink


@pytest.fixture(autouse=True)
def events_reset() -> Iterator[None]:
    """Every test starts and ends with no publisher and events off."""
    events.reset_for_tests(False)
    yield
    events.reset_for_tests(False)


@pytest.fixture
def links() -> Iterator[list[AmqpLink]]:
    started: list[AmqpLink] = []
    yield started
    for link in started:
        link.close()


def publisher_ready() -> bool:
    publisher = events._publisher
    return publisher is not None and publisher._channel is not None


def read_json(path: Path) -> list[dict]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []


# -- switched off ------------------------------------------------------------------------------


def test_register_event_is_a_no_op_when_off(settings: Settings, links):
    assert settings.events.register_events is False
    link = AmqpLink(settings.server_broker, name="mi_events_off")
    links.append(link)
    events.configure_events(link, settings.events)
    link.start()
    register_event("svc", "fn", "started")
    register_event("svc", "fn", "done", at=1.0)
    assert events._publisher is None
    assert wait_until(lambda: link.connected, 10)
    assert not any(isinstance(user, events.EventPublisher) for user in link._users)

    events.configure_events(None, EventSettings(register_events=False))
    register_event("svc", "fn", "ignored")
    assert events._publisher is None


def test_register_event_never_raises(monkeypatch):
    def broken() -> Settings:
        raise RuntimeError("configuration exploded")

    monkeypatch.setattr(events, "settings", broken)
    events.reset_for_tests(None)  # not configured: register_event falls back to settings()
    register_event("svc", "fn", "lost")  # no exception escapes
    events.reset_for_tests(True)  # on, but no publisher
    register_event("svc", "fn", "lost too")


def test_default_publisher_follows_the_process_settings(monkeypatch, make_settings):
    off = make_settings()
    monkeypatch.setattr(events, "settings", lambda: off)
    events.reset_for_tests(None)
    register_event("svc", "fn", "nothing")
    assert events._publisher is None
    assert events._enabled is False


# -- switched on -------------------------------------------------------------------------------


def test_events_reach_the_reader_sorted_by_time(make_settings, links, tmp_path):
    config = make_settings(AGATA_EVENTS_REGISTER_EVENTS="true")
    output = tmp_path / "out" / "events.json"
    link = AmqpLink(config.server_broker, name="mi_events")
    links.append(link)
    reader = EventReader(link, config.events.exchange, output)
    events.configure_events(link, config.events)
    link.start()
    assert reader.ready.wait(10)
    assert wait_until(publisher_ready, 10)

    register_event("cloud_task_manager", "start_task", "third", at=3.0)
    register_event("cloud_task_manager", "start_task", "first", at=1.0)
    register_event("user_manager", "get_user_info", "second", at=2.0)
    before = time.time()
    register_event("client_task_manager", "poll", "now")
    assert wait_until(lambda: len(reader.events) == 4, 5), reader.events

    assert reader.flush() == 4
    written = json.loads(output.read_text(encoding="utf-8"))
    assert isinstance(written, list)
    assert [event["event"] for event in written] == ["first", "second", "third", "now"]
    times = [event["time"] for event in written]
    assert times == sorted(times)
    assert written[0] == {"time": 1.0, "service": "cloud_task_manager",
                          "function": "start_task", "event": "first"}
    assert before - 1 <= written[-1]["time"] <= time.time() + 1
    assert not list(output.parent.glob(".events-*")), "temporary files left behind"


def test_reader_ignores_malformed_events(make_settings, links, tmp_path):
    config = make_settings(AGATA_EVENTS_REGISTER_EVENTS="true")
    link = AmqpLink(config.server_broker, name="mi_events_malformed")
    links.append(link)
    reader = EventReader(link, config.events.exchange, tmp_path / "events.json")
    link.start()
    assert reader.ready.wait(10)
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


def test_register_event_does_not_block_when_the_broker_is_unreachable(make_settings, links):
    config = make_settings(AGATA_EVENTS_REGISTER_EVENTS="true",
                           AGATA_SERVER_BROKER_HOST="127.0.0.1",
                           AGATA_SERVER_BROKER_PORT=str(free_port()))
    link = AmqpLink(config.server_broker, name="mi_events_unreachable").start()
    links.append(link)
    events.configure_events(link, config.events)
    started = time.monotonic()
    for index in range(50):
        register_event("svc", "fn", f"lost {index}")
    assert time.monotonic() - started < 0.5
    assert not link.connected


def test_lazy_default_publisher_with_the_broker_unreachable(monkeypatch, make_settings):
    config = make_settings(AGATA_EVENTS_REGISTER_EVENTS="true",
                           AGATA_SERVER_BROKER_HOST="127.0.0.1",
                           AGATA_SERVER_BROKER_PORT=str(free_port()))
    monkeypatch.setattr(events, "settings", lambda: config)
    events.reset_for_tests(None)
    try:
        started = time.monotonic()
        register_event("svc", "fn", "lost")
        register_event("svc", "fn", "lost again")
        assert time.monotonic() - started < 0.5
        assert events._publisher is not None
    finally:
        if events._publisher is not None:
            events._publisher.link.close()


def test_write_events_sorts_and_replaces_atomically(tmp_path):
    path = tmp_path / "nested" / "events.json"
    write_events(path, [{"time": 2, "event": "b"}, {"time": 1, "event": "a"}, {"event": "x"}])
    assert [event["event"] for event in read_json(path)] == ["x", "a", "b"]
    write_events(path, [])
    assert read_json(path) == []
    assert sorted(p.name for p in path.parent.iterdir()) == ["events.json"]


# -- the command line reader -------------------------------------------------------------------


def test_event_reader_process_writes_events_on_sigterm(tmp_path, links):
    environ = isolated_environ(tmp_path, AGATA_EVENTS_REGISTER_EVENTS="true")
    config = load_settings(environ=environ)
    output = tmp_path / "events.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "microservice_interconnect.event_reader", "--output", str(output)],
        cwd=REPO_ROOT, env={**os.environ, **environ},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        link = AmqpLink(config.server_broker, name="mi_events_cli").start()
        links.append(link)
        events.configure_events(link, config.events)
        assert wait_until(publisher_ready, 10)

        # the reader is consuming once a probe shows up in the file it flushes every second
        probes = 0

        def probe_seen() -> bool:
            nonlocal probes
            probes += 1
            register_event("test", "probe", "probe", at=0.0)
            return any(event.get("event") == "probe" for event in read_json(output))

        assert wait_until(probe_seen, 15, interval=0.3), process.poll()

        register_event("svc_b", "train", "round 2", at=2_000_000_002.0)
        register_event("svc_a", "train", "round 1", at=2_000_000_001.0)
        register_event("svc_c", "train", "round 3", at=2_000_000_003.0)
        wanted = ["round 1", "round 2", "round 3"]
        assert wait_until(
            lambda: [e["event"] for e in read_json(output) if e["event"] != "probe"] == wanted,
            5)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _, stderr = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
    assert process.returncode == 0, stderr

    written = json.loads(output.read_text(encoding="utf-8"))
    assert isinstance(written, list)
    times = [event["time"] for event in written]
    assert times == sorted(times)
    assert [e["event"] for e in written if e["event"] != "probe"] == wanted
    assert written[-1] == {"time": 2_000_000_003.0, "service": "svc_c", "function": "train",
                           "event": "round 3"}
    assert f"wrote {len(written)} events" in stderr


def test_event_reader_process_reports_a_bad_config(tmp_path):
    environ = isolated_environ(tmp_path, AGATA_SERVER_BROKER_PORT="not a port")
    result = subprocess.run(
        [sys.executable, "-m", "microservice_interconnect.event_reader",
         "--output", str(tmp_path / "events.json")],
        cwd=REPO_ROOT, env={**os.environ, **environ}, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2
    assert "AGATA_SERVER_BROKER_PORT" in result.stderr
