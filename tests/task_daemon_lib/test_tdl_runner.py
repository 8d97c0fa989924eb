"""Round trips through real child processes: TaskReporter in the child, ChildProcess here."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from task_daemon_lib.messages import (
    REPORT_FD_ENV,
    STDOUT_PREFIX,
    ErrorMessage,
    InfoMessage,
    PrintMessage,
    StatsMessage,
    TriggerMessage,
    parse_report_line,
)
from task_daemon_lib.runner import (
    MAX_LINE_BYTES,
    TRUNCATION_MARK,
    ChildOutcome,
    ChildProcess,
    _LineSplitter,
    python_argv,
)

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 60.0

PRELUDE = """\
import os, signal, subprocess, sys, threading, time
from task_daemon_lib import TaskReporter
"""


def child_env(**extra):
    env = dict(os.environ)
    env.pop(REPORT_FD_ENV, None)
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + old if old else "")
    env.update(extra)
    return env


class Recorder:
    """Collects everything a ChildProcess reports, thread-safely."""

    def __init__(self):
        self.lock = threading.Lock()
        self.messages = []
        self.outputs = []
        self.outcomes = []
        self.exit_threads = []
        self.got_message = threading.Condition(self.lock)

    def on_message(self, msg):
        with self.lock:
            self.messages.append(msg)
            self.got_message.notify_all()

    def on_output(self, stream, line):
        with self.lock:
            self.outputs.append((stream, line))

    def on_exit(self, outcome):
        with self.lock:
            self.outcomes.append(outcome)
            self.exit_threads.append(threading.current_thread())

    def wait_for(self, predicate, timeout=WAIT_S):
        """Wait until some received message satisfies ``predicate``; return it."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                for msg in self.messages:
                    if predicate(msg):
                        return msg
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"no matching message in {self.messages!r}"
                self.got_message.wait(remaining)

    def kinds(self):
        return [type(m) for m in self.messages]

    def lines(self, stream):
        return [line for s, line in self.outputs if s == stream]


def make_child(tmp_path, code, rec=None, *, name="task", **kwargs):
    script = tmp_path / f"child_{time.monotonic_ns()}.py"
    script.write_text(PRELUDE + textwrap.dedent(code))
    rec = rec if rec is not None else Recorder()
    child = ChildProcess(
        python_argv(script),
        cwd=tmp_path,
        env=child_env(),
        on_message=rec.on_message,
        on_output=rec.on_output,
        on_exit=rec.on_exit,
        name=name,
        **kwargs,
    )
    return child, rec


def run_child(tmp_path, code, **kwargs):
    child, rec = make_child(tmp_path, code, **kwargs)
    child.start()
    outcome = child.wait(WAIT_S)
    assert outcome is not None, "child did not finish in time"
    assert rec.outcomes == [outcome]
    return child, rec, outcome


def pid_alive(pid):
    """True if ``pid`` runs (a zombie waiting for an unreaping init counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def wait_gone(pid, timeout=10.0):
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not pid_alive(pid)


# --- report round trips ---------------------------------------------------------------


def test_round_trip_of_every_message_type(tmp_path):
    child, rec, outcome = run_child(
        tmp_path,
        """
        r = TaskReporter()
        r.send_info("hello")
        r.send_stats(3, 0.91)
        r.send_stats(4, loss=0.2, accuracy=0.9)
        r.send_print("multi\\nline ✓")
        r.trigger("save_model", "--path /tmp/x --epochs 3")
        r.trigger("ping")
        r.send_error(ValueError("bad data"))
        """,
    )
    msgs = rec.messages
    assert rec.kinds() == [
        InfoMessage,
        InfoMessage,
        StatsMessage,
        StatsMessage,
        PrintMessage,
        TriggerMessage,
        TriggerMessage,
        ErrorMessage,
    ]
    assert [m.info for m in msgs[:2]] == ["Started", "hello"]
    assert (msgs[2].round, msgs[2].metrics) == (3, {"accuracy": 0.91})
    assert (msgs[3].round, msgs[3].metrics) == (4, {"loss": 0.2, "accuracy": 0.9})
    assert msgs[4].message == "multi\nline ✓"
    assert (msgs[5].trigger_name, msgs[5].trigger_arguments) == (
        "save_model",
        "--path /tmp/x --epochs 3",
    )
    assert (msgs[6].trigger_name, msgs[6].trigger_arguments) == ("ping", "")
    assert msgs[7].exception == "ValueError: bad data"
    assert all(m.time > 0 for m in msgs)
    assert outcome.returncode == 0
    assert outcome.status == "failed" and outcome.reason == "ValueError: bad data"
    assert not child.running and child.outcome is outcome
    assert rec.outputs == []


def test_stdout_garbage_does_not_affect_reports(tmp_path):
    child, rec, outcome = run_child(
        tmp_path,
        """
        r = TaskReporter()
        print('{"type": "info", "info": "Finished", "time": 1.0}')
        print('{"type":"error","exception":"fake"}')
        print("@agata-report")
        print("@agata-report {not json")
        print('{"type": "stats", "round": 1', end="", flush=True)
        r.send_stats(1, 0.5)
        print(', "metrics": {}}')
        sys.stdout.write("no newline at all")
        sys.stdout.flush()
        r.send_info("done")
        print("to stderr", file=sys.stderr)
        """,
    )
    assert rec.kinds() == [InfoMessage, StatsMessage, InfoMessage]
    assert rec.messages[1].metrics == {"accuracy": 0.5}
    assert rec.messages[2].info == "done"
    assert rec.lines("stdout") == [
        '{"type": "info", "info": "Finished", "time": 1.0}',
        '{"type":"error","exception":"fake"}',
        "@agata-report",
        "@agata-report {not json",
        '{"type": "stats", "round": 1, "metrics": {}}',
        "no newline at all",
    ]
    assert rec.lines("stderr") == ["to stderr"]
    # The fake "Finished"/"error" on stdout were not taken as reports.
    assert not outcome.finished and outcome.error is None
    assert outcome.status == "failed"
    assert outcome.reason == "exited with code 0 without reporting Finished"
    assert outcome.stderr_tail == ["to stderr"]


def test_stdout_fallback_is_understood_by_runner(tmp_path):
    _, rec, outcome = run_child(
        tmp_path,
        """
        del os.environ["AGATA_REPORT_FD"]
        r = TaskReporter()
        assert r.uses_stdout
        print("ordinary output")
        r.send_stats(2, loss=0.25)
        r.trigger("go", "a b")
        r.send_print("héllo 😀")
        sys.stdout.write("partial ")
        r.send_info("Finished")
        """,
    )
    assert rec.kinds() == [InfoMessage, StatsMessage, TriggerMessage, PrintMessage, InfoMessage]
    assert rec.messages[1].metrics == {"loss": 0.25}
    assert rec.messages[2].trigger_arguments == "a b"
    assert rec.messages[3].message == "héllo 😀"
    # A report glued to the end of a partial line is still recognised.
    assert rec.lines("stdout") == ["ordinary output", "partial "]
    assert outcome.status == "finished" and outcome.finished


def test_stdout_fallback_without_runner(tmp_path):
    script = tmp_path / "fallback.py"
    script.write_text(
        PRELUDE
        + textwrap.dedent(
            """
            r = TaskReporter()
            print("not a report")
            r.send_stats(7, 0.7, loss=0.3)
            r.send_error("boom")
            """
        )
    )
    env = child_env()
    assert REPORT_FD_ENV not in env
    proc = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, timeout=WAIT_S, check=True
    )
    lines = proc.stdout.decode().splitlines()
    assert lines[1] == "not a report"
    reports = [line for line in lines if line.startswith(STDOUT_PREFIX)]
    assert len(reports) == 3
    msgs = [parse_report_line(line[len(STDOUT_PREFIX) :]) for line in reports]
    assert msgs[0] == InfoMessage(info="Started", time=msgs[0].time)
    assert (msgs[1].round, msgs[1].metrics) == (7, {"accuracy": 0.7, "loss": 0.3})
    assert msgs[2].exception == "boom"


# --- outcomes -------------------------------------------------------------------------


def test_finished_and_exit_zero_is_finished(tmp_path):
    child, rec, outcome = run_child(
        tmp_path,
        """
        r = TaskReporter()
        r.send_stats(0, 0.1)
        r.send_info("Finished")
        """,
    )
    assert outcome.status == "finished"
    assert outcome.reason is None and outcome.error is None
    assert outcome.finished and not outcome.stopped and outcome.returncode == 0
    assert rec.exit_threads[0] is not threading.main_thread()
    # stop() after the end is a no-op returning the same outcome; on_exit stays single.
    assert child.stop(0.1) is outcome
    assert child.wait(0) is outcome
    assert rec.outcomes == [outcome]


def test_exit_zero_without_finished(tmp_path):
    code = """
        r = TaskReporter()
        r.send_stats(0, 0.1)
        """
    _, _, outcome = run_child(tmp_path, code)
    assert outcome.status == "failed"
    assert outcome.reason == "exited with code 0 without reporting Finished"
    _, _, outcome = run_child(tmp_path, code, require_finished=False)
    assert outcome.status == "finished" and outcome.reason is None


def test_nonzero_exit_without_report_has_stderr_tail(tmp_path):
    _, rec, outcome = run_child(
        tmp_path,
        """
        r = TaskReporter()
        for i in range(30):
            print(f"noise {i}", file=sys.stderr)
        raise RuntimeError("cuda out of memory")
        """,
    )
    assert outcome.status == "failed"
    assert outcome.returncode == 1 and outcome.error is None
    assert len(outcome.stderr_tail) == 20
    assert outcome.stderr_tail[-1] == "RuntimeError: cuda out of memory"
    assert outcome.reason.startswith("exited with code 1: ")
    assert "RuntimeError: cuda out of memory" in outcome.reason
    assert "noise 29" in outcome.reason and "noise 0\n" not in outcome.reason
    assert len(rec.lines("stderr")) > 30


def test_killed_by_signal(tmp_path):
    _, _, outcome = run_child(
        tmp_path,
        """
        r = TaskReporter()
        print("dying", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """,
    )
    assert outcome.returncode == -signal.SIGKILL
    assert outcome.status == "failed"
    assert outcome.reason == "killed by signal SIGKILL: dying"


def test_reported_error_wins(tmp_path):
    _, _, outcome = run_child(
        tmp_path,
        """
        r = TaskReporter()
        try:
            raise ValueError("dataset missing")
        except ValueError as exc:
            r.send_error(exc)
        r.send_error("second error")
        print("traceback noise", file=sys.stderr)
        sys.exit(2)
        """,
    )
    assert outcome.status == "failed"
    assert outcome.error == "ValueError: dataset missing"
    assert outcome.reason == "ValueError: dataset missing"
    assert outcome.returncode == 2


def test_outcome_rules_without_processes():
    def outcome(**kw):
        base = dict(returncode=0, finished=True, error=None, stopped=False, stderr_tail=[])
        base.update(kw)
        return ChildOutcome(**base)

    assert outcome().status == "finished"
    assert outcome(stopped=True, returncode=-15, finished=False).status == "stopped"
    assert outcome(stopped=True, error="x").reason is None
    assert outcome(returncode=3, stderr_tail=["a", "b"]).reason == "exited with code 3: a\nb"
    assert outcome(returncode=3).reason == "exited with code 3"
    assert outcome(returncode=-11).reason == "killed by signal SIGSEGV"
    assert outcome(finished=False).status == "failed"
    assert outcome(finished=False, require_finished=False).status == "finished"
    long_tail = outcome(returncode=1, stderr_tail=["x" * 10_000])
    assert len(long_tail.reason) < 4100 and long_tail.reason.endswith("x")


# --- robustness -----------------------------------------------------------------------


def test_stderr_flood_does_not_block_reports(tmp_path):
    counts = {"stderr": 0, "stdout": 0}
    truncated = []

    class FloodRecorder(Recorder):
        def on_output(self, stream, line):
            counts[stream] += 1
            if line.endswith(TRUNCATION_MARK):
                truncated.append(line)

    child, rec = make_child(
        tmp_path,
        """
        r = TaskReporter()
        block = (b"e" * 1023 + b"\\n") * 1024  # 1 MiB of 1 KiB lines

        def flood():
            err = sys.stderr.buffer
            for _ in range(10):
                err.write(block)
            err.write(b"y" * (1 << 20))  # 1 MiB line, ended by the next block
            for _ in range(10):
                err.write(block)
            err.flush()

        t = threading.Thread(target=flood)
        t.start()
        for i in range(200):
            r.send_stats(i, loss=float(i))
        t.join()
        sys.stderr.buffer.write(b"z" * (1 << 20))  # never terminated
        sys.stderr.flush()
        r.send_info("Finished")
        """,
        FloodRecorder(),
    )
    child.start()
    outcome = child.wait(WAIT_S)
    assert outcome is not None
    stats = [m for m in rec.messages if isinstance(m, StatsMessage)]
    assert [m.round for m in stats] == list(range(200))
    assert [m.metrics["loss"] for m in stats] == [float(i) for i in range(200)]
    assert outcome.status == "finished"
    assert counts["stderr"] == 20 * 1024 - 1 + 2
    assert len(truncated) == 2
    assert truncated[0].startswith("yyy") and truncated[1].startswith("zzz")
    for line in truncated:
        assert len(line.removesuffix(TRUNCATION_MARK).encode()) == MAX_LINE_BYTES
    assert outcome.stderr_tail[-1] == truncated[1]


def test_callback_exceptions_do_not_kill_reader(tmp_path, caplog):
    exits = []

    def boom(*_args):
        raise RuntimeError("callback bug")

    script = tmp_path / "cb.py"
    script.write_text(PRELUDE + 'r = TaskReporter()\nprint("out")\nr.send_info("Finished")\n')
    child = ChildProcess(
        python_argv(script),
        cwd=tmp_path,
        env=child_env(),
        on_message=boom,
        on_output=boom,
        on_exit=lambda o: (exits.append(o), boom()),
        name="cb",
    )
    child.start()
    outcome = child.wait(WAIT_S)
    assert outcome is not None and outcome.status == "finished"
    assert exits == [outcome]
    assert sum("callback bug" in (r.exc_text or "") for r in caplog.records) >= 3


def test_default_logging_of_output(tmp_path, caplog):
    script = tmp_path / "log.py"
    script.write_text(
        PRELUDE
        + 'r = TaskReporter()\nprint("to out")\nprint("to err", file=sys.stderr)\n'
        + 'r.send_info("Finished")\n'
    )
    caplog.set_level("DEBUG", logger="task_daemon_lib.lines")
    child = ChildProcess(python_argv(script), cwd=tmp_path, env=child_env(), name="logme")
    child.start()
    assert child.wait(WAIT_S).status == "finished"
    by_msg = {r.getMessage(): r.levelname for r in caplog.records}
    assert by_msg["[logme stdout] to out"] == "DEBUG"
    assert by_msg["[logme stderr] to err"] == "INFO"


# --- stopping -------------------------------------------------------------------------


def test_stop_kills_child_ignoring_sigterm(tmp_path):
    child, rec = make_child(
        tmp_path,
        """
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        r = TaskReporter()
        r.send_info("ready")
        time.sleep(1000)
        """,
    )
    child.start()
    assert child.running and child.outcome is None
    rec.wait_for(lambda m: isinstance(m, InfoMessage) and m.info == "ready")
    outcome = child.stop(grace_s=0.5)
    assert outcome.stopped and outcome.status == "stopped"
    assert outcome.returncode == -signal.SIGKILL
    assert outcome.reason is None
    assert not child.running
    assert child.stop(0.5) is outcome  # idempotent
    assert rec.outcomes == [outcome]


def test_stop_terminates_gracefully_and_kills_grandchildren(tmp_path):
    child, rec = make_child(
        tmp_path,
        """
        r = TaskReporter()
        p = subprocess.Popen(["sleep", "1000"])
        r.trigger("spawned", str(p.pid))
        time.sleep(1000)
        """,
    )
    child.start()
    msg = rec.wait_for(lambda m: isinstance(m, TriggerMessage))
    grandchild = int(msg.trigger_arguments)
    assert pid_alive(grandchild)
    outcome = child.stop(grace_s=5.0)
    assert outcome.status == "stopped"
    assert outcome.returncode == -signal.SIGTERM
    assert wait_gone(grandchild)
    assert rec.outcomes == [outcome]


def test_leftover_grandchild_is_killed_on_exit(tmp_path):
    # The grandchild inherits stdout/stderr; without killing it the pipes never close.
    _, rec, outcome = run_child(
        tmp_path,
        """
        r = TaskReporter()
        p = subprocess.Popen(["sleep", "1000"])
        r.trigger("spawned", str(p.pid))
        r.send_info("Finished")
        """,
    )
    assert outcome.status == "finished"
    grandchild = int(rec.messages[1].trigger_arguments)
    assert wait_gone(grandchild)


def test_request_stop_from_callback(tmp_path):
    rec = Recorder()
    holder = {}
    original = rec.on_message

    def on_message(msg):
        original(msg)
        if isinstance(msg, TriggerMessage) and msg.trigger_name == "stop-me":
            holder["child"].request_stop(0.5)
            with pytest.raises(RuntimeError):
                holder["child"].stop()

    rec.on_message = on_message
    child, _ = make_child(
        tmp_path,
        """
        r = TaskReporter()
        r.trigger("stop-me")
        time.sleep(1000)
        """,
        rec,
    )
    holder["child"] = child
    child.start()
    outcome = child.wait(WAIT_S)
    assert outcome is not None and outcome.status == "stopped"
    assert rec.outcomes == [outcome]


def test_lifecycle_errors(tmp_path):
    child = ChildProcess(["true"], cwd=tmp_path)
    assert child.pid is None and not child.running
    with pytest.raises(RuntimeError):
        child.stop()
    with pytest.raises(RuntimeError):
        child.wait(0)
    with pytest.raises(ValueError):
        ChildProcess([], cwd=tmp_path)
    with pytest.raises(FileNotFoundError):
        ChildProcess([str(tmp_path / "missing")], cwd=tmp_path).start()
    child = ChildProcess(["true"], cwd=tmp_path, require_finished=False)
    child.start()
    with pytest.raises(RuntimeError):
        child.start()
    assert child.wait(WAIT_S).status == "finished"


def test_python_argv():
    assert python_argv(Path("/x/server.py"), "--rounds", "3") == [
        sys.executable,
        "-u",
        "/x/server.py",
        "--rounds",
        "3",
    ]


# --- line splitting -------------------------------------------------------------------


def test_line_splitter():
    s = _LineSplitter(limit=8)
    assert s.feed(b"ab") == []
    assert s.feed(b"c\r\nde\n\nf") == ["abc", "de", ""]
    assert s.feed(b"12345678\n") == ["f1234567" + TRUNCATION_MARK]
    assert s.feed(b"12345678\n") == ["12345678"]
    assert s.feed(b"123456789") == ["12345678" + TRUNCATION_MARK]
    assert s.feed(b"more junk") == []
    assert s.feed(b"junk\nok\n") == ["ok"]
    assert s.feed(b"\xff\xfe\n") == ["\ufffd\ufffd"]
    assert s.feed(b"tail") == []
    assert s.flush() == ["tail"]
    assert s.flush() == []
