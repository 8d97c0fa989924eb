"""Who holds which partition of a run, since when, and who replaced whom.

A run's host keeps one seat per device that ever joined: its partition, when it joined and
left, the training rounds it answered, and the device it replaced (the one that last held its
partition) or that it came back (the same device on its own partition again). The seats are
what the run reports as its devices (``agata_contracts.run_devices``) and each change is one
sentence for the run's events.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from agata_contracts.run_devices import MAX_SEATS, RunDevice


@dataclass
class Seat:
    """One device's stay in the run (a device that leaves and comes back gets a new seat)."""

    client_id: str
    partition_id: int
    joined: float = field(default_factory=time.time)
    joined_after_round: int = 0
    left: float | None = None
    left_after_round: int | None = None
    why_left: str | None = None
    rounds_trained: int = 0
    replaced: str | None = None
    replaced_by: str | None = None
    rejoined: bool = False

    def view(self) -> RunDevice:
        """The seat as the run's devices list shows it."""
        return RunDevice(client_id=self.client_id, partition_id=self.partition_id,
                         joined=self.joined, joined_after_round=self.joined_after_round,
                         left=self.left, left_after_round=self.left_after_round,
                         why_left=self.why_left, rounds_trained=self.rounds_trained,
                         replaced=self.replaced, replaced_by=self.replaced_by,
                         rejoined=self.rejoined)


class Seats:
    """The seats of one run (callers hold the grid's lock)."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self.history: list[Seat] = []
        self.last_round = 0

    def free_partition(self, client_id: str, taken: set[int]) -> int | None:
        """The partition a joining device gets: its own last one when free, else the lowest
        free one (a lost device's); None when every partition is taken."""
        free = [p for p in range(self.partitions) if p not in taken]
        if not free:
            return None
        own = [s.partition_id for s in self.history if s.client_id == client_id]
        return own[-1] if own and own[-1] in free else free[0]

    def sit(self, client_id: str, partition_id: int) -> str:
        """Record a join; the sentence saying who joined (replacing whom, or coming back)."""
        before = [s for s in self.history if s.partition_id == partition_id]
        previous = before[-1] if before else None
        seat = Seat(client_id, partition_id, joined_after_round=self.last_round)
        where = f"partition {partition_id}, after round {self.last_round}"
        if previous is not None and previous.client_id == client_id:
            seat.rejoined = True
            sentence = f"device {client_id} came back ({where})"
        elif previous is not None:
            seat.replaced = previous.client_id
            previous.replaced_by = client_id
            sentence = f"device {client_id} replaced device {previous.client_id} ({where})"
        else:
            sentence = f"device {client_id} joined ({where})"
        self.history.append(seat)
        if len(self.history) > MAX_SEATS:
            gone = next((s for s in self.history if s.left is not None), None)
            if gone is not None:
                self.history.remove(gone)
        return sentence

    def stand_up(self, client_id: str, partition_id: int, why: str) -> str:
        """Record a leave; the sentence saying who left and why."""
        for seat in reversed(self.history):
            if seat.client_id == client_id and seat.partition_id == partition_id \
                    and seat.left is None:
                seat.left = time.time()
                seat.left_after_round = self.last_round
                seat.why_left = why
                break
        return (f"device {client_id} left (partition {partition_id}, after round "
                f"{self.last_round}): {why}")

    def trained(self, client_ids: list[str], round_number: int | None) -> bool:
        """These devices answered a training round; True when one of them trained its first
        round in its seat."""
        if round_number is not None:
            self.last_round = max(self.last_round, round_number)
        first = False
        for seat in self.history:
            if seat.left is None and seat.client_id in client_ids:
                first = first or seat.rounds_trained == 0
                seat.rounds_trained += 1
        return first

    def lost(self) -> list[Seat]:
        """Seats left and not taken since (their partitions are free)."""
        present = {s.partition_id for s in self.history if s.left is None}
        latest: dict[int, Seat] = {}
        for seat in self.history:
            latest[seat.partition_id] = seat
        return [s for p, s in sorted(latest.items()) if p not in present]

    def views(self) -> list[RunDevice]:
        """Every seat, in join order."""
        return [seat.view() for seat in self.history]
