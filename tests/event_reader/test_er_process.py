"""``python -m event_reader``: a real process collecting events into events.json."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from interconnect.mi_helpers import wait_until
from support import REPO_ROOT, isolated_environ

from agata_common.config import load_settings
from microservice_interconnect.events import EventRecorder
from microservice_interconnect.link import AmqpLink


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


def test_event_reader_process_writes_events_on_sigterm(tmp_path, links):
    environ = isolated_environ(tmp_path, AGATA_EVENTS_REGISTER_EVENTS="true")
    config = load_settings(environ=environ)
    output = tmp_path / "events.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "event_reader", "--output", str(output)],
        cwd=REPO_ROOT, env={**os.environ, **environ},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        link = AmqpLink(config.server_broker, name="er_events_cli")
        links.append(link)
        recorder = EventRecorder.on_link(link, config.events)
        link.start()

        # the reader is consuming once a probe shows up in the file it flushes every second
        def probe_seen() -> bool:
            recorder.register_event("test", "probe", "probe", at=0.0)
            return any(event.get("event") == "probe" for event in read_json(output))

        assert wait_until(probe_seen, 15, interval=0.3), process.poll()

        recorder.register_event("svc_b", "train", "round 2", at=2_000_000_002.0)
        recorder.register_event("svc_a", "train", "round 1", at=2_000_000_001.0)
        recorder.register_event("svc_c", "train", "round 3", at=2_000_000_003.0)
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
        [sys.executable, "-m", "event_reader",
         "--output", str(tmp_path / "events.json")],
        cwd=REPO_ROOT, env={**os.environ, **environ}, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2
    assert "AGATA_SERVER_BROKER_PORT" in result.stderr
