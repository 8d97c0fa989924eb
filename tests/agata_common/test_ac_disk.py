"""Telling a full disk: free space against a floor, and the errors that mean "no space"."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from agata_common.disk import disk_space, is_disk_full_error

pytestmark = pytest.mark.unit


def test_a_disk_under_its_floor_is_full_and_says_where(tmp_path: Path) -> None:
    roomy = disk_space(tmp_path, 0)
    assert roomy is not None and not roomy.full and "disk full" not in roomy.describe()
    tight = disk_space(tmp_path, 2**40)  # a floor of a TiB
    assert tight is not None and tight.full
    assert tight.describe().startswith("disk full: ") and str(tmp_path) in tight.describe()
    assert disk_space(tmp_path / "gone", 1) is None


def test_disk_full_errors_are_told_apart_however_they_are_wrapped() -> None:
    assert is_disk_full_error(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full_error(OSError(errno.EDQUOT, "Disk quota exceeded"))
    wrapped = OperationalError("INSERT ...", {}, sqlite3.OperationalError(
        "database or disk is full"))
    assert is_disk_full_error(wrapped)
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise RuntimeError("could not store the round") from exc
    except RuntimeError as chained:
        assert is_disk_full_error(chained)
    assert not is_disk_full_error(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full_error(OperationalError("SELECT", {}, sqlite3.OperationalError(
        "database is locked")))
