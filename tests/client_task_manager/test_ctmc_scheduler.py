"""The client's task bookkeeping: policies, quarantine back-off, finished runs."""

from __future__ import annotations

import pytest

from agata_contracts.tasks import TaskOffer
from client_task_manager.scheduler import Policy, TaskBook

pytestmark = pytest.mark.unit


def offer(task_id: str, run: int = 1) -> TaskOffer:
    return TaskOffer(task_id=task_id, run=run, host="127.0.0.1", port=8080, client_arguments={},
                     tags=[], files=[], kind="script", download_credential="x")


def test_policy_one_runs_the_first_available_task_only() -> None:
    book = TaskBook(Policy.ONE, max_parallel=5, retry_s=10, retry_max_s=100)
    book.update_offers([offer("a"), offer("b")])
    assert [o.task_id for o in book.choose(0)] == ["a"]
    book.started(offer("a"))
    assert book.choose(0) == []


def test_policy_all_runs_up_to_the_limit() -> None:
    book = TaskBook(Policy.ALL, max_parallel=2, retry_s=10, retry_max_s=100)
    book.update_offers([offer("a"), offer("b"), offer("c")])
    chosen = book.choose(0)
    assert [o.task_id for o in chosen] == ["a", "b"]
    for o in chosen:
        book.started(o)
    assert book.choose(0) == []
    book.finished("a", 1)
    assert [o.task_id for o in book.choose(0)] == ["c"]


def test_failed_task_is_set_aside_with_doubling_bounded_backoff() -> None:
    book = TaskBook(Policy.ONE, max_parallel=1, retry_s=10, retry_max_s=25)
    book.update_offers([offer("e"), offer("c")])
    book.started(offer("e"))
    held = book.failed("e", "boom", now=100)
    assert (held.until, held.failures) == (110, 1)
    assert [o.task_id for o in book.choose(100)] == ["c"]
    assert book.next_release(100) == 110
    book.started(offer("c"))
    book.finished("c", 1)
    assert [o.task_id for o in book.choose(111)] == ["e"]
    assert book.failed("e", "again", now=111).until == 131
    assert book.failed("e", "again", now=200).until == 225


def test_a_finished_run_is_not_joined_again_but_a_new_run_is() -> None:
    book = TaskBook(Policy.ONE, max_parallel=1, retry_s=10, retry_max_s=100)
    book.update_offers([offer("a", run=1)])
    book.started(offer("a", run=1))
    book.finished("a", 1)
    assert book.choose(0) == []
    book.update_offers([offer("a", run=2)])
    assert [(o.task_id, o.run) for o in book.choose(0)] == [("a", 2)]


def test_success_clears_the_failure_count() -> None:
    book = TaskBook(Policy.ONE, max_parallel=1, retry_s=10, retry_max_s=100)
    book.update_offers([offer("a", run=1)])
    book.failed("a", "x", now=0)
    book.finished("a", 1)
    assert "a" not in book.quarantine


def test_a_run_that_did_not_need_the_client_is_held_without_a_failure() -> None:
    book = TaskBook(Policy.ONE, max_parallel=1, retry_s=10, retry_max_s=100)
    book.update_offers([offer("f")])
    book.started(offer("f"))
    book.hold("f", now=100)
    assert book.choose(105) == []
    assert [o.task_id for o in book.choose(110)] == ["f"]
    held = book.failed("f", "boom", now=120)
    assert held.failures == 1, "a hold counted as a failure"


def test_a_run_that_lost_a_device_lifts_the_hold_but_not_a_failures_back_off() -> None:
    book = TaskBook(Policy.ONE, max_parallel=1, retry_s=300, retry_max_s=600)
    book.update_offers([offer("full"), offer("bad")])
    book.hold("full", now=100)
    book.failed("bad", "boom", now=100)
    book.vacancy("full")
    book.vacancy("bad")
    assert [o.task_id for o in book.choose(101)] == ["full"]
    assert "bad" in book.quarantine
