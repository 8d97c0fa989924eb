"""The ``agata`` command against the real cloud services, each its own ``python -m`` process.

The CLI runs as a real subprocess (``python -m agata_cli``) with ``AGATA_URL`` and
``AGATA_API_TOKEN``; task servers are small scripts reporting through ``TaskReporter``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import CLIENT_TOKEN, OPERATOR_TOKEN, REPO_ROOT, free_port, isolated_environ

from experiments.processes import wait_for_http

SERVICES = ("user_manager", "cloud_task_manager", "cloud_gateway")

GOOD_SERVER = textwrap.dedent("""\
    import time
    from task_daemon_lib import TaskReporter

    reporter = TaskReporter()
    for task_round in range(1, 4):
        time.sleep(0.2)
        reporter.send_stats(task_round, loss=1.0 / task_round, accuracy=0.5 + task_round / 10)
    reporter.send_info("Finished")
""")
FAILING_SERVER = textwrap.dedent("""\
    import sys
    import time
    from task_daemon_lib import TaskReporter

    reporter = TaskReporter()
    time.sleep(0.2)
    reporter.send_stats(1, loss=2.5, accuracy=0.1)
    reporter.send_error("RuntimeError: data shard missing")
    sys.exit(1)
""")
ENDLESS_SERVER = textwrap.dedent("""\
    import time
    from task_daemon_lib import TaskReporter

    reporter = TaskReporter()
    for task_round in range(1, 10_000):
        time.sleep(0.2)
        reporter.send_stats(task_round, loss=1.0 / task_round)
""")


@dataclass
class Stack:
    """The running cloud services and the environment the CLI gets."""

    url: str
    environ: dict[str, str]
    root: Path


def _http(url: str, body: dict[str, object] | None = None,
          token: str = OPERATOR_TOKEN) -> tuple[int, object]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET",
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("cli_stack")
    environ = {**os.environ, **isolated_environ(root)}
    for name in ("AGATA_URL", "AGATA_API_TOKEN"):
        environ.pop(name, None)
    processes = {
        name: subprocess.Popen([sys.executable, "-m", name], cwd=REPO_ROOT, env=environ,
                               stdout=(root / f"{name}.log").open("wb"),
                               stderr=subprocess.STDOUT, start_new_session=True)
        for name in SERVICES
    }
    url = f"http://127.0.0.1:{environ['AGATA_SERVER_GATEWAY_PORT']}"
    try:
        wait_for_http(f"{url}/health", 30)
        deadline = time.monotonic() + 30
        while True:
            statuses = [_http(f"{url}/api/tasks?limit=1")[0],
                        _http(f"{url}/api/clients?limit=1")[0]]
            if statuses == [200, 200]:
                break
            assert time.monotonic() < deadline, f"services did not answer: {statuses}"
            time.sleep(0.1)
        yield Stack(url, environ, root)
    finally:
        for process in processes.values():
            process.send_signal(signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def agata(stack: Stack, *args: str, token: str | None = OPERATOR_TOKEN,
          url: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a subprocess; no output of it may ever hold a traceback."""
    environ = {**stack.environ, "AGATA_URL": url or stack.url, **env}
    if token is not None:
        environ["AGATA_API_TOKEN"] = token
    result = subprocess.run([sys.executable, "-m", "agata_cli", *args], cwd=REPO_ROOT,
                            env=environ, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in result.stdout + result.stderr, result
    return result


def task_dir(root: Path, name: str, server: str, *extra: str) -> Path:
    """A task folder holding ``server.py`` and the given extra files."""
    folder = root / name
    folder.mkdir()
    (folder / "server.py").write_text(server)
    for file_name in extra:
        (folder / file_name).write_bytes(b"content of " + file_name.encode())
    return folder


def _lines_with(output: str, text: str) -> list[str]:
    return [line for line in output.splitlines() if text in line]


def test_cli_create_with_files_then_start_follow_until_finished(stack: Stack,
                                                                tmp_path: Path) -> None:
    folder = task_dir(tmp_path, "task_ok", GOOD_SERVER, "client.py", "data.npz", "notes.txt")
    created = agata(stack, "tasks", "create", "--id", "cli-ok", "--port", str(free_port()),
                    "--server-arg", "num-rounds=3", "--server-arg", "lr=0.05",
                    "--server-arg", "fast=true", "--client-arg", "batch=16",
                    "--tag", "demo", "--from-dir", str(folder))
    assert created.returncode == 0, created.stderr
    assert "created task cli-ok" in created.stdout
    for name in ("client.py", "data.npz", "server.py"):
        assert f"uploaded {name}" in created.stdout
    assert "notes.txt" not in created.stdout

    shown = agata(stack, "tasks", "show", "cli-ok", "--json")
    task = json.loads(shown.stdout)
    assert sorted(f["name"] for f in task["files"]) == ["client.py", "data.npz", "server.py"]
    assert task["server_arguments"] == {"num-rounds": 3, "lr": 0.05, "fast": True}
    assert task["client_arguments"] == {"batch": 16}
    assert task["tags"] == ["demo"] and task["status"] == "created"

    followed = agata(stack, "tasks", "start", "cli-ok", "--follow", "--interval", "0.2")
    assert followed.returncode == 0, followed.stderr
    rounds = _lines_with(followed.stdout, "round ")
    assert [line.split()[1] for line in rounds[:3]] == ["1/3", "2/3", "3/3"]
    assert "loss=0.5" in rounds[1] and "accuracy=0.7" in rounds[1]
    assert "task cli-ok finished: 3 round(s)" in followed.stdout
    assert "\x1b[" not in followed.stdout + followed.stderr  # no progress line off a TTY

    table = agata(stack, "tasks", "show", "cli-ok")
    assert table.returncode == 0
    assert _lines_with(table.stdout, "status:")[0].split() == ["status:", "finished"]
    assert "rounds of run 1 (3):" in table.stdout
    assert "server.py" in table.stdout and "LOSS" in table.stdout

    again = agata(stack, "tasks", "follow", "cli-ok", "--json")
    lines = [json.loads(line) for line in again.stdout.splitlines()]
    assert again.returncode == 0
    assert [line["round"] for line in lines[:-1]] == [1, 2, 3]
    assert lines[-1]["id"] == "cli-ok" and lines[-1]["status"] == "finished"


def test_cli_follow_of_a_failing_server_exits_1_with_the_reason(stack: Stack,
                                                               tmp_path: Path) -> None:
    folder = task_dir(tmp_path, "task_bad", FAILING_SERVER)
    created = agata(stack, "tasks", "create", "--id", "cli-bad", "--port", str(free_port()),
                    "--file", str(folder / "server.py"))
    assert created.returncode == 0, created.stderr
    followed = agata(stack, "tasks", "start", "cli-bad", "--follow", "--interval", "0.2")
    assert followed.returncode == 1
    assert "round 1  loss=2.5  accuracy=0.1" in followed.stdout
    assert "task cli-bad failed after 1 round(s): RuntimeError: data shard missing" in (
        followed.stderr)

    shown = agata(stack, "tasks", "show", "cli-bad")
    assert "RuntimeError: data shard missing" in _lines_with(shown.stdout, "reason:")[0]
    assert agata(stack, "tasks", "follow", "cli-bad").returncode == 1


def test_cli_list_and_show_in_table_and_json_forms(stack: Stack) -> None:
    for task_id in ("cli-list-a", "cli-list-b"):
        created = agata(stack, "--json", "tasks", "create", "--id", task_id,
                        "--criteria", "data_qnt >= 10")  # no port: it is optional
        assert created.returncode == 0, created.stderr
        assert json.loads(created.stdout)["selection_criteria"] == "data_qnt >= 10"
    status, _ = _http(f"{stack.url}/rpc_exec_update_user_info",
                      {"user_id": "cli-reporter"}, token=CLIENT_TOKEN)
    assert status == 200
    status, _ = _http(f"{stack.url}/rpc_exec_report_client_task",
                      {"task_id": "cli-list-a", "client_id": "cli-reporter", "status": "failed",
                       "reason": "out of memory"}, token=CLIENT_TOKEN)
    assert status == 200

    listed = agata(stack, "tasks", "list")
    assert listed.returncode == 0
    assert listed.stdout.splitlines()[0].split() == [
        "ID", "STATUS", "ENDPOINT", "RUNS", "FILES", "TAGS", "CREATED"]
    assert _lines_with(listed.stdout, "cli-list-a")[0].split()[1:3] == ["created", "127.0.0.1"]

    as_json = json.loads(agata(stack, "tasks", "list", "--status", "created", "--json").stdout)
    ids = {task["id"] for task in as_json["tasks"]}
    assert {"cli-list-a", "cli-list-b"} <= ids
    assert as_json["total"] == len(as_json["tasks"])
    assert all(task["status"] == "created" for task in as_json["tasks"])
    paged = json.loads(agata(stack, "--json", "tasks", "list", "--limit", "1").stdout)
    assert len(paged["tasks"]) == 1 and paged["total"] >= 2
    assert "use --limit and --offset" in agata(stack, "tasks", "list", "--limit", "1").stdout

    shown = agata(stack, "tasks", "show", "cli-list-a")
    assert shown.returncode == 0
    assert "data_qnt >= 10" in _lines_with(shown.stdout, "criteria:")[0]
    assert _lines_with(shown.stdout, "endpoint:")[0].split() == ["endpoint:", "127.0.0.1"]
    assert "files (0):" in shown.stdout
    report = _lines_with(shown.stdout, "cli-reporter")[0]
    assert "failed" in report and "out of memory" in report
    detail = json.loads(agata(stack, "tasks", "show", "cli-list-a", "--json").stdout)
    assert detail["id"] == "cli-list-a" and detail["files"] == [] and detail["port"] is None
    assert detail["client_reports"][0]["reason"] == "out of memory"


def test_cli_clients_list_and_show(stack: Stack) -> None:
    status, _ = _http(f"{stack.url}/rpc_exec_update_user_info",
                      {"user_id": "cli-device-1", "data_qnt": 42, "avg_acc_contrib": 0.25,
                       "sensors": ["camera", "gps"]}, token=CLIENT_TOKEN)
    assert status == 200

    listed = agata(stack, "clients", "list")
    assert listed.returncode == 0
    row = _lines_with(listed.stdout, "cli-device-1")[0]
    assert row.split()[:4] == ["cli-device-1", "online", "42", "0.25"] and "camera, gps" in row
    users = json.loads(agata(stack, "clients", "list", "--json").stdout)["users"]
    assert "cli-device-1" in {user["id"] for user in users}

    shown = agata(stack, "clients", "show", "cli-device-1")
    assert shown.returncode == 0
    assert _lines_with(shown.stdout, "data_qnt:")[0].split() == ["data_qnt:", "42"]
    assert _lines_with(shown.stdout, "state:")[0].split() == ["state:", "online"]
    detail = json.loads(agata(stack, "--json", "clients", "show", "cli-device-1").stdout)
    assert detail["sensors"] == ["camera", "gps"]

    unknown = agata(stack, "clients", "show", "cli-nobody")
    assert unknown.returncode == 4 and "cli-nobody" in unknown.stderr


@pytest.mark.parametrize(
    ("args", "token", "code", "needle"),
    [
        (("tasks", "list"), None, 3, "AGATA_API_TOKEN"),
        (("tasks", "list"), "wrong-token", 3, "refused the API token"),
        (("tasks", "show", "cli-no-such-task"), OPERATOR_TOKEN, 4,
         "task 'cli-no-such-task' does not exist"),
        (("tasks", "create", "--port", "70000"), OPERATOR_TOKEN, 5, "port: "),
        (("tasks", "create", "--port", "8080", "--criteria", "__import__('os')"),
         OPERATOR_TOKEN, 5, "selection_criteria: "),
        (("tasks", "create", "--port", "8080", "--server-arg", "rounds"), OPERATOR_TOKEN, 2,
         "expected name=value"),
        (("tasks", "start", "x", "--server-arg", "=3"), OPERATOR_TOKEN, 2,
         "expected name=value"),
        (("--token", OPERATOR_TOKEN, "tasks", "list"), None, 2, "never taken on the command"),
        (("tasks", "create", "--port", "8080", "--file", "/nonexistent/server.py"),
         OPERATOR_TOKEN, 2, "no such file"),
    ],
    ids=["missing-token", "wrong-token", "unknown-task", "bad-port", "bad-criteria",
         "bad-assignment", "empty-name", "token-in-argv", "missing-file"],
)
def test_cli_error_exit_codes(stack: Stack, args: tuple[str, ...], token: str | None,
                              code: int, needle: str) -> None:
    result = agata(stack, *args, token=token)
    assert result.returncode == code, result
    assert needle in result.stderr
    assert result.stdout == ""


def test_cli_duplicate_id_and_unreachable_gateway(stack: Stack) -> None:
    port = str(free_port())
    assert agata(stack, "tasks", "create", "--id", "cli-dup", "--port", port).returncode == 0
    duplicate = agata(stack, "tasks", "create", "--id", "cli-dup", "--port", port)
    assert duplicate.returncode == 5
    assert "task 'cli-dup' already exists" in duplicate.stderr

    dead = f"http://127.0.0.1:{free_port()}"
    unreachable = agata(stack, "tasks", "list", url=dead)
    assert unreachable.returncode == 6
    assert f"cannot reach the gateway at {dead}" in unreachable.stderr
    assert agata(stack, "health", url=dead, token=None).returncode == 6
    assert agata(stack, "health", token=None).returncode == 0


def test_cli_token_file_and_default_url(stack: Stack, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(OPERATOR_TOKEN + "\n")
    by_file = agata(stack, "--token-file", str(token_file), "tasks", "list", token=None)
    assert by_file.returncode == 0, by_file.stderr
    (tmp_path / "empty").write_text("\n")
    empty = agata(stack, "tasks", "list", "--token-file", str(tmp_path / "empty"), token=None)
    assert empty.returncode == 3 and "is empty" in empty.stderr
    other_env = agata(stack, "--token-env", "MY_AGATA_TOKEN", "tasks", "list", token=None,
                      MY_AGATA_TOKEN=OPERATOR_TOKEN)
    assert other_env.returncode == 0, other_env.stderr

    # Without AGATA_URL: http://127.0.0.1:<[server.gateway] port> of the configuration.
    environ = {k: v for k, v in stack.environ.items() if k != "AGATA_URL"}
    environ["AGATA_API_TOKEN"] = OPERATOR_TOKEN
    result = subprocess.run([sys.executable, "-m", "agata_cli", "health"], cwd=REPO_ROOT,
                            env=environ, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert stack.url in result.stdout


def test_cli_upload_failure_after_create_says_the_task_exists(stack: Stack,
                                                              tmp_path: Path) -> None:
    folder = task_dir(tmp_path, "task_odd", GOOD_SERVER, "bad name.py")
    result = agata(stack, "tasks", "create", "--id", "cli-half", "--port", str(free_port()),
                   "--file", str(folder / "server.py"), "--file", str(folder / "bad name.py"))
    assert result.returncode == 5
    assert "task cli-half was created, but uploading bad name.py failed" in result.stderr
    assert "uploaded before the failure: server.py" in result.stderr
    assert "agata tasks upload cli-half --file" in result.stderr
    files = json.loads(agata(stack, "tasks", "show", "cli-half", "--json").stdout)["files"]
    assert [f["name"] for f in files] == ["server.py"]
    (folder / "client.py").write_text("pass\n")
    uploaded = agata(stack, "tasks", "upload", "cli-half", "--file", str(folder / "client.py"))
    assert uploaded.returncode == 0 and "uploaded client.py" in uploaded.stdout


def test_cli_follow_timeout_stop_and_interrupt(stack: Stack, tmp_path: Path) -> None:
    folder = task_dir(tmp_path, "task_endless", ENDLESS_SERVER)
    assert agata(stack, "tasks", "create", "--id", "cli-long", "--port", str(free_port()),
                 "--server-arg", "num-rounds=50", "--from-dir", str(folder)).returncode == 0
    started = agata(stack, "tasks", "start", "cli-long")
    assert started.returncode == 0 and "started task cli-long (run 1)" in started.stdout

    timed_out = agata(stack, "tasks", "follow", "cli-long", "--timeout", "1",
                      "--interval", "0.2")
    assert timed_out.returncode == 6
    assert "still running (it was not stopped)" in timed_out.stderr
    assert _lines_with(timed_out.stdout, "/50  loss=")

    environ = {**stack.environ, "AGATA_URL": stack.url, "AGATA_API_TOKEN": OPERATOR_TOKEN}
    # Ctrl-C as a person sends it, even when this suite runs where SIGINT is ignored (a
    # background job inherits SIG_IGN, and Python keeps it)
    follower = subprocess.Popen([sys.executable, "-m", "agata_cli", "tasks", "follow",
                                 "cli-long"], cwd=REPO_ROOT, env=environ, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert follower.stdout is not None
    first = follower.stdout.readline()  # following (inside main) by now
    assert first.startswith("task cli-long: running"), first
    follower.send_signal(signal.SIGINT)
    out, err = follower.communicate(timeout=10)
    assert follower.returncode == 130
    assert err == "" and "Traceback" not in first + out

    stopped = agata(stack, "tasks", "stop", "cli-long")
    assert stopped.returncode == 0
    assert "task cli-long: stopped (stopped by the operator)" in stopped.stdout
    followed = agata(stack, "tasks", "follow", "cli-long")
    assert followed.returncode == 1 and "was stopped" in followed.stderr
    not_running = agata(stack, "tasks", "stop", "cli-long")
    assert not_running.returncode == 5 and "is not running" in not_running.stderr


def test_cli_installed_script_documents_exit_codes() -> None:
    script = Path(sys.executable).parent / "agata"
    assert script.exists(), "run: .venv/bin/pip install --no-deps -e ."
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0
    assert "exit codes:" in result.stdout
    for code in ("0", "1", "2", "3", "4", "5", "6", "7", "130"):
        assert any(line.split()[:1] == [code] for line in result.stdout.splitlines())
    assert "AGATA_API_TOKEN" in result.stdout and "AGATA_URL" in result.stdout


def test_cli_creates_a_flower_app_from_its_folder(stack: Stack, tmp_path: Path) -> None:
    app = REPO_ROOT / "tasks" / "app_numpy"
    created = agata(stack, "tasks", "create", "--id", "cli-app", "--devices", "3",
                    "--deadline", "600",
                    "--server-arg", "num-server-rounds=2", "--from-dir", str(app))
    assert created.returncode == 0, created.stderr
    assert "uploaded 4 file(s) of the app" in created.stdout
    task = json.loads(agata(stack, "tasks", "show", "cli-app", "--json").stdout)
    assert task["kind"] == "flower_app" and task["devices"] == 3 and task["deadline_s"] == 600
    assert sorted(f["name"] for f in task["files"]) == [
        "numpyapp/__init__.py", "numpyapp/client_app.py", "numpyapp/server_app.py",
        "pyproject.toml"]
    both = agata(stack, "tasks", "upload", "cli-app", "--from-dir", str(app),
                 "--file", str(app / "pyproject.toml"))
    assert both.returncode == 2 and "uploaded whole" in both.stderr


@pytest.mark.parametrize(("host", "url"), [
    ("10.1.2.3", "http://10.1.2.3:9100"), ("0.0.0.0", "http://127.0.0.1:9100"),
    ("::1", "http://[::1]:9100"), ("gw.example", "http://gw.example:9100")])
def test_the_default_url_is_the_configured_gateway(host: str, url: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from agata_cli.main import _default_url
    from agata_common.config import settings

    monkeypatch.setenv("AGATA_SERVER_GATEWAY_HOST", host)
    monkeypatch.setenv("AGATA_SERVER_GATEWAY_PORT", "9100")
    settings.cache_clear()
    try:
        assert _default_url() == url
    finally:
        settings.cache_clear()


def built_fab(tmp_path: Path) -> Path:
    """The ``.fab`` that the installed ``flwr build`` makes of tasks/app_numpy (offline)."""
    folder = tmp_path / "numpyapp"  # flwr build wants a name of letters, digits and hyphens
    shutil.copytree(REPO_ROOT / "tasks" / "app_numpy", folder,
                    ignore=shutil.ignore_patterns("__pycache__"))
    flwr = Path(sys.executable).with_name("flwr")
    built = subprocess.run([str(flwr), "build", "--app", str(folder)], cwd=tmp_path,
                           env={**os.environ, "HOME": str(tmp_path), "FLWR_HOME": str(tmp_path)},
                           capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stdout + built.stderr
    (fab,) = tmp_path.glob("*.fab")
    return fab


def test_cli_creates_a_flower_app_from_the_fab_flwr_build_makes_and_it_starts(
        stack: Stack, tmp_path: Path) -> None:
    fab = built_fab(tmp_path)
    created = agata(stack, "tasks", "create", "--id", "cli-fab", "--port", str(free_port()),
                    "--server-arg", "num-server-rounds=1", "--file", str(fab))
    assert created.returncode == 0, created.stderr
    assert f"uploaded 4 file(s) of the app in {fab}" in created.stdout
    assert "(left out: .info/CONTENT)" in created.stdout
    task = json.loads(agata(stack, "tasks", "show", "cli-fab", "--json").stdout)
    assert task["kind"] == "flower_app"
    assert sorted(f["name"] for f in task["files"]) == [
        "numpyapp/__init__.py", "numpyapp/client_app.py", "numpyapp/server_app.py",
        "pyproject.toml"]
    started = agata(stack, "--json", "tasks", "start", "cli-fab")
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["status"] == "running"
    assert agata(stack, "tasks", "stop", "cli-fab").returncode == 0

    # The same archive through `tasks upload`, as a .zip too; an archive goes up alone.
    again = agata(stack, "tasks", "upload", "cli-fab", "--file", str(fab))
    assert again.returncode == 0, again.stderr
    as_zip = fab.with_name("app.zip")
    shutil.copyfile(fab, as_zip)
    assert agata(stack, "tasks", "upload", "cli-fab", "--file", str(as_zip)).returncode == 0
    mixed = agata(stack, "tasks", "upload", "cli-fab", "--file", str(fab),
                  "--file", str(REPO_ROOT / "tasks" / "app_numpy" / "pyproject.toml"))
    assert mixed.returncode == 2 and "alone" in mixed.stderr
    broken = tmp_path / "broken.fab"
    broken.write_bytes(b"not a zip")
    refused = agata(stack, "tasks", "create", "--id", "cli-fab-bad", "--file", str(broken))
    assert refused.returncode == 2 and "broken.fab: not a zip archive" in refused.stderr
    assert agata(stack, "tasks", "show", "cli-fab-bad").returncode == 4  # nothing created
