"""The confined executor: the bwrap command line (pure), the choice of mechanism, and real
sandboxed processes, fresh and warm (a staged spare given its run's folders)."""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import pytest

from task_daemon_lib import confinement, landlock
from task_daemon_lib.confined import ConfinedExecutor
from task_daemon_lib.confinement import Confinement, Mechanism, SandboxView, bwrap_argv
from task_daemon_lib.executors import ProcessSpec
from task_daemon_lib.launcher import start_task_process
from task_daemon_lib.messages import PrintMessage, ReportMessage
from task_daemon_lib.runner import ChildOutcome, task_environ
from task_daemon_lib.staging import SpareStage
from task_daemon_lib.warm import WarmPool

ROOT = Path(__file__).resolve().parents[2]

# Reports what it could do: read a secret outside its folders, see other processes, write
# outside its results folder; then reads its app's file and writes a result.
PROBE = """
import json, os, sys
from pathlib import Path
from task_daemon_lib.task_reporter import TaskReporter
job = json.loads(sys.stdin.readline()) if len(sys.argv) > 1 else {
    "app": os.getcwd(), "results": os.environ["AGATA_RESULTS_DIR"], "secret": sys.argv[0]}
seen = {}
try:
    seen["secret"] = Path(job["secret"]).read_text()
except OSError as exc:
    seen["secret"] = None
try:
    seen["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
except OSError:
    seen["pids"] = None
try:
    seen["manager_environ"] = len(Path(f"/proc/{os.environ['PROBE_MANAGER']}/environ").read_bytes())
except (OSError, KeyError):
    seen["manager_environ"] = None
try:
    Path(job["app"], "written.txt").write_text("x")
    seen["app_write"] = True
except OSError:
    seen["app_write"] = False
seen["app_file"] = Path(job["app"], "app.txt").read_text()
if job.get("state"):
    seen["resume"] = Path(job["state"], "resume.npz").read_text()
    Path(job["state"], "checkpoint.npz").write_text("round 1")
Path(job["results"], "result.txt").write_text("done")
TaskReporter().send_print(json.dumps(seen))
TaskReporter().send_info("Finished")
"""

needs_bwrap = pytest.mark.skipif(confinement.choose().mechanism is not Mechanism.BWRAP,
                                 reason="bubblewrap cannot start a sandbox here")


class Run:
    """One run's callbacks."""

    def __init__(self) -> None:
        self.messages: list[ReportMessage] = []
        self.lines: list[str] = []
        self.outcome: ChildOutcome | None = None
        self.ended = threading.Event()

    def message(self, message: ReportMessage) -> None:
        self.messages.append(message)

    def output(self, stream: str, line: str) -> None:
        self.lines.append(line)

    def exited(self, outcome: ChildOutcome) -> None:
        self.outcome = outcome
        self.ended.set()

    def seen(self) -> dict[str, object]:
        assert self.ended.wait(30), "the probe did not end"
        assert self.outcome is not None and self.outcome.status == "finished", self.outcome
        prints = [m.message for m in self.messages if isinstance(m, PrintMessage)]
        value: dict[str, object] = json.loads(prints[-1])
        return value


def test_bwrap_argv_binds_exactly_the_view() -> None:
    view = SandboxView(read_only=(Path("/srv/app"), Path("/opt/py"), Path("/srv/app")),
                       writable=(Path("/srv/results"),), cwd=Path("/srv/app"),
                       system=("--dev", "/dev"))
    argv = bwrap_argv("/usr/bin/bwrap", view, ["python", "-c", "pass"])
    assert argv[0] == "/usr/bin/bwrap"
    assert argv[argv.index("--") + 1:] == ["python", "-c", "pass"]
    head = argv[:argv.index("--")]
    pairs = [(head[i], head[i + 1], head[i + 2]) for i, word in enumerate(head)
             if word in ("--ro-bind", "--bind")]
    assert pairs == [("--ro-bind", "/srv/app", "/srv/app"), ("--ro-bind", "/opt/py", "/opt/py"),
                     ("--bind", "/srv/results", "/srv/results")]
    for flag in ("--unshare-pid", "--unshare-user", "--die-with-parent", "--dev"):
        assert flag in head
    assert "--unshare-net" not in head and "--share-net" not in head
    assert head[head.index("--chdir") + 1] == "/srv/app"
    assert head[head.index("--remount-ro") + 1] == "/"
    assert head[head.index("--cap-drop") + 1] == "ALL"
    assert head[head.index("--uid") + 1] == str(confinement.SANDBOX_UID)
    without = bwrap_argv("bwrap", view, ["true"], user_namespace=False)
    assert "--unshare-user" not in without and "--uid" not in without


@needs_bwrap
def test_a_readable_path_is_bound_where_it_exists_and_a_missing_one_is_no_error(
        tmp_path: Path) -> None:
    data = tmp_path / "data-set.txt"
    data.write_text("the device's data")
    app, results, _ = _folders(tmp_path)
    executor = ConfinedExecutor(readable=(data, tmp_path / "missing-ca.pem"))
    run = Run()
    child = executor.process(ProcessSpec(
        [sys.executable, "-c", f"from pathlib import Path; import sys; "
                               f"sys.stdout.write(Path({str(data)!r}).read_text())"],
        cwd=app, env=probe_environ(results), on_output=run.output, on_exit=run.exited,
        require_finished=False, task_dir=app, results_dir=results))
    child.start()
    assert run.ended.wait(30) and run.outcome is not None
    assert run.outcome.status == "finished", run.outcome
    assert run.lines == ["the device's data"]


@needs_bwrap
def test_a_confined_process_killed_by_a_signal_is_reported_so(tmp_path: Path) -> None:
    app, results, _ = _folders(tmp_path)
    run = Run()
    child = ConfinedExecutor().process(ProcessSpec(
        [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
        cwd=app, env=probe_environ(results), on_exit=run.exited, task_dir=app,
        results_dir=results))
    child.start()
    assert run.ended.wait(30) and run.outcome is not None
    assert run.outcome.reason == "killed by signal SIGKILL", run.outcome


def test_system_arguments_mirror_links_and_show_only_chosen_etc_files(tmp_path: Path) -> None:
    (tmp_path / "usr" / "lib").mkdir(parents=True)
    (tmp_path / "lib").symlink_to("usr/lib")
    (tmp_path / "etc").mkdir()
    for name in ("shadow", "hosts", "passwd"):
        (tmp_path / "etc" / name).write_text(name)
    arguments = confinement.system_arguments(tmp_path)
    assert ["--symlink", "usr/lib", "/lib"] == list(arguments[arguments.index("--symlink"):
                                                         arguments.index("--symlink") + 3])
    assert str(tmp_path / "usr") in arguments
    assert "/etc/hosts" in arguments and "/etc/passwd" in arguments
    assert not any("shadow" in word for word in arguments)
    assert arguments[-6:] == ("--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp")


def test_without_bwrap_nor_landlock_the_choice_is_none_and_says_why(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(confinement.shutil, "which", lambda name: None)
    monkeypatch.setattr(confinement.landlock, "command", lambda *args: ["false"])
    chosen = confinement.choose()
    assert chosen.mechanism is Mechanism.NONE and "bwrap is not installed" in chosen.detail
    assert "Landlock refused" in chosen.detail
    confinement.record(tmp_path, chosen)
    assert "TASK CODE RUNS UNCONFINED" in caplog.text
    assert confinement.read(tmp_path) == {"mechanism": "none", "detail": chosen.detail}


def test_an_unconfined_executor_runs_plain_children(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    monkeypatch.setattr(confinement, "choose",
                        lambda: Confinement(Mechanism.NONE, "refused for the test"))
    executor = ConfinedExecutor()
    assert not executor.stages_spares
    child = executor.process(ProcessSpec([sys.executable, "-c", "pass"], cwd=tmp_path, env={},
                                         require_finished=False))
    child.start()
    outcome = child.wait(30)
    assert outcome is not None and outcome.status == "finished"


def _folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    app, results = tmp_path / "tasks" / "app", tmp_path / "results" / "run_1"
    app.mkdir(parents=True)
    (app / "app.txt").write_text("the app")
    (app / "probe.py").write_text(PROBE)
    secret = tmp_path / "secrets" / "device_credential.json"
    secret.parent.mkdir()
    secret.write_text("top secret")
    return app, results, secret


@needs_bwrap
def test_a_confined_process_sees_only_its_folders(tmp_path: Path) -> None:
    app, results, secret = _folders(tmp_path)
    run = Run()
    child = ConfinedExecutor().process(ProcessSpec(
        [sys.executable, str(app / "probe.py")], cwd=app, env=probe_environ(results),
        on_message=run.message, on_exit=run.exited, task_dir=app, results_dir=results))
    child.start()
    seen = run.seen()
    assert seen["app_file"] == "the app"
    assert seen["app_write"] is False and seen["manager_environ"] is None
    assert (results / "result.txt").read_text() == "done"
    assert not (app / "written.txt").exists()
    pids = seen["pids"]
    assert isinstance(pids, list) and len(pids) <= 3  # its own PID namespace
    run2 = Run()
    other = ConfinedExecutor().process(ProcessSpec(
        [sys.executable, "-c", PROBE.replace('sys.argv[0]', repr(str(secret)))], cwd=app,
        env=probe_environ(results), on_message=run2.message, on_exit=run2.exited,
        task_dir=app, results_dir=results))
    other.start()
    assert run2.seen()["secret"] is None


def probe_environ(results: Path) -> dict[str, str]:
    return task_environ({"PYTHONPATH": str(ROOT), "AGATA_RESULTS_DIR": str(results),
                         "PROBE_MANAGER": str(os.getpid())})


needs_landlock = pytest.mark.skipif(landlock.abi_version() < 1,
                                    reason="this kernel has no Landlock")


@needs_landlock
def test_where_bubblewrap_is_refused_landlock_confines_without_spares(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(confinement.shutil, "which", lambda name: None)
    chosen = confinement.choose()
    assert chosen.mechanism is Mechanism.LANDLOCK, chosen
    assert "bwrap is not installed" in chosen.detail
    app, results, secret = _folders(tmp_path)
    executor = ConfinedExecutor()
    assert not executor.spares_allowed and not executor.stages_spares
    run = Run()
    child = executor.process(ProcessSpec(
        [sys.executable, "-c", PROBE.replace('sys.argv[0]', repr(str(secret)))], cwd=app,
        env=probe_environ(results), on_message=run.message, on_exit=run.exited,
        task_dir=app, results_dir=results))
    child.start()
    seen = run.seen()
    assert seen["secret"] is None and seen["app_write"] is False
    assert seen["manager_environ"] is None and seen["pids"] is None  # /proc: itself only
    assert seen["app_file"] == "the app"
    assert (results / "result.txt").read_text() == "done"
    assert not (app / "written.txt").exists()


def test_landlock_rules_grant_reading_the_system_and_writing_results_only(
        tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    granted = dict(landlock.rules([str(tmp_path)], [str(tmp_path / "results")],
                                  [str(tmp_path.parent)]))
    assert granted[str(tmp_path.parent)] == landlock.READ_DIR  # names, not contents
    assert granted[str(tmp_path)] == landlock.READ
    assert granted[str(tmp_path / "results")] == -1  # every right the kernel handles
    assert granted["/proc/self"] == landlock.READ and granted["/dev"] == landlock.DEVICES
    assert "/proc" not in granted  # no other process
    assert not landlock.READ & (landlock.WRITE_FILE | (1 << 8))  # no writing, no creating
    command = landlock.command(["/usr"], ["/srv/r"], ["python", "-c", "pass"])
    assert command[command.index("--") + 1:] == ["python", "-c", "pass"]
    assert command[command.index("--ro") + 1] == "/usr"
    assert command[command.index("--rw") + 1] == "/srv/r"


@needs_bwrap
def test_a_staged_spare_takes_its_run_folders(tmp_path: Path) -> None:
    app, results, secret = _folders(tmp_path)
    (results / ".agata").mkdir(parents=True)
    (results / ".agata" / "resume.npz").write_text("checkpoint")
    pool = WarmPool([sys.executable, "-c", PROBE, "warm"], tmp_path / "spares",
                    name="probe", spares=1, executor=ConfinedExecutor(),
                    env={"PYTHONPATH": str(ROOT)})
    try:
        pool.prepare()
        run = Run()
        taken = pool.take("run", run.message, run.exited, task_dir=app, results_dir=results)
        assert taken.app is not None and taken.results is not None
        assert taken.app != app and taken.results != results
        taken.process.send_input(json.dumps({"app": str(taken.app),
                                             "results": str(taken.results),
                                             "secret": str(secret)}))
        seen = run.seen()
        assert seen["secret"] is None and seen["app_write"] is False
        assert seen["app_file"] == "the app"
        assert (results / "result.txt").read_text() == "done"
        assert (results / ".agata" / "resume.npz").read_text() == "checkpoint"
    finally:
        pool.close()
    assert list((tmp_path / "spares").glob("spare-*")) == []


@needs_bwrap
@pytest.mark.parametrize("spares", [1, 0])
def test_the_launcher_writes_the_job_for_the_folders_the_process_sees(tmp_path: Path,
                                                                     spares: int) -> None:
    app, results, secret = _folders(tmp_path)
    executor = ConfinedExecutor()
    pool = WarmPool([sys.executable, "-c", PROBE, "warm"], tmp_path / "spares", name="probe",
                    spares=spares, executor=executor, env={"PYTHONPATH": str(ROOT)})
    state = tmp_path / "run-state" / "run_1"
    state.mkdir(parents=True)
    (state / "resume.npz").write_text("the last checkpoint")
    asked: list[tuple[Path, Path | None, Path | None]] = []

    def job(seen_app: Path, seen_results: Path | None, seen_state: Path | None) -> str:
        asked.append((seen_app, seen_results, seen_state))
        return json.dumps({"app": str(seen_app), "results": str(seen_results),
                           "state": str(seen_state), "secret": str(secret)})

    try:
        pool.prepare()
        run = Run()
        start_task_process(ProcessSpec(pool.argv, cwd=app, env=pool.env, name="run",
                                       on_message=run.message, on_exit=run.exited,
                                       task_dir=app, results_dir=results, state_dir=state),
                           executor, warm=pool, job=job)
        seen = run.seen()
    finally:
        pool.close()
    assert seen["secret"] is None and seen["app_file"] == "the app"
    assert (results / "result.txt").read_text() == "done"
    assert seen["resume"] == "the last checkpoint"
    assert (state / "checkpoint.npz").read_text() == "round 1"
    stage = tmp_path / "spares"
    [(seen_app, seen_results, seen_state)] = asked
    if spares:  # the spare's stage, where its sandbox binds the run's folders
        assert seen_app.parent.parent == stage
        assert seen_results is not None and seen_state is not None
        assert seen_results.parent == seen_state.parent == seen_app.parent
    else:  # a sandbox made for the run binds them where they are
        assert (seen_app, seen_results, seen_state) == (app, results, state)


def test_a_stage_moves_the_results_folder_in_place(tmp_path: Path) -> None:
    app, results, _ = _folders(tmp_path)
    (results / "old.txt").parent.mkdir(parents=True)
    (results / "old.txt").write_text("kept")
    stage = SpareStage.create(tmp_path / "pool")
    moved = os.stat(stage.results).st_ino
    stage.fill(app, results)
    assert os.stat(results).st_ino == moved
    assert (results / "old.txt").read_text() == "kept"
    assert (stage.app / "app.txt").read_text() == "the app"
    assert os.stat(stage.app / "app.txt").st_ino == os.stat(app / "app.txt").st_ino
    stage.remove()
    assert (app / "app.txt").exists() and not stage.root.exists()
