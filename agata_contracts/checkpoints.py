"""Checkpoints of a Flower App's run, and how an app resumes from one.

After every round the ServerApp host of an app that declares ``resume = true`` (below) keeps
the global model the app's strategy sends its devices (the arrays of its ``train`` and
``evaluate`` instructions) as an ``.npz`` file in the run's state folder (the manager's
``<data_dir>/run-state/task_<id>/run_<n>/``, outside the results folder the app works in), and
reports it; the cloud task manager keeps a verified copy in a folder of its own, out of the
app's reach, and in a shared database. The host also keeps every report it sends in that
folder (``reports.jsonl``), so the reports of a server whose manager died are read back, not
lost.

When the cloud task manager comes back after dying mid-run, it starts the run again, same run
number and same credentials, so the devices rejoin it:

* an app that declares ``resume = true`` in its ``[tool.agata]`` table continues after the
  last completed round. Its ServerApp finds in ``context.state``:

  - ``"agata.resume"``: a ``ConfigRecord`` with ``"round"``, the rounds already done;
  - ``"agata.checkpoint"``: an ``ArrayRecord``, the global model after that round;

  and starts its strategy from those arrays for the rounds that are left. The host numbers the
  rounds it reports after the ones done, so the run's record reads on without a gap.
* any other app (and a script task) is started again from round 0, and the task says so;
  its host keeps no checkpoints, which it would never read (a large model's would cost a
  disk write per round and hold one more copy of the model while it is written).
"""

from __future__ import annotations

import re
from typing import Final

STATE_DIR: Final = ".agata"
"""A device run's state folder inside its results folder (never collected as a result); a
ServerApp host's without ``--state-dir``."""
SPOOL_FILE: Final = "reports.jsonl"
"""Every report the ServerApp host sent, one report line each, in the state folder."""
RESUME_FILE: Final = "resume.npz"
"""The checkpoint a resumed run starts from, in the state folder."""
RESUME_KEY: Final = "agata.resume"
"""``context.state`` key of the ``ConfigRecord`` telling a resumed ServerApp where it is."""
CHECKPOINT_KEY: Final = "agata.checkpoint"
"""``context.state`` key of the ``ArrayRecord`` a resumed ServerApp starts from."""
META_KEY: Final = "__agata_meta__"
"""The ``.npz`` entry holding the checkpoint's JSON description (round, time)."""
ROUND_KEY: Final = "round"
"""The ``ConfigRecord`` entry of ``agata.resume``: the rounds already done."""

_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d{1,9})\.npz$")


def checkpoint_name(round_number: int) -> str:
    """The file name of the checkpoint taken after ``round_number`` rounds."""
    if round_number < 0:
        raise ValueError(f"round {round_number} is negative")
    return f"checkpoint-{round_number}.npz"


def checkpoint_round(name: str) -> int | None:
    """The round of a checkpoint file name; None when ``name`` is not one."""
    match = _CHECKPOINT_NAME.match(name)
    return int(match.group(1)) if match else None
