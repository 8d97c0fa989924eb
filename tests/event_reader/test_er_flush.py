"""How often the event reader rewrites its file: every second while writing is cheap, spaced out
so that writing never takes more than a small share of a core."""

from __future__ import annotations

import pytest

from event_reader.wiring import FLUSH_INTERVAL_S, FLUSH_SHARE, flush_pause_s

pytestmark = pytest.mark.unit


def test_a_quick_write_keeps_the_one_second_pace() -> None:
    assert flush_pause_s(0.0) == FLUSH_INTERVAL_S
    assert flush_pause_s(FLUSH_SHARE * FLUSH_INTERVAL_S / 2) == FLUSH_INTERVAL_S


def test_a_slow_write_spaces_the_next_one_out_to_its_share() -> None:
    pause = flush_pause_s(0.5)
    assert pause > FLUSH_INTERVAL_S
    assert 0.5 / (pause + 0.5) <= FLUSH_SHARE
