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


def test_a_run_is_reached_over_wss_from_an_https_cloud_and_never_in_clear() -> None:
    from agata_contracts.run_door import (
        PlainChannelRefused,
        check_channel,
        parse_node_config,
        run_url,
    )

    assert run_url("https://cloud.example:8443/base/", "t-1", 3) == \
        "wss://cloud.example:8443/base/api/runs/t-1/3/flower"
    assert run_url("http://127.0.0.1:9001", "t-1", 1) == "ws://127.0.0.1:9001/api/runs/t-1/1/flower"
    check_channel("https://cloud.example", "wss://cloud.example/api/runs/t/1/flower")
    with pytest.raises(PlainChannelRefused, match="in clear"):
        check_channel("https://cloud.example", "ws://cloud.example/api/runs/t/1/flower")
    with pytest.raises(PlainChannelRefused):
        run_url("ftp://cloud.example", "t", 1)
    assert parse_node_config('{"site": "a", "batch": 3}') == {"site": "a", "batch": 3}
    assert parse_node_config("") == {}
    for bad in ("[1]", "{", '{"a": [1]}', "x" * 5000):
        with pytest.raises(ValueError):
            parse_node_config(bad)
