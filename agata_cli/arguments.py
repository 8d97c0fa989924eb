"""Parsing command-line values: ``name=value`` arguments and task files."""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

ArgumentValue = str | int | float | bool

_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
TASK_FILE_SUFFIXES = (".py", ".npz", ".json")


def parse_value(raw: str) -> ArgumentValue:
    """``true``/``false`` as booleans, integers and finite decimals as numbers, else text."""
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if _INT.fullmatch(raw):
        return int(raw)
    if _FLOAT.fullmatch(raw):
        number = float(raw)
        if math.isfinite(number):
            return number
    return raw


def assignment(raw: str) -> tuple[str, ArgumentValue]:
    """An argparse type for ``name=value`` (names as the API accepts them)."""
    name, sep, value = raw.partition("=")
    name = name.strip()
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected name=value, got {raw!r}")
    if not _NAME.fullmatch(name):
        raise argparse.ArgumentTypeError(
            f"bad name in {raw!r}: use letters, digits, '_' and '-', starting with a letter")
    return name, parse_value(value)


def assignments(pairs: list[tuple[str, ArgumentValue]] | None) -> dict[str, ArgumentValue]:
    """Repeated ``name=value`` options as a dict (the last one of a name wins)."""
    return dict(pairs or [])


def task_files(files: list[str] | None, folder: str | None) -> list[Path]:
    """The files to upload: each ``--file``, plus every file of ``--from-dir`` whose suffix is
    one of ``TASK_FILE_SUFFIXES``.

    Raises ``ValueError`` saying what is wrong (missing file, empty folder, same name twice).
    """
    paths: list[Path] = []
    for name in files or []:
        path = Path(name).expanduser()
        if not path.is_file():
            raise ValueError(f"--file {name}: no such file")
        paths.append(path)
    if folder is not None:
        directory = Path(folder).expanduser()
        if not directory.is_dir():
            raise ValueError(f"--from-dir {folder}: no such directory")
        found = sorted(p for p in directory.iterdir()
                       if p.is_file() and p.suffix in TASK_FILE_SUFFIXES)
        if not found:
            raise ValueError(f"--from-dir {folder}: no *.py, *.npz or *.json files in it")
        paths.extend(found)
    by_name: dict[str, Path] = {}
    for path in paths:
        other = by_name.setdefault(path.name, path)
        if other.resolve() != path.resolve():
            raise ValueError(f"two files are named {path.name}: {other} and {path}")
    return list(by_name.values())
