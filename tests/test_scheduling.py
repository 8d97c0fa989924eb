"""The suite's order for its workers: long units first, a unit's own order kept."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from scheduling import EXPECTED_S, longest_first, scope_of

pytestmark = pytest.mark.unit


@dataclass
class Item:
    nodeid: str


def test_the_browser_tests_are_one_unit_and_other_modules_their_own() -> None:
    assert scope_of("tests/web/test_web_auth.py::test_x") == "tests/web/"
    assert scope_of("tests/e2e/test_e2e_faults.py::test_y[1]") == "tests/e2e/test_e2e_faults.py"


def test_longer_units_come_first_and_each_keeps_its_order() -> None:
    items = [Item("tests/a/test_short.py::one"), Item("tests/e2e/test_e2e_flows.py::first"),
             Item("tests/a/test_short.py::two"), Item("tests/e2e/test_e2e_faults.py::only"),
             Item("tests/e2e/test_e2e_flows.py::second")]
    longest_first(items)
    assert [item.nodeid for item in items] == [
        "tests/e2e/test_e2e_faults.py::only", "tests/e2e/test_e2e_flows.py::first",
        "tests/e2e/test_e2e_flows.py::second", "tests/a/test_short.py::one",
        "tests/a/test_short.py::two"]


def test_every_listed_module_exists() -> None:
    from support import REPO_ROOT
    missing = [name for name in EXPECTED_S if not (REPO_ROOT / name).exists()]
    assert missing == []
