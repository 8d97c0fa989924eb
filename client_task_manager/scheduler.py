"""Which tasks this client should run now: offers, running tasks, quarantine, policy.

Pure bookkeeping (no I/O), so the rules are easy to test: a failed task is set aside for a
back-off that doubles on each failure (bounded), a task run that finished here is not joined
again, and the policy says how many run at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from agata_contracts.tasks import TaskOffer


def files_signature(offer: TaskOffer) -> tuple[tuple[str, str], ...]:
    """What identifies a task's files: their names and digests."""
    return tuple(sorted((item.name, item.sha256) for item in offer.files))


class Policy(StrEnum):
    """``one``: the first compatible healthy task; ``all``: up to ``max_parallel`` at once."""

    ONE = "one"
    ALL = "all"


@dataclass
class Quarantined:
    """A task set aside after failing here."""

    until: float
    failures: int
    reason: str


RUN_FULL_HOLD = "the run had all its devices"
"""Why a task is held when its run did not need this device (lifted when the run loses one)."""


class TaskBook:
    """This client's view of tasks."""

    def __init__(self, policy: Policy, max_parallel: int, retry_s: float,
                 retry_max_s: float) -> None:
        self.policy = policy
        self.max_parallel = 1 if policy is Policy.ONE else max_parallel
        self.retry_s = retry_s
        self.retry_max_s = retry_max_s
        self.offers: list[TaskOffer] = []
        self.running: dict[str, int] = {}
        self.done: set[tuple[str, int]] = set()
        self.quarantine: dict[str, Quarantined] = {}
        self.unfit: dict[str, tuple[tuple[str, str], ...]] = {}

    def update_offers(self, offers: list[TaskOffer]) -> None:
        """The cloud's latest list of running tasks that fit this client."""
        self.offers = list(offers)

    def is_available(self, offer: TaskOffer, now: float) -> bool:
        """Whether an offer could start now (ignoring the policy's limit)."""
        if offer.task_id in self.running or (offer.task_id, offer.run) in self.done:
            return False
        if self.unfit.get(offer.task_id) == files_signature(offer):
            return False
        held = self.quarantine.get(offer.task_id)
        return held is None or held.until <= now

    def choose(self, now: float) -> list[TaskOffer]:
        """Offers to start now, in the cloud's order, within the policy's limit."""
        free = self.max_parallel - len(self.running)
        chosen = []
        for offer in self.offers:
            if free <= 0:
                break
            if self.is_available(offer, now):
                chosen.append(offer)
                free -= 1
        return chosen

    def started(self, offer: TaskOffer) -> None:
        """A task's client process is running here."""
        self.running[offer.task_id] = offer.run

    def finished(self, task_id: str, run: int) -> None:
        """The task's client ended well: forget its failures, do not join that run again."""
        self.running.pop(task_id, None)
        self.quarantine.pop(task_id, None)
        self.done.add((task_id, run))

    def stopped(self, task_id: str) -> None:
        """The task's client was stopped here (shutdown): nothing to hold against it."""
        self.running.pop(task_id, None)

    def hold(self, task_id: str, now: float) -> None:
        """The task's run did not need this client: not taken again for ``retry_s``, with
        nothing held against it (its failures are left as they were)."""
        self.running.pop(task_id, None)
        previous = self.quarantine.get(task_id)
        self.quarantine[task_id] = Quarantined(
            until=now + self.retry_s, failures=previous.failures if previous else 0,
            reason=RUN_FULL_HOLD)

    def vacancy(self, task_id: str) -> None:
        """The task's run lost a device: a hold for its having had all its devices ends."""
        held = self.quarantine.get(task_id)
        if held is not None and held.reason == RUN_FULL_HOLD:
            del self.quarantine[task_id]

    def failed(self, task_id: str, reason: str, now: float) -> Quarantined:
        """The task failed here: set it aside with a doubling back-off; return the hold."""
        self.running.pop(task_id, None)
        previous = self.quarantine.get(task_id)
        failures = previous.failures + 1 if previous else 1
        delay = min(self.retry_s * 2 ** (failures - 1), self.retry_max_s)
        held = Quarantined(until=now + delay, failures=failures, reason=reason)
        self.quarantine[task_id] = held
        return held

    def cannot_set_up(self, offer: TaskOffer) -> None:
        """The device cannot set the task up: not taken again while its files stay the same."""
        self.running.pop(offer.task_id, None)
        self.unfit[offer.task_id] = files_signature(offer)

    def next_release(self, now: float) -> float | None:
        """When the earliest quarantine of an offered task ends, if one does later."""
        offered = {offer.task_id for offer in self.offers}
        times = [held.until for task_id, held in self.quarantine.items()
                 if task_id in offered and held.until > now]
        return min(times) if times else None
