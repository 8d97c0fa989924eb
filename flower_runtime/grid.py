"""Flower's ``Grid`` over the devices connected to one run's host.

The ServerApp sends and receives through this grid exactly as it would through Flower's own:
messages go to a device the moment they are pushed (its channel sends them), and replies wake
the waiting ServerApp at once (a condition, never a sleep). A device that leaves answers every
message it still owed with a ``NODE_UNAVAILABLE`` error reply, so no round waits on it.
``get_node_ids`` waits (bounded) until the run's devices have joined, sparing strategies their
one-second polling; when they do not come (or do not come back), it raises ``DevicesMissing``
so the ServerApp ends with that reason instead of waiting forever.

Runs are elastic: a device that does not answer within the ServerApp's round timeout is let go
(its socket closed, its partition freed), so an idle device can take its partition, or the same
device, woken up, can come back to it. Once started, a run goes on with as few as
``min_nodes`` devices; under that it waits ``rejoin_timeout_s`` before failing, naming the
devices it lost and the round.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from flwr.app import Error, Message, RecordDict
from flwr.serverapp import Grid

from agata_contracts.run_devices import Roster
from flower_runtime.flower_internals import ErrorCode, Run, make_message
from flower_runtime.seats import Seats

MAX_NODE_ID = 2**63 - 1
ROUND_ROSTER_S = 2.0
"""Rounds trained are reported at most this often (a device's first round at once, and every
join and leave)."""


class DevicesMissing(RuntimeError):
    """The run's devices did not join, or did not come back, in time."""


class NodeChannel(Protocol):
    """Where a device's messages go (thread-safe, never blocks the caller)."""

    def send(self, data: Message) -> None:
        """Hand a message to the device."""

    def close(self) -> None:
        """Let the device go (its socket is closed after what was queued)."""


@dataclass(frozen=True)
class Node:
    """A device in this run."""

    node_id: int
    client_id: str
    partition_id: int
    channel: NodeChannel


RepliesSeen = Callable[[int | None, list[Message], dict[int, Node]], None]
"""Called with every batch of replies a ``send_and_receive`` collected: the round they answer
(when the instructions say), the replies, and every node that joined."""

RosterChanged = Callable[[Roster], None]
"""Called (outside the grid's lock) with the run's devices after a device joined or left, or a
training round was answered."""

InstructionsSent = Callable[[Message], None]
"""Called with the first instruction of every batch pushed to the devices (a strategy sends
the same global model to each), after it was sent."""


def round_of(instruction: Message) -> int | None:
    """The round an instruction belongs to: its group id when numeric, else the
    ``server-round`` Flower's strategies put in its config."""
    group = instruction.metadata.group_id
    if group.isdigit():
        return int(group)
    if instruction.has_content():
        for record in instruction.content.config_records.values():
            value = record.get("server-round")
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    return None


@dataclass(frozen=True)
class _Sent:
    """What the grid keeps of an instruction it sent until its reply: its metadata (an error
    reply needs it) and its round, not its content, so the model it carried is freed once the
    device got it and the app let go of it."""

    stub: Message
    round: int | None

    @classmethod
    def of(cls, instruction: Message) -> _Sent:
        return cls(make_message(instruction.metadata, RecordDict()), round_of(instruction))

    @property
    def batch(self) -> tuple[int | None, str]:
        """The round and kind of instruction it was sent with."""
        return self.round, self.stub.metadata.message_type


@dataclass
class _Batch:
    """Instructions of one round and kind an app pushed itself, until it pulled every answer:
    the answers' metrics (not their arrays) are reported together then, as ``send_and_receive``
    reports its own."""

    left: int = 0
    answers: list[Message] = field(default_factory=list)


def _metrics_only(reply: Message) -> Message:
    """What reporting a reply needs: its metadata, and its metric records or its error."""
    if reply.has_error():
        return reply
    return make_message(reply.metadata, RecordDict(dict(reply.content.metric_records)))


class RunGrid(Grid):
    """The grid of one run: up to ``expected_nodes`` devices (going on with ``min_nodes``),
    partitions assigned on join."""

    def __init__(self, *, expected_nodes: int, join_timeout_s: float,
                 rejoin_timeout_s: float | None = None, min_nodes: int | None = None,
                 answer_timeout_s: float | None = None,
                 on_replies: RepliesSeen | None = None,
                 on_instructions: InstructionsSent | None = None,
                 on_roster: RosterChanged | None = None) -> None:
        self.expected_nodes = expected_nodes
        self.min_nodes = expected_nodes if min_nodes is None else min(min_nodes, expected_nodes)
        self.join_timeout_s = join_timeout_s
        self.rejoin_timeout_s = join_timeout_s if rejoin_timeout_s is None else rejoin_timeout_s
        self.answer_timeout_s = answer_timeout_s
        self._next_round_roster = 0.0
        self.seats = Seats(expected_nodes)
        self.on_roster = on_roster
        self.on_replies = on_replies
        self.on_instructions = on_instructions
        self._run: Run | None = None
        self._changed = threading.Condition()
        self._nodes: dict[int, Node] = {}
        self._known: dict[int, Node] = {}
        self._pending: dict[str, _Sent] = {}
        self._replies: dict[str, Message] = {}
        self._batch_of: dict[str, tuple[int | None, str]] = {}
        self._batches: dict[tuple[int | None, str], _Batch] = {}
        self._closed = False

    # -- the transport's side ------------------------------------------------------------

    def join(self, client_id: str, channel: NodeChannel) -> Node | None:
        """Admit a device into a free partition; None when the run is full or over."""
        with self._changed:
            if self._closed or any(n.client_id == client_id for n in self._nodes.values()):
                return None
            partition = self.seats.free_partition(
                client_id, {node.partition_id for node in self._nodes.values()})
            if partition is None:
                return None
            node = Node(secrets.randbelow(MAX_NODE_ID - 2) + 2, client_id, partition, channel)
            self._nodes[node.node_id] = node
            self._known[node.node_id] = node
            roster = self._roster(self.seats.sit(client_id, partition))
            self._changed.notify_all()
        self._tell(roster)
        return node

    def leave(self, node_id: int, reason: str) -> None:
        """The device is gone: what it owed is answered with error replies."""
        with self._changed:
            roster = self._let_go(node_id, reason)
        if roster is not None:
            self._tell(roster)

    def _let_go(self, node_id: int, reason: str) -> Roster | None:
        """Take the device out of the run (caller holds the lock); the roster to report."""
        node = self._nodes.pop(node_id, None)
        if node is None:
            return None
        for message_id, sent in list(self._pending.items()):
            if sent.stub.metadata.dst_node_id == node_id:
                del self._pending[message_id]
                self._replies[message_id] = _error_reply(
                    sent.stub, ErrorCode.NODE_UNAVAILABLE, reason)
        if self._closed:
            self.seats.stand_up(node.client_id, node.partition_id, "the run ended")
            return self._roster(None)
        roster = self._roster(self.seats.stand_up(node.client_id, node.partition_id, reason),
                              lost=True)
        self._changed.notify_all()
        return roster

    def _roster(self, change: str | None, *, lost: bool = False) -> Roster:
        return Roster(devices=self.seats.views(), change=change, lost=lost,
                      vacancies=0 if self._closed else self.expected_nodes - len(self._nodes))

    def _tell(self, roster: Roster) -> None:
        if self.on_roster is not None:
            self.on_roster(roster)

    def deliver(self, reply: Message, from_node: int) -> bool:
        """A reply from device ``from_node``; False when it answers nothing this grid is
        waiting for from that device."""
        with self._changed:
            message_id = reply.metadata.reply_to_message_id
            sent = self._pending.get(message_id)
            if sent is None or sent.stub.metadata.dst_node_id != from_node:
                return False
            del self._pending[message_id]
            if not reply.metadata.message_id:
                reply.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            self._replies[message_id] = reply
            self._changed.notify_all()
            return True

    def close(self) -> None:
        """No more joins; waiting calls return."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def roster(self) -> Roster:
        """The run's devices now."""
        with self._changed:
            return self._roster(None)

    def nodes(self) -> dict[int, Node]:
        """Every device that joined this run (also those gone since), by node id."""
        with self._changed:
            return dict(self._known)

    # -- Flower's Grid -------------------------------------------------------------------

    def set_run(self, run: Run) -> None:
        """Attach the run (done by the host before the ServerApp starts)."""
        self._run = run

    @property
    def run(self) -> Run:
        """The run this grid serves."""
        if self._run is None:
            raise RuntimeError("the grid has no run")
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        """A new instruction message (Flower's older way; ``Message(...)`` is the newer)."""
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        """The connected devices: at first once all expected ones joined (at least
        ``min_nodes`` of them when the join timeout passes), then at once while at least
        ``min_nodes`` are in; ``DevicesMissing`` when fewer stay so past the rejoin timeout."""
        with self._changed:
            started = bool(self._known)
            wait_s = self.rejoin_timeout_s if started else self.join_timeout_s
            wanted = self.min_nodes if started else self.expected_nodes
            deadline = time.monotonic() + wait_s
            while len(self._nodes) < wanted and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    if len(self._nodes) >= self.min_nodes:
                        break
                    raise DevicesMissing(self._missing(wait_s))
                self._changed.wait(remaining)
            return list(self._nodes)

    def _missing(self, wait_s: float) -> str:
        count = len(self._nodes)
        lost = self.seats.lost()
        gone = "; ".join(f"{s.client_id} (partition {s.partition_id}) left after round "
                         f"{s.left_after_round}: {s.why_left}" for s in lost)
        return (f"{self.min_nodes - count} of {self.min_nodes} device(s) missing after "
                f"{wait_s:g} s (the run has {count} of its {self.expected_nodes}, needs at "
                f"least {self.min_nodes}, after round {self.seats.last_round})"
                + (f"; gone: {gone}" if gone else ""))

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Send each message to its device now; return their ids. The answers' metrics are
        reported once the app pulled every answer of a round's instructions of one kind."""
        return self._push(messages, batched=True)

    def _push(self, messages: Iterable[Message], *, batched: bool) -> list[str]:
        ids: list[str] = []
        outgoing: list[tuple[Node | None, Message]] = []
        with self._changed:
            for message in messages:
                metadata = message.metadata
                if metadata.reply_to_message_id or metadata.message_id:
                    raise ValueError("only new instruction messages can be pushed")
                metadata.__dict__["_message_id"] = uuid.uuid4().hex
                node = self._nodes.get(metadata.dst_node_id)
                sent = _Sent.of(message)
                if node is None:
                    self._replies[metadata.message_id] = _error_reply(
                        sent.stub, ErrorCode.NODE_UNAVAILABLE,
                        f"node {metadata.dst_node_id} is not connected")
                else:
                    self._pending[metadata.message_id] = sent
                if batched:
                    self._batch_of[metadata.message_id] = sent.batch
                    self._batches.setdefault(sent.batch, _Batch()).left += 1
                outgoing.append((node, message))
                ids.append(metadata.message_id)
        for node, message in outgoing:
            if node is not None:
                node.channel.send(message)
        if self.on_instructions is not None and outgoing:
            self.on_instructions(outgoing[0][1])
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """The replies that arrived for these messages (each is handed out once)."""
        with self._changed:
            replies = [self._replies.pop(i) for i in list(message_ids) if i in self._replies]
            answered = self._answered(replies)
            rosters = [self._trained(number, kind, answers)
                       for (number, kind), answers in answered]
            nodes = dict(self._known)
        self._report(rosters, [(number, answers) for (number, _), answers in answered], nodes)
        return replies

    def _answered(self, replies: list[Message]
                  ) -> list[tuple[tuple[int | None, str], list[Message]]]:
        """The batches these pulled replies complete, with their answers (caller holds the
        lock)."""
        done = []
        for reply in replies:
            key = self._batch_of.pop(reply.metadata.reply_to_message_id, None)
            if key is None:
                continue
            batch = self._batches[key]
            batch.left -= 1
            batch.answers.append(_metrics_only(reply))
            if batch.left == 0:
                done.append((key, self._batches.pop(key).answers))
        return done

    def _trained(self, round_number: int | None, kind: str, replies: list[Message]
                 ) -> Roster | None:
        """Note who trained in a round (caller holds the lock); the roster to report then."""
        if not kind.startswith("train"):
            return None
        first = self.seats.trained([self._known[r.metadata.src_node_id].client_id
                                    for r in replies if not r.has_error()
                                    and r.metadata.src_node_id in self._known], round_number)
        if first or time.monotonic() >= self._next_round_roster:
            self._next_round_roster = time.monotonic() + ROUND_ROSTER_S
            return self._roster(None)
        return None

    def _report(self, rosters: list[Roster | None],
                answered: list[tuple[int | None, list[Message]]], nodes: dict[int, Node]
                ) -> None:
        """Tell the host of rosters and answered rounds (outside the lock)."""
        for roster in rosters:
            if roster is not None:
                self._tell(roster)
        if self.on_replies is not None:
            for round_number, replies in answered:
                if replies:
                    self.on_replies(round_number, replies, nodes)

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        """Push, then wait until every reply is in or ``timeout`` seconds passed."""
        batch = list(messages)
        rounds = {round_of(message) for message in batch}
        wanted = set(self._push(batch, batched=False))
        started = time.monotonic()
        deadline = None if timeout is None else started + timeout
        answer_by = (None if self.answer_timeout_s is None
                     else started + self.answer_timeout_s)
        with self._changed:
            rosters: list[Roster | None] = []
            while not wanted <= set(self._replies) and not self._closed:
                now = time.monotonic()
                if deadline is not None and deadline <= now:
                    break
                if answer_by is not None and answer_by <= now:
                    rosters += [self._let_go_silent(self._pending[i].stub,
                                                    self.answer_timeout_s,
                                                    self._pending[i].round)
                                for i in wanted if i in self._pending]
                    answer_by = None
                    continue
                ends = [t for t in (deadline, answer_by) if t is not None]
                self._changed.wait(min(ends) - now if ends else None)
            replies = [self._replies.pop(i) for i in wanted if i in self._replies]
            silent = [self._pending.pop(i) for i in
                      wanted - {r.metadata.reply_to_message_id for r in replies}
                      if i in self._pending]
            round_number = rounds.pop() if len(rounds) == 1 else None
            rosters += [self._let_go_silent(sent.stub, timeout, round_number)
                        for sent in silent]
            if batch:
                rosters.append(self._trained(round_number, batch[0].metadata.message_type,
                                             replies))
            nodes = dict(self._known)
        self._report(rosters, [(round_number, replies)], nodes)
        return replies

    def _let_go_silent(self, instruction: Message, timeout: float | None,
                       round_number: int | None) -> Roster | None:
        """A device that did not answer in time is let go (caller holds the lock): its
        partition is free for another device, or for it when it comes back."""
        node = self._nodes.get(instruction.metadata.dst_node_id)
        if node is None or self._closed:
            return None
        what = f"round {round_number}" if round_number is not None else "an instruction"
        roster = self._let_go(node.node_id, f"did not answer {what} within {timeout:g} s")
        node.channel.close()
        return roster


def _error_reply(instruction: Message, code: int, reason: str) -> Message:
    reply = Message(Error(code=code, reason=reason), reply_to=instruction)
    reply.metadata.__dict__["_message_id"] = uuid.uuid4().hex
    return reply
