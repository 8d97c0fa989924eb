"""A run's server output log read from a byte offset (``rpc_exec_read_run_log``): live from
the run's scratch folder while it goes, from its stored results once it ended; a character cut
by the end of a piece waits for the next; a link left in the log's place is not followed."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from support import Cloud, wait_for

from agata_contracts.results import READ_RUN_LOG
from agata_contracts.tasks import CREATE_TASK, START_SERVER_TASK, STOP_SERVER_TASK, UPLOAD_TASK_FILE
from cloud_task_manager.run_logs import complete_text, read_plain_file
from microservice_interconnect import NotFound

PRINTING_SERVER = (b"import time\nfrom task_daemon_lib import TaskReporter\nTaskReporter()\n"
                   b"print('h\\u00e9llo', flush=True)\nprint('two', flush=True)\n"
                   b"time.sleep(120)\n")


def test_flwr_cli_log_is_read_live_then_from_the_results(cloud: Cloud) -> None:
    call = cloud.client.call
    call(CREATE_TASK, {"task_id": "logs", "port": 8000})
    with pytest.raises(NotFound):
        call(READ_RUN_LOG, {"task_id": "logs"})
    call(UPLOAD_TASK_FILE, {"task_id": "logs", "filename": "server.py",
                            "content": base64.b64encode(PRINTING_SERVER).decode()})
    call(START_SERVER_TASK, {"task_id": "logs"})
    wait_for(lambda: "two" in call(READ_RUN_LOG, {"task_id": "logs"}).text, 30,
             "the server's output in its live log")

    head = call(READ_RUN_LOG, {"task_id": "logs", "max_bytes": 2})
    assert (head.text, head.next_offset, head.ended, head.run) == ("h", 1, False, 1)
    rest = call(READ_RUN_LOG, {"task_id": "logs", "offset": head.next_offset})
    assert rest.text == "h\u00e9llo\ntwo\n"[1:] and not rest.ended
    nothing = call(READ_RUN_LOG, {"task_id": "logs", "offset": rest.next_offset})
    assert nothing.text == "" and nothing.next_offset == rest.next_offset

    call(STOP_SERVER_TASK, {"task_id": "logs"})
    ended = call(READ_RUN_LOG, {"task_id": "logs"})
    assert ended.ended and ended.text.startswith("h\u00e9llo\ntwo\n")
    with pytest.raises(NotFound):
        call(READ_RUN_LOG, {"task_id": "logs", "run": 2})
    with pytest.raises(NotFound):
        call(READ_RUN_LOG, {"task_id": "no-such-task"})


def test_flwr_cli_log_pieces_keep_whole_characters() -> None:
    data = "a\u00e9".encode()
    assert complete_text(data[:2], ended=False) == ("a", 1)
    assert complete_text(data, ended=False) == ("a\u00e9", 3)
    assert complete_text(data[:2], ended=True) == ("a\ufffd", 2)


def test_flwr_cli_log_does_not_follow_a_link(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("do not read")
    (tmp_path / "output-server.txt").symlink_to(secret)
    assert read_plain_file(tmp_path / "output-server.txt", 0, 100) == b""
    assert read_plain_file(tmp_path / "missing.txt", 0, 100) == b""
    (tmp_path / "plain.txt").write_text("0123456789")
    assert read_plain_file(tmp_path / "plain.txt", 3, 4) == b"3456"
