"""WarmPool on real child processes: spares started ahead, handed out bound to a run, ended."""

from __future__ import annotations

import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from task_daemon_lib.messages import PrintMessage, ReportMessage
from task_daemon_lib.runner import ChildOutcome
from task_daemon_lib.warm import WarmPool

# A stand-in warm process: waits for its job line, echoes it as a report, finishes.
CHILD = (
    "import sys\n"
    "from task_daemon_lib.task_reporter import TaskReporter\n"
    "line = sys.stdin.readline()\n"
    "if line:\n"
    "    reporter = TaskReporter()\n"
    "    reporter.send_print('job ' + line.strip())\n"
    "    reporter.send_info('Finished')\n"
)


class Run:
    """One run's callbacks, recording what reached them."""

    def __init__(self) -> None:
        self.messages: list[ReportMessage] = []
        self.outcome: ChildOutcome | None = None
        self.ended = threading.Event()

    def message(self, message: ReportMessage) -> None:
        self.messages.append(message)

    def exited(self, outcome: ChildOutcome) -> None:
        self.outcome = outcome
        self.ended.set()


def child_argv(marker: str, code: str = CHILD) -> list[str]:
    """A stand-in spare's command line, found again by its ``marker``."""
    return [sys.executable, "-c", code, marker]


def pool(tmp_path: Path, spares: int, marker: str = "warm-test", *, code: str = CHILD,
         retarget: Callable[[Path], list[str]] | None = None) -> WarmPool:
    return WarmPool(child_argv(marker, code), tmp_path / "work", name="test worker",
                    spares=spares, retarget=retarget,
                    env={"PYTHONPATH": str(Path(__file__).parents[2])})


def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def processes_with(marker: str) -> list[int]:
    """Pids of live processes whose command line holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes().split(b"\x00"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_spares_are_handed_out_bound_to_their_run_and_replaced_on_request(tmp_path: Path) -> None:
    warm = pool(tmp_path, spares=2)
    try:
        warm.prepare()
        first_run, second_run = Run(), Run()
        first = warm.take("run 1", first_run.message, first_run.exited).process
        second = warm.take("run 2", second_run.message, second_run.exited).process
        assert first.pid != second.pid
        first.send_input("one")
        second.send_input("two")
        for run, job in ((first_run, "one"), (second_run, "two")):
            assert run.ended.wait(30)
            assert run.outcome is not None and run.outcome.status == "finished"
            assert [m.message for m in run.messages if isinstance(m, PrintMessage)] == [
                f"job {job}"]
        warm.prepare()
        third_run = Run()
        third = warm.take("run 3", third_run.message, third_run.exited).process
        assert third.running and third.pid not in (first.pid, second.pid)
        third.close_input()
        assert third_run.ended.wait(30)
    finally:
        warm.close()


def test_without_spares_a_run_gets_a_fresh_child_and_close_ends_the_spares(tmp_path: Path) -> None:
    cold = pool(tmp_path, spares=0)
    cold.prepare()
    run = Run()
    child = cold.take("run", run.message, run.exited).process
    child.send_input("cold")
    assert run.ended.wait(30) and run.outcome is not None
    assert run.outcome.status == "finished"

    marker = f"warm-test-{uuid.uuid4().hex}"
    warm = pool(tmp_path, spares=2, marker=marker)
    warm.prepare()
    # a fresh child shows the marker once it has exec'd: wait for that, bounded
    assert eventually(lambda: len(processes_with(marker)) == 2), processes_with(marker)
    warm.close()
    assert processes_with(marker) == []
    warm.prepare()
    assert processes_with(marker) == []


def test_spares_follow_the_runs_and_those_of_an_older_command_line_are_replaced(
        tmp_path: Path) -> None:
    before, after = f"warm-before-{uuid.uuid4().hex}", f"warm-after-{uuid.uuid4().hex}"
    apps_seen: list[Path] = []

    def retarget(app: Path) -> list[str]:
        apps_seen.append(app)
        return child_argv(after)

    warm = pool(tmp_path, 2, before, retarget=retarget)
    try:
        warm.prepare()
        assert eventually(lambda: len(processes_with(before)) == 2)
        run = Run()
        taken = warm.take("run 1", run.message, run.exited, task_dir=tmp_path / "app").process
        assert apps_seen == [tmp_path / "app"]
        assert taken.pid in processes_with(before)  # no spare of the new line yet: an old one
        warm.prepare()  # the other old spare ends; two of the new line start
        assert eventually(lambda: processes_with(before) == [taken.pid]), processes_with(before)
        assert eventually(lambda: len(processes_with(after)) == 2), processes_with(after)
        second = Run()
        again = warm.take("run 2", second.message, second.exited).process
        assert again.pid in processes_with(after)
        for child, state in ((taken, run), (again, second)):
            child.send_input("job")
            assert state.ended.wait(30)
    finally:
        warm.close()
    assert processes_with(after) == []


def test_close_ends_a_replaced_spare_that_did_not_exit_by_itself(tmp_path: Path) -> None:
    stubborn, after = f"warm-stubborn-{uuid.uuid4().hex}", f"warm-after-{uuid.uuid4().hex}"
    # old spares still importing: they read no input, so end-of-file does not end them
    warm = pool(tmp_path, 2, stubborn, code="import time; time.sleep(60)",
                retarget=lambda _app: child_argv(after))
    try:
        warm.prepare()
        assert eventually(lambda: len(processes_with(stubborn)) == 2)
        run = Run()
        taken = warm.take("run", run.message, run.exited, task_dir=tmp_path / "app").process
        taken.request_stop(1)  # the run's own process: ended by its run
        assert run.ended.wait(30)
        warm.prepare()  # the other old spare is told to go, and ignores it
        assert eventually(lambda: len(processes_with(after)) == 2)
        assert len(processes_with(stubborn)) == 1
    finally:
        warm.close()
    assert eventually(lambda: processes_with(stubborn) == [] and processes_with(after) == [])
