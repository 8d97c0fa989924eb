"""``agata tasks show`` lists the run's devices: who is in, since when, rounds trained, who
left and who replaced whom."""

from __future__ import annotations

import pytest

from agata_cli.commands import run_devices_lines

pytestmark = pytest.mark.unit


def test_the_runs_devices_say_who_replaced_whom() -> None:
    lines = run_devices_lines({"run": 4, "devices": 2, "min_devices": 2, "seats": [
        {"client_id": "device-0", "partition_id": 0, "joined": 0.0, "joined_after_round": 0,
         "left": 9.0, "left_after_round": 3, "why_left": "did not answer round 4 within 5 s",
         "rounds_trained": 3, "replaced": None, "replaced_by": "device-2", "rejoined": False},
        {"client_id": "device-2", "partition_id": 0, "joined": 10.0, "joined_after_round": 3,
         "left": None, "rounds_trained": 5, "replaced": "device-0", "replaced_by": None,
         "rejoined": False}]})
    assert lines[0] == "devices of run 4 (1 in of 2, at least 2):"
    text = "\n".join(lines)
    assert "left after round 3: did not answer round 4 within 5 s; replaced by device-2" in text
    assert "replaced device-0 1970-01-01 00:00:10 after round 3" in text
    assert [line.split()[0] for line in lines[2:]] == ["device-0", "device-2"]
