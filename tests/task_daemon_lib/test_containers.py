"""Round trips through real Docker containers: ContainerProcess here, Python in the container.

Skipped (with the reason) when no Docker engine answers or the task image is missing; run
scripts/docker_engine.sh to get both.
"""

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import docker
import pytest

from task_daemon_lib.containers import (
    DEFAULT_IMAGE,
    OWNER_LABEL,
    OWNER_START_LABEL,
    ContainerLimits,
    ContainerProcess,
    ContainerSpec,
    engine_available,
    python_mounts,
    remove_orphans,
    running_containers,
)
from task_daemon_lib.messages import (
    STDOUT_PREFIX,
    InfoMessage,
    PrintMessage,
    StatsMessage,
)

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 30.0
REASON = engine_available()

pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

BASE_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}


class Recorder:
    """Collects everything a ContainerProcess reports, thread-safely."""

    def __init__(self):
        self.lock = threading.Lock()
        self.messages = []
        self.outputs = []
        self.outcomes = []

    def on_message(self, msg):
        with self.lock:
            self.messages.append(msg)

    def on_output(self, stream, line):
        with self.lock:
            self.outputs.append((stream, line))

    def on_exit(self, outcome):
        with self.lock:
            self.outcomes.append(outcome)

    def lines(self, stream="stdout"):
        with self.lock:
            return [line for name, line in self.outputs if name == stream]

    def wait_output(self, text, timeout=WAIT_S):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines()):
                return
            time.sleep(0.05)
        raise AssertionError(f"no output {text!r}: {self.outputs}")


@pytest.fixture
def folders(tmp_path):
    task_dir = tmp_path / "task"
    results_dir = tmp_path / "results"
    task_dir.mkdir()
    return task_dir, results_dir


@pytest.fixture(autouse=True)
def no_container_left():
    yield
    assert running_containers() == []


def make(folders, code, *, recorder=None, env=None, limits=None, network="none",
         stdin_pipe=False, mounts=(), **kwargs):
    task_dir, results_dir = folders
    spec = ContainerSpec(task_dir=task_dir, results_dir=results_dir,
                         read_only_mounts=python_mounts() + tuple(mounts),
                         network_mode=network, limits=limits or ContainerLimits())
    recorder = recorder or Recorder()
    child = ContainerProcess(
        [sys.executable, "-c", textwrap.dedent(code)], spec=spec,
        env=BASE_ENV if env is None else env, on_message=recorder.on_message,
        on_output=recorder.on_output, on_exit=recorder.on_exit, stdin_pipe=stdin_pipe,
        name="test", **kwargs)
    return child, recorder


def run(folders, code, **kwargs):
    child, recorder = make(folders, code, **kwargs)
    child.start()
    outcome = child.wait(WAIT_S)
    assert outcome is not None, "container did not end"
    return outcome, recorder


def report_line(**fields):
    return STDOUT_PREFIX + json.dumps({"time": 1.0, **fields})


def test_reports_on_stdout_become_messages_and_the_rest_is_output(folders):
    code = f"""
        import sys
        print("plain line")
        print({report_line(type="stats", round=2, metrics={"loss": 0.5})!r})
        print("oops", file=sys.stderr)
        print({report_line(type="info", info="Finished")!r})
    """
    outcome, rec = run(folders, code)
    assert outcome.status == "finished" and outcome.returncode == 0 and outcome.finished
    assert rec.outcomes == [outcome]
    assert isinstance(rec.messages[0], StatsMessage)
    assert rec.messages[0].round == 2 and rec.messages[0].metrics == {"loss": 0.5}
    assert rec.messages[1] == InfoMessage(info="Finished", time=1.0)
    assert rec.lines("stdout") == ["plain line"]
    assert rec.lines("stderr") == ["oops"]
    assert outcome.stderr_tail == ["oops"]


def test_exit_code_and_missing_finished(folders):
    outcome, _ = run(folders, "import sys; print('x', file=sys.stderr); sys.exit(3)")
    assert outcome.returncode == 3 and outcome.status == "failed"
    assert outcome.reason == "exited with code 3: x"
    outcome, _ = run(folders, "pass")
    assert outcome.status == "failed" and "without reporting Finished" in outcome.reason
    outcome, _ = run(folders, "pass", require_finished=False)
    assert outcome.status == "finished"


def test_stop_ends_a_sleeping_task_within_grace(folders):
    child, rec = make(folders, "import time; print('up', flush=True); time.sleep(60)")
    child.start()
    rec.wait_output("up")
    assert child.running and child.pid and Path(f"/proc/{child.pid}").exists()
    started = time.monotonic()
    outcome = child.stop(grace_s=5)
    assert time.monotonic() - started < 5
    assert outcome.status == "stopped" and outcome.reason is None
    assert outcome.returncode == -15  # SIGTERM, forwarded by the container's init
    assert not child.running and child.stop() is outcome


def test_a_task_ignoring_sigterm_is_killed_after_grace(folders):
    code = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print('up', flush=True)
        time.sleep(60)
    """
    child, rec = make(folders, code)
    child.start()
    rec.wait_output("up")
    started = time.monotonic()
    outcome = child.stop(grace_s=1)
    assert 0.9 < time.monotonic() - started < 10
    assert outcome.status == "stopped" and outcome.returncode == -9


def test_task_folder_is_read_only_and_results_folder_writable(folders):
    task_dir, results_dir = folders
    (task_dir / "data.txt").write_text("input")
    code = f"""
        import os
        print(open("data.txt").read(), os.getcwd())
        try:
            open({str(task_dir / "new.txt")!r}, "w")
        except OSError as exc:
            print("task dir:", exc.errno == 30)
        with open({str(results_dir / "out.txt")!r}, "w") as out:
            out.write("result")
        try:
            open("/etc/hacked", "w")
        except OSError as exc:
            print("root fs:", exc.errno == 30)
        open("/tmp/scratch", "w").write("ok")
    """
    outcome, rec = run(folders, code, require_finished=False)
    assert outcome.status == "finished", outcome.reason
    assert rec.lines() == [f"input {task_dir}", "task dir: True", "root fs: True"]
    assert not (task_dir / "new.txt").exists()
    assert (results_dir / "out.txt").read_text() == "result"


def test_no_host_secret_reaches_the_container(folders, monkeypatch):
    monkeypatch.setenv("AGATA_SERVER_GATEWAY_API_TOKEN", "secret-token-value")
    task_dir, results_dir = folders
    spec = ContainerSpec(task_dir=task_dir, results_dir=results_dir)
    rec = Recorder()
    child = ContainerProcess(["/usr/bin/env"], spec=spec, env={"TASK_VAR": "given"},
                             on_output=rec.on_output, require_finished=False)
    child.start()
    assert child.wait(WAIT_S).status == "finished"
    text = "\n".join(rec.lines())
    assert "TASK_VAR=given" in text
    assert "secret" not in text and "AGATA_SERVER" not in text
    names = {line.split("=", 1)[0] for line in rec.lines()}
    assert names <= {"TASK_VAR", "PYTHONUNBUFFERED", "PATH", "HOSTNAME", "HOME"}


def test_limits_and_confinement_are_applied(folders):
    limits = ContainerLimits(cpus=0.5, memory_mb=300, pids=64)
    child, rec = make(folders, "import time; print('up', flush=True); time.sleep(60)",
                      limits=limits)
    child.start()
    try:
        rec.wait_output("up")
        client = docker.from_env()
        attrs = client.api.inspect_container(child.container_id)
        client.close()
        host = attrs["HostConfig"]
        assert host["Memory"] == 300 * 1024 * 1024
        assert host["MemorySwap"] == 300 * 1024 * 1024
        assert host["NanoCpus"] == 500_000_000
        assert host["PidsLimit"] == 64
        assert host["ReadonlyRootfs"] is True
        assert host["CapDrop"] == ["ALL"]
        assert host["NetworkMode"] == "none"
        assert attrs["Config"]["User"] == f"{os.getuid()}:{os.getgid()}"
        assert attrs["Config"]["Labels"][OWNER_LABEL] == str(os.getpid())
        assert attrs["State"]["Pid"] == child.pid
    finally:
        assert child.stop(1).status == "stopped"


def test_memory_limit_kills_a_greedy_task(folders):
    code = "x = bytearray(400 * 1024 * 1024); print('survived')"
    outcome, rec = run(folders, code, limits=ContainerLimits(memory_mb=64))
    assert outcome.status == "failed" and outcome.returncode == -9
    # Docker's OOMKilled flag is racy under cgroup v1 (the kernel kills the task, not the
    # container's init): the reason names the limit when Docker reports it, SIGKILL always
    assert "SIGKILL" in outcome.reason
    assert "survived" not in rec.lines()


NET_CODE = "print(sorted(l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:]))"


def test_network_none_has_only_loopback(folders):
    outcome, rec = run(folders, NET_CODE, require_finished=False)
    assert outcome.status == "finished"
    assert rec.lines() == ["['lo']"]


def test_network_host_sees_the_hosts_interfaces(folders):
    outcome, rec = run(folders, NET_CODE, network="host", require_finished=False)
    assert outcome.status == "finished"
    host_interfaces = sorted(line.split(":")[0].strip()
                             for line in Path("/proc/net/dev").read_text().splitlines()[2:])
    assert rec.lines() == [str(host_interfaces)]


def test_stdin_job_line_and_end_of_file(folders):
    code = """
        import json, sys
        job = json.loads(sys.stdin.readline())
        print("job", job["run"])
        print("rest", repr(sys.stdin.read()))
    """
    child, rec = make(folders, code, stdin_pipe=True, require_finished=False)
    child.start()
    child.send_input(json.dumps({"run": 7}))
    child.close_input()
    outcome = child.wait(WAIT_S)
    assert outcome is not None and outcome.status == "finished"
    assert rec.lines() == ["job 7", "rest ''"]
    with pytest.raises(OSError):
        child.send_input("too late")


def test_a_long_stdin_line_arrives_whole(folders):
    code = """
        import sys
        line = sys.stdin.readline()
        print(len(line), line.count("x"))
    """
    child, rec = make(folders, code, stdin_pipe=True, require_finished=False)
    child.start()
    child.send_input("x" * 3_000_000)
    child.close_input()
    outcome = child.wait(WAIT_S)
    assert outcome is not None and outcome.status == "finished"
    assert rec.lines() == ["3000001 3000000"]


def test_task_reporter_reports_through_stdout_in_a_container(folders):
    task_dir, _ = folders
    (task_dir / "client.py").write_text(textwrap.dedent("""
        import sys
        from task_daemon_lib.task_main import run_task

        def body(reporter):
            print("uses stdout:", reporter.uses_stdout)
            reporter.send_print("hello from the container")
            reporter.send_stats(1, acc=0.75, loss=0.25)

        sys.exit(run_task(body))
    """))
    task_dir_spec = ContainerSpec(task_dir=task_dir, results_dir=folders[1],
                                  read_only_mounts=(*python_mounts(), ROOT))
    rec = Recorder()
    env = {**BASE_ENV, "PYTHONPATH": str(ROOT), "AGATA_REPORT_FD": "3"}
    child = ContainerProcess([sys.executable, str(task_dir / "client.py")],
                             spec=task_dir_spec, env=env, on_message=rec.on_message,
                             on_output=rec.on_output, on_exit=rec.on_exit)
    child.start()
    outcome = child.wait(WAIT_S)
    assert outcome is not None and outcome.status == "finished", outcome
    kinds = [type(msg) for msg in rec.messages]
    assert kinds == [InfoMessage, PrintMessage, StatsMessage, InfoMessage]
    assert rec.messages[0].info == "Started" and rec.messages[-1].info == "Finished"
    assert rec.messages[1].message == "hello from the container"
    assert rec.messages[2].metrics == {"accuracy": 0.75, "loss": 0.25}
    assert rec.lines() == ["uses stdout: True"]


def test_remove_orphans_removes_containers_of_dead_owners():
    dead = subprocess.Popen(["true"])
    dead.wait()
    client = docker.from_env()
    try:
        orphan = client.containers.create(
            DEFAULT_IMAGE, ["sleep", "60"], labels={OWNER_LABEL: str(dead.pid),
                                                     OWNER_START_LABEL: "1"})
        alive = client.containers.create(
            DEFAULT_IMAGE, ["sleep", "60"], labels={OWNER_LABEL: str(os.getpid())})
        orphan.start()
        try:
            removed = remove_orphans()
            assert orphan.name in removed and alive.name not in removed
            names = {c.name for c in client.containers.list(all=True)}
            assert orphan.name not in names and alive.name in names
        finally:
            alive.remove(force=True)
    finally:
        client.close()


def test_guard_removes_the_containers_of_an_owner_killed_with_sigkill(folders):
    task_dir, results_dir = folders
    script = f"""
        import os, signal, sys
        from pathlib import Path
        from task_daemon_lib.containers import ContainerProcess, ContainerSpec
        spec = ContainerSpec(task_dir=Path({str(task_dir)!r}),
                             results_dir=Path({str(results_dir)!r}))
        child = ContainerProcess(["sleep", "60"], spec=spec, env={{}})
        child.start()
        print(child.container_id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=ROOT,
                          capture_output=True, text=True, timeout=WAIT_S,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == -9, proc.stderr
    container_id = proc.stdout.strip()
    assert container_id
    client = docker.from_env()
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if not client.containers.list(all=True, filters={"id": container_id}):
                break
            time.sleep(0.2)
        else:
            pytest.fail("the container outlived its owner")
    finally:
        client.close()
