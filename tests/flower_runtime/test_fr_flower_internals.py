"""Every non-public part of Flower the project uses is still where it was: when a Flower release
moves one, this test names it and the supported range."""

from __future__ import annotations

import importlib

import pytest

from flower_runtime.flower_internals import INTERNALS, SUPPORTED_FLOWER, flower_version, moved

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("module", "name"), INTERNALS, ids=[f"{m}.{n}" for m, n in INTERNALS])
def test_flowers_internal_part_is_where_the_runtime_takes_it(module: str, name: str) -> None:
    try:
        found = importlib.import_module(module)
    except ImportError as exc:
        pytest.fail(str(moved(exc)))
    assert hasattr(found, name), (f"Flower {flower_version()} has no {module}.{name}; "
                                  f"this runtime supports flwr{SUPPORTED_FLOWER}")


def test_the_installed_flower_is_in_the_supported_range() -> None:
    major_minor = tuple(int(part) for part in flower_version().split(".")[:2])
    assert major_minor == (1, 41), f"flwr {flower_version()} is not flwr{SUPPORTED_FLOWER}"


def test_a_moved_part_is_named_with_the_supported_range() -> None:
    error = moved(ImportError("cannot import name 'make_message'"))
    assert "make_message" in str(error) and SUPPORTED_FLOWER in str(error)
