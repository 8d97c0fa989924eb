"""The shared rules: task paths and file names."""

import pytest

from agata_contracts.common import check_file_name, check_task_path

pytestmark = pytest.mark.unit

GOOD = ["server.py", "app/client_app.py", "a/b/c/d/e/f/g/h.py", "data_1.npz", "_init.py"]
BAD = {
    "": "empty",
    "/etc/passwd": "absolute",
    "../x.py": "'..'",
    "a/../b.py": "'..'",
    "a//b.py": "empty folder name",
    "a/.env": "starts with '.'",
    ".env": "starts with '.'",
    "a\\b.py": "'\\'",
    "a/b/c/d/e/f/g/h/i.py": "more than 8 folders deep",
    "a/b.py\x00": "NUL character",
    "x" * 600: "longer than",
}


@pytest.mark.parametrize("path", GOOD)
def test_good_paths_pass_unchanged(path: str) -> None:
    assert check_task_path(path) == path


@pytest.mark.parametrize(("path", "reason"), BAD.items())
def test_bad_paths_say_what_is_wrong(path: str, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        check_task_path(path)
    assert reason in str(info.value), str(info.value)


def test_a_file_name_has_no_folder() -> None:
    with pytest.raises(ValueError, match="path separator"):
        check_file_name("a/b.py")
