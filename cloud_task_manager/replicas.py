"""Several cloud task managers on one database: who is alive, and who owns which run.

Each manager process is a replica with a stable id (configured, or kept in its data folder).
It renews its lease, a row of the table ``replicas``, every third of ``lease_s``. The replica
that starts a run owns it (``tasks.owner``): its server is that replica's child. Any replica
answers reads; a stop that lands on another replica reaches the owner on the owner's own
queue. When an owner's lease runs out (it died) or it leaves (shut down while others live),
another replica claims its runs, one compare-and-set update each, and recovers them from their
checkpoints. A replica that finds a run it serves owned by another (it was thought dead) stops
that server without recording anything: the owner records. Every committed task change is
broadcast (``TasksChanged``), so each replica drops its snapshot of the running tasks' offers
before it answers another poll: the change is published before the call that made it replies.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine, delete, insert, select, update

from agata_common.database import database_now
from agata_contracts.rpc import Audience, RpcSpec
from agata_contracts.tasks import Task, TaskIdRequest
from cloud_task_manager.models import ReplicaRecord
from microservice_interconnect.service import rpc

logger = logging.getLogger(__name__)

REPLICA_ID_FILE = "replica_id"
_REPLICA_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")

STOP_OWNED_RUN: RpcSpec[TaskIdRequest, Task] = RpcSpec(
    name="rpc_exec_stop_owned_run",
    service="cloud_task_manager",
    request=TaskIdRequest,
    response=Task,
    summary="Stop a task's run on the replica that owns it (between replicas only).",
    audiences=frozenset({Audience.INTERNAL}),
)


class TasksChanged(BaseModel):
    """A replica committed a change to task records: the others drop what they derived from
    them (the running tasks' offers) before their next poll."""

    model_config = ConfigDict(extra="forbid")

    replica: str


def tasks_changed_exchange(queue_prefix: str) -> str:
    """The fanout exchange replicas tell each other of task changes on."""
    return f"{queue_prefix}cloud_task_manager.tasks_changed"


def replica_id_for(configured: str, data_dir: Path) -> str:
    """The replica's id: the configured one, else the one kept in ``data_dir`` (made once)."""
    if configured:
        return configured
    path = data_dir / REPLICA_ID_FILE
    try:
        kept = path.read_text().strip()
    except FileNotFoundError:
        kept = ""
    if _REPLICA_ID.match(kept):
        return kept
    made = f"ctm-{secrets.token_hex(6)}"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(descriptor, "w") as output:
        output.write(made + "\n")
    return made


def owner_queue_prefix(queue_prefix: str, replica_id: str) -> str:
    """Where a replica serves the requests only it can answer."""
    return f"{queue_prefix}replica.{replica_id}."


class Replicas:
    """The ``replicas`` table: this replica's lease and who else is alive."""

    def __init__(self, engine: Engine, replica_id: str, lease_s: float) -> None:
        self.engine = engine
        self.replica_id = replica_id
        self.lease_s = lease_s

    def renew(self) -> None:
        """Say this replica is alive (by the database's clock, which every replica shares).
        Plain statements, no ORM session: it runs every few seconds for the process's life."""
        now = database_now(self.engine)
        with self.engine.begin() as connection:
            renewed = connection.execute(update(ReplicaRecord)
                                         .where(ReplicaRecord.id == self.replica_id)
                                         .values(seen_at=now))
            if renewed.rowcount == 0:
                connection.execute(insert(ReplicaRecord).values(
                    id=self.replica_id, seen_at=now, started_at=now))

    def leave(self) -> None:
        """Say this replica is gone (its runs may be taken over at once)."""
        with self.engine.begin() as connection:
            connection.execute(delete(ReplicaRecord).where(ReplicaRecord.id == self.replica_id))

    def alive(self) -> set[str]:
        """The replicas whose lease has not run out (this one included once renewed)."""
        since = database_now(self.engine) - timedelta(seconds=self.lease_s)
        with self.engine.connect() as connection:
            return set(connection.scalars(
                select(ReplicaRecord.id).where(ReplicaRecord.seen_at > since)))

    def others_alive(self) -> bool:
        """Whether another replica could take this one's runs over."""
        return bool(self.alive() - {self.replica_id})


class OwnerEndpoint:
    """The requests only the owner of a run can answer, served on its own queue."""

    def __init__(self, stop_here: Callable[[str], Task]) -> None:
        self._stop_here = stop_here

    @rpc(STOP_OWNED_RUN)
    def stop_owned_run(self, request: TaskIdRequest) -> Task:
        """Stop the run this replica serves (never forwarded further)."""
        return self._stop_here(request.task_id)


class OrphanScans:
    """When to look for runs whose owner died: that query is the costly part of a lease tick,
    and most ticks find every replica as alive as before. A scan is due at the first tick,
    after a replica seen alive is no longer, and every ``every`` ticks besides (a replica
    that came and went between two ticks); one that failed is due again at the next tick."""

    def __init__(self, every: int = 5) -> None:
        self.every = every
        self._seen: set[str] | None = None
        self._someone_left = True
        self._ticks = 0

    def due(self, alive: set[str]) -> bool:
        """Whether this tick, which found ``alive``, should scan."""
        self._ticks += 1
        if self._seen is not None and self._seen - alive:
            self._someone_left = True
        self._seen = set(alive)
        return self._someone_left or self._ticks >= self.every

    def done(self) -> None:
        """The scan of this tick went through."""
        self._someone_left = False
        self._ticks = 0


class LeaseKeeper:
    """Renews the lease every third of it (a thread of its own, so no takeover delays it) and,
    after each renewal, lets ``work`` fence and take over runs (another thread; a renewal
    coming while it works is not queued twice)."""

    def __init__(self, replicas: Replicas, work: Callable[[set[str]], None]) -> None:
        self.replicas = replicas
        self.work = work
        self._stop = threading.Event()
        self._working = True
        self._due = threading.Event()
        self._renewer = threading.Thread(target=self._renew, name="replica-lease", daemon=True)
        self._worker = threading.Thread(target=self._work, name="replica-takeover", daemon=True)

    def start(self) -> None:
        """Renew now, then keep renewing and working."""
        self.replicas.renew()
        self._renewer.start()
        self._worker.start()

    def stop_working(self) -> None:
        """No more fencing or takeovers (shutting down); the lease is still renewed."""
        self._working = False
        self._due.set()

    def stop(self) -> None:
        """Stop renewing (the lease runs out unless :meth:`Replicas.leave` is called)."""
        self.stop_working()
        self._stop.set()
        for thread in (self._renewer, self._worker):
            if thread.is_alive():
                thread.join(self.replicas.lease_s)

    def _renew(self) -> None:
        while not self._stop.wait(self.replicas.lease_s / 3):
            try:
                self.replicas.renew()
            except Exception as exc:
                logger.warning("replica %s: lease not renewed: %s", self.replicas.replica_id, exc)
                continue
            self._due.set()

    def _work(self) -> None:
        while self._working:
            self._due.wait()
            self._due.clear()
            if not self._working:
                return
            try:
                self.work(self.replicas.alive())
            except Exception:
                logger.exception("replica %s: fencing or takeover failed",
                                 self.replicas.replica_id)
