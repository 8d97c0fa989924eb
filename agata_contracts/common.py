"""Types shared by every contract: ids, names, addresses, arguments, and their one rule each.

Each rule is written once here, as a pattern or a check function, and used by the pydantic
types below, by the services that build paths from these values, and by devices checking what
an offer carries.
"""

from __future__ import annotations

import re
from typing import Annotated, Final

from pydantic import AfterValidator, Field, StringConstraints

TASK_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
CLIENT_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
FILE_NAME_PATTERN: Final = r"^(?!.*\.\.)[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$"
SCRIPT_NAME_PATTERN: Final = r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$"
ARGUMENT_NAME_PATTERN: Final = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"
HOST_PATTERN: Final = r"^[A-Za-z0-9]([A-Za-z0-9.:-]{0,251}[A-Za-z0-9])?$"
MAX_PATH_DEPTH: Final = 8
MAX_PATH_LENGTH: Final = 512
MAX_OFFSET: Final = 1_000_000_000
"""The largest paging offset a request may give (a database integer holds it)."""
MAX_RUN: Final = 1_000_000_000
"""The largest run number a request may name."""
TASK_PATH_PATTERN: Final = (
    r"^(?!.*\.\.)[A-Za-z0-9_][A-Za-z0-9._-]{0,127}(/[A-Za-z0-9_][A-Za-z0-9._-]{0,127}){0,7}$"
)

_TASK_ID = re.compile(TASK_ID_PATTERN)
_FILE_NAME = re.compile(FILE_NAME_PATTERN)


def is_task_id(value: str) -> bool:
    """Whether ``value`` is a valid task id (safe to put in a folder name)."""
    return bool(_TASK_ID.match(value))


def check_file_name(name: str) -> str:
    """Return ``name`` if it is a plain file name; otherwise raise ``ValueError`` saying why."""
    if not name:
        raise ValueError("file name is empty")
    if "\x00" in name:
        raise ValueError(f"file name {name!r} contains a NUL character")
    if "/" in name or "\\" in name:
        raise ValueError(f"file name {name!r} contains a path separator; give a plain file name")
    if ".." in name:
        raise ValueError(f"file name {name!r} contains '..'")
    if len(name) > 128:
        raise ValueError("file name is longer than 128 characters")
    if not _FILE_NAME.match(name):
        raise ValueError(
            f"file name {name!r} has characters other than letters, digits, '.', '_' and '-'"
            " (or starts with '.' or '-')"
        )
    return name


def check_task_path(path: str) -> str:
    """Return ``path`` if it is a relative path inside a task: plain names joined by ``/``.

    No absolute path, no ``..``, no empty or hidden segment, at most ``MAX_PATH_DEPTH`` deep;
    otherwise ``ValueError`` saying what is wrong.
    """
    if not path:
        raise ValueError("path is empty")
    if len(path) > MAX_PATH_LENGTH:
        raise ValueError(f"path is longer than {MAX_PATH_LENGTH} characters")
    if path.startswith("/"):
        raise ValueError(f"path {path!r} is absolute; give a path relative to the task folder")
    if "\\" in path:
        raise ValueError(f"path {path!r} contains '\\'; separate folders with '/'")
    parts = path.split("/")
    if len(parts) > MAX_PATH_DEPTH:
        raise ValueError(f"path {path!r} is more than {MAX_PATH_DEPTH} folders deep")
    for part in parts:
        if not part:
            raise ValueError(f"path {path!r} has an empty folder name")
        try:
            check_file_name(part)
        except ValueError as exc:
            raise ValueError(f"path {path!r}: {exc}") from None
    return path


TaskId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=TASK_ID_PATTERN),
    Field(description="Task id: letters, digits, '_' and '-' (max 64), e.g. 4fe5."),
]
ClientId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=CLIENT_ID_PATTERN),
    Field(description="The client's id: letters, digits, '_', '.', ':', '-' (max 64)."),
]
TaskPath = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_PATH_LENGTH,
        description="A file of the task, relative to its folder: plain names joined by '/' "
        "(e.g. server.py or app/client_app.py); no '..', no absolute path.",
        json_schema_extra={"pattern": TASK_PATH_PATTERN},
    ),
    AfterValidator(check_task_path),
]
Host = Annotated[
    str,
    StringConstraints(min_length=1, max_length=253, pattern=HOST_PATTERN),
    Field(description="Host name or IP address the task's Flower server listens on."),
]
Port = Annotated[int, Field(ge=1, le=65535, description="TCP port of the task's Flower server.")]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=64, strip_whitespace=True)]
SensorName = Annotated[str, StringConstraints(min_length=1, max_length=64, strip_whitespace=True)]
ArgumentName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=ARGUMENT_NAME_PATTERN)
]
ArgumentValue = str | int | float | bool
