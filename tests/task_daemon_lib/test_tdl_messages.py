"""Tests of the report line format (task_daemon_lib.messages)."""

import json
import math

import pytest

from task_daemon_lib.messages import (
    ErrorMessage,
    InfoMessage,
    PrintMessage,
    StatsMessage,
    TriggerMessage,
    encode_report,
    parse_report_line,
)

pytestmark = pytest.mark.unit

ALL_MESSAGES = [
    InfoMessage(info="Started", time=1.5),
    StatsMessage(round=3, metrics={"accuracy": 0.91, "loss": 0.2}, time=2.0),
    PrintMessage(message="multi\nline ✓ 😀", time=3.0),
    ErrorMessage(exception="ValueError: boom", time=4.0),
    TriggerMessage(trigger_name="save", trigger_arguments="--path x", time=5.0),
]


@pytest.mark.parametrize("msg", ALL_MESSAGES, ids=lambda m: m.type)
def test_encode_parse_round_trip(msg):
    data = encode_report(msg)
    assert data.endswith(b"\n")
    assert data.count(b"\n") == 1  # exactly one line, even with newlines in strings
    compact = json.dumps(json.loads(data), separators=(",", ":"), ensure_ascii=False)
    assert data == compact.encode("utf-8") + b"\n"
    assert parse_report_line(data) == msg
    assert parse_report_line(data.decode("utf-8")) == msg


def test_wire_format_is_documented_shape():
    data = encode_report(TriggerMessage(trigger_name="t", time=7.0))
    assert json.loads(data) == {
        "type": "trigger",
        "trigger_name": "t",
        "trigger_arguments": "",
        "time": 7.0,
    }
    assert json.loads(encode_report(StatsMessage(round=0, time=1.0))) == {
        "type": "stats",
        "round": 0,
        "metrics": {},
        "time": 1.0,
    }


def test_time_defaults_to_now():
    import time

    before = time.time()
    msg = InfoMessage(info="x")
    assert before <= msg.time <= time.time()


def test_parse_fills_defaults_and_ignores_extra_keys():
    msg = parse_report_line('{"type":"trigger","trigger_name":"go","time":1,"extra":1}')
    assert msg == TriggerMessage(trigger_name="go", trigger_arguments="", time=1.0)
    msg = parse_report_line('  {"type":"info","info":"hi"}  \r\n')
    assert isinstance(msg, InfoMessage) and msg.info == "hi"


def test_non_finite_metrics_survive():
    data = encode_report(StatsMessage(round=1, metrics={"loss": math.nan, "x": -math.inf}))
    msg = parse_report_line(data)
    assert isinstance(msg, StatsMessage)
    assert math.isnan(msg.metrics["loss"]) and msg.metrics["x"] == -math.inf


@pytest.mark.parametrize(
    "line",
    [
        "",
        "   \n",
        b"",
        "not json",
        "{",
        "[1, 2]",
        "42",
        "null",
        "{}",
        '{"type":"nope","info":"x"}',
        '{"info":"x"}',
        '{"type":"info"}',
        '{"type":"info","info":5}',
        '{"type":"stats","round":-1,"metrics":{}}',
        '{"type":"stats","round":1.5,"metrics":{}}',
        '{"type":"stats","round":1,"metrics":{"a":"high"}}',
        '{"type":"info","info":"x","time":"yesterday"}',
        b"\xff\xfe\x00garbage",
        b'{"type":"info","info":"\xff"}',
        '@agata-report {"type":"info","info":"x"}',
    ],
)
def test_parse_garbage_returns_none(line):
    assert parse_report_line(line) is None


def test_messages_are_frozen():
    msg = InfoMessage(info="x")
    with pytest.raises(ValueError):
        msg.info = "y"
