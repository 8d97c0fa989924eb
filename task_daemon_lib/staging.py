"""A confined warm spare's own folders, filled with its run's when it takes one.

A spare is started in its sandbox before its run is known, so it cannot be shown the run's
app and results folders. Each spare gets a stage instead: ``<pool>/spare-XXXX/app`` (bound
read-only), ``.../results`` and ``.../state`` (bound writable; the state folder is a ServerApp
host's checkpoints), all empty. When the spare takes a run, the manager fills the stage: the
app's files are hard-linked (copied across file systems) into ``app``, and ``results`` (and
``state``, where the run has one) *becomes* the run's folder (what that folder held moves in,
then the stage's folder is renamed over it). A bind mount follows the folder it was made of,
not its name, so the sandbox writes into the run's results folder at its usual place on the
host, while the job names the stage's paths, which are where the sandbox sees them. The move
waits until the sandbox has bound the stage (a spare taken the moment it starts may not have).
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PREFIX = "spare-"
BIND_WAIT_S = 10.0


@dataclass(frozen=True)
class SpareStage:
    """The folders one spare sees of its future run."""

    root: Path

    @property
    def app(self) -> Path:
        """Where the spare reads its app (read-only in its sandbox)."""
        return self.root / "app"

    @property
    def results(self) -> Path:
        """Where the spare writes its results."""
        return self.root / "results"

    @property
    def state(self) -> Path:
        """Where the spare keeps its run's state (a ServerApp host's checkpoints)."""
        return self.root / "state"

    @classmethod
    def create(cls, pool_dir: Path) -> SpareStage:
        """A new, empty stage in ``pool_dir``."""
        pool_dir.mkdir(parents=True, exist_ok=True)
        stage = cls(Path(tempfile.mkdtemp(prefix=PREFIX, dir=pool_dir)))
        stage.app.mkdir()
        stage.results.mkdir()
        stage.state.mkdir()
        return stage

    def fill(self, app_dir: Path, results_dir: Path, sandbox_pid: int | None = None, *,
             state_dir: Path | None = None) -> None:
        """Show the spare ``app_dir``'s files and make its results folder ``results_dir`` (and
        its state folder ``state_dir``, when given), once the sandbox of ``sandbox_pid`` (when
        given) has bound the stage (OSError when it does not within ``BIND_WAIT_S``, or the
        folders are not on one file system with it)."""
        if sandbox_pid is not None:
            self.wait_bound(sandbox_pid)
        moves = [(self.results, results_dir)]
        if state_dir is not None:
            moves.append((self.state, state_dir))
        for _, run_folder in moves:
            run_folder.mkdir(parents=True, exist_ok=True)
        _link_tree(app_dir, self.app)
        for stage_folder, run_folder in moves:
            if os.stat(run_folder).st_dev != os.stat(stage_folder).st_dev:
                raise OSError(errno.EXDEV, f"{run_folder} is on another file system than the "
                                           "spare's stage")
        for stage_folder, run_folder in moves:
            for entry in list(run_folder.iterdir()):
                os.rename(entry, stage_folder / entry.name)
            os.rename(stage_folder, run_folder)

    def wait_bound(self, sandbox_pid: int, timeout_s: float = BIND_WAIT_S) -> None:
        """Wait until the sandbox started as ``sandbox_pid`` (bwrap) shows the stage's results
        folder as one of its mounts."""
        deadline = time.monotonic() + timeout_s
        while not _mounted_in_child(sandbox_pid, self.results):
            if time.monotonic() > deadline:
                raise OSError(f"the spare's sandbox (pid {sandbox_pid}) did not bind its stage "
                              f"within {timeout_s:g} s")
            time.sleep(0.005)

    def remove(self) -> None:
        """Remove the stage (its results folder, when taken, lives on as the run's)."""
        shutil.rmtree(self.root, ignore_errors=True)

    @staticmethod
    def clear_stale(pool_dir: Path) -> None:
        """Remove the stages an earlier manager left (their spares died with it)."""
        if pool_dir.is_dir():
            for stale in pool_dir.glob(f"{PREFIX}*"):
                shutil.rmtree(stale, ignore_errors=True)


def _mounted_in_child(pid: int, path: Path) -> bool:
    """Whether a child of ``pid`` (the sandbox bwrap made) has a mount at ``path``."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        for child in children:
            for line in Path(f"/proc/{child}/mountinfo").read_text().splitlines():
                fields = line.split()
                if len(fields) > 4 and fields[4] == str(path):
                    return True
    except OSError:
        return False
    return False


def _link_tree(source: Path, target: Path) -> None:
    """Hard-link every regular file of ``source`` into ``target`` at the same relative path
    (copied where a link cannot be made); links and other special files are left out."""
    for folder, directories, files in os.walk(source):
        relative = Path(folder).relative_to(source)
        (target / relative).mkdir(parents=True, exist_ok=True)
        directories[:] = [name for name in directories
                          if not (Path(folder) / name).is_symlink()]
        for name in files:
            path = Path(folder) / name
            if path.is_symlink() or not path.is_file():
                continue
            try:
                os.link(path, target / relative / name)
            except OSError:
                shutil.copy2(path, target / relative / name)
