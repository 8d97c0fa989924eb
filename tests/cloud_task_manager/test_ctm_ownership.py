"""Who owns a run, in process on a real database and real server processes: a replica serving a
run another now owns stops it without recording anything; a stop for a run a live replica owns
is handed to that replica; a run whose owner is gone is claimed once, by one replica; a stop
that arrives while a start is spawning waits for it and stops the new server."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from ctm_support import SLEEPING_SERVER, new_task, wait_for
from sqlalchemy import update
from sqlalchemy.orm import Session
from support import Cloud

from agata_common.database import utcnow
from agata_contracts.tasks import GET_TASK_BY_ID, START_SERVER_TASK, STOP_SERVER_TASK, Task
from cloud_task_manager.models import ReplicaRecord, TaskRecord
from cloud_task_manager.replicas import Replicas
from cloud_task_manager.runs import STOPPED_REASON, Peers, RunController
from cloud_task_manager.task_server import ServerLaunch
from microservice_interconnect import Conflict


def set_owner(cloud: Cloud, task_id: str, owner: str) -> None:
    with Session(cloud.task_manager.records.engine) as session, session.begin():
        session.execute(update(TaskRecord).where(TaskRecord.id == task_id).values(owner=owner))


def task(cloud: Cloud, task_id: str) -> Task:
    return cloud.client.call(GET_TASK_BY_ID, {"task_id": task_id})


def test_a_replica_stops_serving_a_run_another_replica_claimed(cloud: Cloud) -> None:
    runs = cloud.task_manager.runs
    new_task(cloud, "fenced", SLEEPING_SERVER)
    started = cloud.client.call(START_SERVER_TASK, {"task_id": "fenced"})
    assert started.replica == runs.replica_id
    set_owner(cloud, "fenced", "another-replica")
    runs.fence()
    wait_for(lambda: not runs.servers.is_running("fenced"))
    after = task(cloud, "fenced")
    # the new owner records the run: this replica wrote nothing when its server ended
    assert (after.status.value, after.replica, after.runs) == ("running", "another-replica", 1)


def test_a_stop_for_a_run_a_live_replica_owns_is_handed_to_it(cloud: Cloud) -> None:
    manager = cloud.task_manager
    handed: list[tuple[str, str]] = []

    def forward(owner: str, task_id: str) -> Task:
        handed.append((owner, task_id))
        return task(cloud, task_id)

    other = RunController(manager.records, manager.storage, manager.results,
                          peers=Peers("replica-b", forward_stop=forward,
                                      alive=lambda: {"replica-b", manager.runs.replica_id}))
    new_task(cloud, "owned", SLEEPING_SERVER)
    cloud.client.call(START_SERVER_TASK, {"task_id": "owned"})
    try:
        assert other.stop("owned").status.value == "running"
        assert handed == [(manager.runs.replica_id, "owned")]
        # an owner no replica hears from any more: the stop is recorded where it lands
        lonely = RunController(manager.records, manager.storage, manager.results,
                               peers=Peers("replica-c", forward_stop=forward,
                                           alive=lambda: {"replica-c"}))
        assert lonely.stop("owned").status.value == "stopped"
        assert len(handed) == 1
    finally:
        manager.runs.servers.stop("owned")


def test_a_run_whose_owner_is_gone_is_claimed_by_one_replica(cloud: Cloud) -> None:
    manager = cloud.task_manager
    cloud.tasks.lease.stop_working()  # only the two replicas below may claim the run
    Replicas(manager.records.engine, "replica-z", lease_s=6).renew()
    with Session(manager.records.engine) as session, session.begin():
        session.execute(update(ReplicaRecord).where(ReplicaRecord.id == "replica-z")
                        .values(seen_at=utcnow() - timedelta(seconds=60)))
    new_task(cloud, "orphaned", SLEEPING_SERVER)
    with Session(manager.records.engine) as session, session.begin():
        session.execute(update(TaskRecord).where(TaskRecord.id == "orphaned")
                        .values(status="running", runs=1, owner="replica-z"))
    claimers = [RunController(manager.records, manager.storage, manager.results,
                              peers=Peers(name)) for name in ("replica-x", "replica-y")]
    try:
        assert claimers[0].take_over({"replica-x", "replica-y"}) == 1
        assert claimers[1].take_over({"replica-x", "replica-y"}) == 0
        claimed = task(cloud, "orphaned")
        # a script task cannot be resumed: its new owner records it failed, saying why
        assert (claimed.replica, claimed.status.value) == ("replica-x", "failed"), claimed
        assert "restarted" in (claimed.status_reason or "")
    finally:
        for claimer in claimers:
            claimer.shutdown()


def test_a_replica_whose_lease_was_renewed_keeps_its_run(cloud: Cloud) -> None:
    manager = cloud.task_manager
    cloud.tasks.lease.stop_working()
    Replicas(manager.records.engine, "replica-back", lease_s=6).renew()
    new_task(cloud, "kept", SLEEPING_SERVER)
    with Session(manager.records.engine) as session, session.begin():
        session.execute(update(TaskRecord).where(TaskRecord.id == "kept")
                        .values(status="running", runs=1, owner="replica-back"))
    late = RunController(manager.records, manager.storage, manager.results,
                         peers=Peers("replica-late"))
    # it read the replica as gone before the replica renewed: the claim still fails
    assert late.take_over(alive={"replica-late"}) == 0
    assert task(cloud, "kept").replica == "replica-back"


def test_a_stop_between_a_starts_commit_and_its_spawn_stops_the_new_server(
        cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = cloud.task_manager.runs
    new_task(cloud, "race", SLEEPING_SERVER)
    spawn = runs.servers.start
    stops: list[Task] = []
    stopper = threading.Thread(target=lambda: stops.append(
        cloud.client.call(STOP_SERVER_TASK, {"task_id": "race"})))

    def stop_fired_before_the_spawn(launch: ServerLaunch) -> int:
        # the record says "running" already; another caller's stop comes now
        stopper.start()
        time.sleep(0.3)
        assert stopper.is_alive(), "the stop did not wait for the start to finish"
        return spawn(launch)

    monkeypatch.setattr(runs.servers, "start", stop_fired_before_the_spawn)
    started = cloud.client.call(START_SERVER_TASK, {"task_id": "race"})
    assert started.status.value == "running"
    stopper.join(20)
    assert [(s.status.value, s.status_reason) for s in stops] == [("stopped", STOPPED_REASON)]
    assert not runs.servers.is_running("race")
    monkeypatch.undo()
    again = cloud.client.call(START_SERVER_TASK, {"task_id": "race"})
    assert (again.status.value, again.runs) == ("running", 2)
    cloud.client.call(STOP_SERVER_TASK, {"task_id": "race"})


def test_a_stop_handed_to_a_replica_that_no_longer_owns_the_run_is_refused(cloud: Cloud) -> None:
    manager = cloud.task_manager
    new_task(cloud, "moved", SLEEPING_SERVER)
    cloud.client.call(START_SERVER_TASK, {"task_id": "moved"})
    former = RunController(manager.records, manager.storage, manager.results,
                           peers=Peers("replica-former"))
    try:
        with pytest.raises(Conflict, match=manager.runs.replica_id):
            former.stop("moved", forward=False)
        assert task(cloud, "moved").status.value == "running"
    finally:
        cloud.client.call(STOP_SERVER_TASK, {"task_id": "moved"})
