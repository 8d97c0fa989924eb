"""The test-error task: its client fails on purpose, its server waits until stopped."""

from __future__ import annotations

import time


def wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_error_client_fails_and_server_keeps_running(
    task_folder, start_run, free_port, port_answers
):
    folder = task_folder("task_error")
    port = free_port()
    common = ["--host", "127.0.0.1", "--port", str(port)]
    server = start_run(folder, "server.py", [*common, "--unknown", "1"], "server")
    assert wait_until(lambda: port_answers(port), 60), server.dump()

    started = time.monotonic()
    client = start_run(folder, "client.py", [*common, "--client-id", "c1", "--x", "y"], "client")
    outcome = client.wait(30)
    assert time.monotonic() - started < 10
    assert outcome.status == "failed" and outcome.returncode == 1, client.dump()
    assert client.infos == ["Started"]
    assert client.errors == ["RuntimeError: simulated task failure (AGATA test-error)"]
    assert outcome.reason == client.errors[0]
    assert any("answers" in p for p in client.prints)

    # The server is unaffected and keeps waiting, until the manager stops it.
    time.sleep(0.3)
    assert server.child.running
    stopping = time.monotonic()
    server_outcome = server.child.stop(grace_s=5.0)
    assert server_outcome.status == "stopped"
    assert time.monotonic() - stopping < 5
    assert server.errors == []
    assert "Finished" not in server.infos


def test_error_client_fails_fast_without_server(task_folder, start_run, free_port):
    folder = task_folder("task_error")
    args = ["--host", "127.0.0.1", "--port", str(free_port()), "--fail-after", "0"]
    client = start_run(folder, "client.py", args, "client")
    outcome = client.wait(30)
    assert outcome.status == "failed" and outcome.returncode == 1
    assert client.errors == ["RuntimeError: simulated task failure (AGATA test-error)"]
    assert any("does not answer" in p for p in client.prints)
