"""``python -m flower_runtime.server_host``: one run of a Flower App's ServerApp.

Started by the cloud task manager as the task's server process. It listens on the task's host
and port for the run's devices (one websocket each, see ``wire``), admits those that present the
run's credential into free partitions, runs the app's ServerApp unmodified over a ``RunGrid``,
reports every round's metrics and the outcome through the TaskReporter, and tells the devices
when the run is over.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import ServerApp
from pydantic import BaseModel

from agata_contracts.checkpoints import (
    CHECKPOINT_KEY,
    RESUME_FILE,
    RESUME_KEY,
    ROUND_KEY,
    SPOOL_FILE,
    STATE_DIR,
)
from agata_contracts.credentials import is_device_credential
from agata_contracts.lifecycle import RESULTS_DIR_ENV, read_lifecycle
from agata_contracts.run_devices import Roster
from agata_contracts.run_door import DOOR_KEY_HEADER, door_key
from flower_runtime import DEFAULT_PRELOAD, RUN_CREDENTIAL_ENV, TRAFFIC_LINE, preload, wire
from flower_runtime.checkpoint import Checkpointer, read_checkpoint
from flower_runtime.flower_internals import SUPERLINK_NODE_ID, Run, TaskIdentity, load_app
from flower_runtime.grid import Node, RunGrid
from flower_runtime.jobs import HostJob, read_job
from flower_runtime.manifest import ConfigValue, read_manifest
from flower_runtime.metrics import round_metrics
from flower_runtime.quiet import quiet_flower
from task_daemon_lib.task_main import exit_now, run_task
from task_daemon_lib.task_reporter import TaskReporter

logger = logging.getLogger("flower_runtime.server_host")

HELLO_TIMEOUT_S = 5.0
HEARTBEAT_S = 15.0

_Item = wire.Outgoing | str | None


class _SocketChannel:
    """Sends a node's messages on its websocket from any thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[_Item] = asyncio.Queue()

    def send(self, data: Message) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, wire.encode(data))

    def send_text(self, text: str) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, text)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, None)


class DeviceDoor:
    """The run's websocket endpoint: admission, then messages both ways.

    Only the cloud gateway, which checked the device first, holds the door key; a socket
    without it is refused before it is upgraded, and a socket with it must say a valid hello
    in one small text frame within ``HELLO_TIMEOUT_S`` or it is closed."""

    def __init__(self, grid: RunGrid, run_id: int, run_config: dict[str, ConfigValue],
                 run_credential: str, max_message_bytes: int) -> None:
        self.grid = grid
        self.run_id = run_id
        self.run_config = run_config
        self.run_credential = run_credential
        self.door_key = door_key(run_credential) if run_credential else ""
        self.max_message_bytes = max_message_bytes
        self.channels: dict[int, _SocketChannel] = {}
        self.traffic = wire.Traffic()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """One device's connection, from hello to the end of the run."""
        presented = request.headers.get(DOOR_KEY_HEADER, "")
        if not self.door_key or not hmac.compare_digest(presented.encode(),
                                                        self.door_key.encode()):
            logger.warning("refused a socket from %s without the door key", request.remote)
            return web.Response(status=403, text="this door takes sockets from the gateway")
        socket = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=wire.MAX_FRAME_BYTES,
                                       compress=False)
        await socket.prepare(request)
        try:
            first = await socket.receive(timeout=HELLO_TIMEOUT_S)
        except TimeoutError:
            await socket.close(message=b"no hello")
            return socket
        if first.type != WSMsgType.TEXT or len(first.data) > wire.MAX_CONTROL_BYTES:
            await socket.close(message=b"expected hello")
            return socket
        try:
            hello: wire.Hello = wire.parse_control(first.data, wire.Hello)
        except wire.WireError as exc:
            await socket.send_str(wire.control(wire.Refusal(reason=str(exc))))
            await socket.close()
            return socket
        if not is_device_credential(hello.credential, self.run_credential, hello.client_id):
            logger.warning("refused %s: wrong run credential", hello.client_id)
            await socket.send_str(wire.control(wire.Refusal(reason="wrong run credential")))
            await socket.close()
            return socket
        channel = _SocketChannel(asyncio.get_running_loop())
        node = self.grid.join(hello.client_id, channel)
        if node is None:
            await socket.send_str(wire.control(wire.Refusal(
                reason="the run has all its devices (or is over)", full=True)))
            await socket.close()
            return socket
        self.channels[node.node_id] = channel
        logger.info("device %s joined as partition %d (node %d)", hello.client_id,
                    node.partition_id, node.node_id)
        await socket.send_str(wire.control(wire.Welcome(
            run_id=self.run_id, node_id=node.node_id,
            node_config={**hello.node_config, **self.node_config(node)},
            run_config=self.run_config, max_message_bytes=self.max_message_bytes)))
        writer = asyncio.create_task(self._write(socket, channel))
        try:
            await self._read(socket, node)
        finally:
            writer.cancel()
            self.channels.pop(node.node_id, None)
            self.grid.leave(node.node_id, f"device {node.client_id} disconnected")
            logger.info("device %s left", node.client_id)
        return socket

    def node_config(self, node: Node) -> dict[str, ConfigValue]:
        """What the cloud assigns a device in this run."""
        return {"partition-id": node.partition_id, "num-partitions": self.grid.expected_nodes}

    async def _write(self, socket: web.WebSocketResponse, channel: _SocketChannel) -> None:
        while (item := await channel.queue.get()) is not None:
            if isinstance(item, str):
                await socket.send_str(item)
            else:
                await wire.send(socket, item, self.traffic)
            del item  # a model sent is not held until the next message comes
        await socket.close()

    async def _read(self, socket: web.WebSocketResponse, node: Node) -> None:
        inbox = wire.Inbox(self.max_message_bytes, traffic=self.traffic)
        async for frame in socket:
            reply: BaseModel | Message | None
            try:
                if frame.type == WSMsgType.BINARY:
                    reply = inbox.binary(frame.data)
                elif frame.type == WSMsgType.TEXT:
                    reply = inbox.text(frame.data)
                else:
                    continue
            except wire.WireError as exc:
                logger.warning("device %s broke the protocol: %s", node.client_id, exc)
                await socket.close(message=b"protocol error")
                return
            if not isinstance(reply, Message):
                continue
            if not self.grid.deliver(reply, node.node_id):
                logger.warning("device %s sent a reply nobody waits for", node.client_id)

    def end(self, ended_as: wire.RunEnded) -> None:
        """Tell every connected device the run is over, then close their sockets."""
        ended = wire.control(ended_as)
        for channel in list(self.channels.values()):
            channel.send_text(ended)
            channel.close()


class DeviceServer:
    """The aiohttp server of the door, on its own thread and loop."""

    def __init__(self, door: DeviceDoor, host: str, port: int) -> None:
        self.door = door
        self.host = host
        self.port = port
        self.loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="device-door", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        """Listen; raise if the port cannot be bound."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"could not listen on {self.host}:{self.port} in {timeout} s")
        if self._error is not None:
            raise OSError(f"cannot listen on {self.host}:{self.port}: {self._error}")

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_get(wire.PATH, self.door.handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        try:
            self.loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, self.host, self.port)
            self.loop.run_until_complete(site.start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()

    def stop(self, grace_s: float = 2.0) -> None:
        """Let the devices read the end of the run, then stop serving."""
        if self._runner is None or self._error is not None:
            return

        async def shutdown() -> None:
            await asyncio.sleep(0)
            assert self._runner is not None
            await self._runner.cleanup()

        future = asyncio.run_coroutine_threadsafe(shutdown(), self.loop)
        try:
            future.result(grace_s + 5)
        except Exception as exc:
            logger.debug("device server shutdown: %s", exc)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(grace_s)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The host's command line (set by the cloud task manager)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--app", type=Path, required=True, help="the app's folder")
    parser.add_argument("--host", required=True,
                        help="the internal address the run's door listens on (the cloud "
                             "gateway forwards devices there)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-message-mb", type=float,
                        default=wire.DEFAULT_MAX_MESSAGE_BYTES / 2**20,
                        help="the largest Flower message (model included) either way, MiB")
    parser.add_argument("--run-id", type=int, required=True)
    parser.add_argument("--devices", type=int, required=True, help="devices in this run")
    parser.add_argument("--min-devices", type=int, default=None,
                        help="the fewest devices the run goes on with (default: --devices)")
    parser.add_argument("--run-config", default="{}", help="the fused run config, JSON")
    parser.add_argument("--join-timeout-s", type=float, default=300.0,
                        help="how long the run waits for its devices to join")
    parser.add_argument("--rejoin-timeout-s", type=float, default=30.0,
                        help="how long the run stays under its minimum of devices, waiting "
                             "for a lost one to come back or be replaced, before it fails")
    parser.add_argument("--answer-timeout-s", type=float, default=0.0,
                        help="a device silent this long on one instruction is let go, its "
                             "partition free for another (0: only the app's own timeout)")
    parser.add_argument("--results-dir", type=Path, default=None,
                        help=f"where the ServerApp leaves its results (as ${RESULTS_DIR_ENV}); "
                             f"the run's checkpoints (when the app declares [tool.agata] resume = "
                             f"true) and report spool go to its {STATE_DIR}/")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help=f"the run's state folder (checkpoints, report spool), the "
                             f"manager's, outside the results folder; default: the results "
                             f"folder's {STATE_DIR}/")
    parser.add_argument("--resume", action="store_true",
                        help=f"continue after the checkpoint {STATE_DIR}/{RESUME_FILE} (the app "
                             "declares [tool.agata] resume = true)")
    return parser.parse_args(argv)


class RosterReports:
    """Reports the run's devices to the cloud, and each change in the run's log."""

    def __init__(self, reporter: TaskReporter, rounds_before: int) -> None:
        self.reporter = reporter
        self.rounds_before = rounds_before

    def __call__(self, roster: Roster) -> None:
        """One change (or a trained round) of the run's devices."""
        if self.rounds_before:
            roster = _shifted(roster, self.rounds_before)
        if roster.change:
            logger.info("%s", roster.change)
            self.reporter.send_print(roster.change)
        self.reporter.send_roster(roster.model_dump(mode="json"))


def _shifted(roster: Roster, rounds: int) -> Roster:
    """The roster of a resumed run, its rounds counted from the run's start."""
    devices = [d.model_copy(update={
        "joined_after_round": d.joined_after_round + rounds,
        "left_after_round": None if d.left_after_round is None else d.left_after_round + rounds})
        for d in roster.devices]
    return roster.model_copy(update={"devices": devices})


def resume_state(state_dir: Path | None, context: Context, reporter: TaskReporter) -> int:
    """Put the checkpoint to resume from into ``context.state``; return its rounds done."""
    if state_dir is None:
        raise ValueError("--resume needs --results-dir (the checkpoint lies in its state folder)")
    rounds_done, arrays = read_checkpoint((state_dir / RESUME_FILE).read_bytes())
    context.state[RESUME_KEY] = ConfigRecord({ROUND_KEY: rounds_done})
    context.state[CHECKPOINT_KEY] = arrays
    reporter.send_print(f"resuming after round {rounds_done} from its checkpoint")
    return rounds_done


def serve_run(args: argparse.Namespace, reporter: TaskReporter, run_credential: str) -> None:
    """Run the app's ServerApp to its end over the devices that join."""
    quiet_flower()
    app_dir = args.app.resolve()
    os.chdir(app_dir)
    state_dir: Path | None = None
    if args.results_dir is not None:
        args.results_dir.mkdir(parents=True, exist_ok=True)
        os.chdir(args.results_dir)  # what the app writes where it works is a result of the run
        os.environ[RESULTS_DIR_ENV] = str(args.results_dir.resolve())
        state_dir = (args.state_dir or args.results_dir / STATE_DIR).resolve()
        state_dir.mkdir(parents=True, exist_ok=True)
        reporter.spool_to(state_dir / SPOOL_FILE)
    pyproject = (app_dir / "pyproject.toml").read_bytes()
    manifest = read_manifest(pyproject)
    resumable = read_lifecycle(pyproject).resume
    run_config = _json_object(args.run_config)
    server_app = load_app(manifest.serverapp, ValueError, project_dir=app_dir)
    if not isinstance(server_app, ServerApp):
        raise TypeError(f"{manifest.serverapp} is a {type(server_app).__name__}, not a ServerApp")

    context = Context(run_id=args.run_id, node_id=SUPERLINK_NODE_ID, node_config={},
                      state=RecordDict(), run_config=dict(run_config))
    rounds_before = resume_state(state_dir, context, reporter) if args.resume else 0
    nodes_seen: dict[int, str] = {}

    def report(number: int | None, replies: list[Message], nodes: dict[int, Node]) -> None:
        nodes_seen.update({node_id: node.client_id for node_id, node in nodes.items()})
        metrics = round_metrics(replies, nodes_seen)
        if number is not None and metrics:
            reporter.send_stats(number + rounds_before, **metrics)
        if number is not None and checkpointer is not None:
            checkpointer.replies_seen(number)
        for reply in replies:
            if reply.has_error():
                client = nodes_seen.get(reply.metadata.src_node_id, "?")
                reporter.send_print(f"device {client}: {reply.error.reason}")

    checkpointer = (Checkpointer(state_dir, reporter, rounds_before)
                    if state_dir is not None and resumable else None)
    rosters = RosterReports(reporter, rounds_before)
    grid = RunGrid(expected_nodes=args.devices, join_timeout_s=args.join_timeout_s,
                   rejoin_timeout_s=args.rejoin_timeout_s, min_nodes=args.min_devices,
                   answer_timeout_s=args.answer_timeout_s or None,
                   on_replies=report, on_roster=rosters,
                   on_instructions=checkpointer.instructions_sent if checkpointer else None)
    door = DeviceDoor(grid, args.run_id, run_config, run_credential,
                      max_message_bytes=int(args.max_message_mb * 2**20))
    server = DeviceServer(door, args.host, args.port)
    server.start()
    reporter.send_print(f"waiting for {args.devices} device(s) on {args.host}:{args.port}")
    TaskIdentity.run_id = args.run_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    TaskIdentity.task_id = args.run_id
    grid.set_run(Run.create_empty(args.run_id))
    try:
        server_app(grid, context)
    except BaseException as exc:
        door.end(wire.RunEnded(status="failed",
                               reason=f"ServerApp raised {type(exc).__name__}: {exc}"))
        raise
    else:
        door.end(wire.RunEnded(status="completed"))
    finally:
        grid.close()
        server.stop()
        logger.info(TRAFFIC_LINE.format(sent=door.traffic.sent, received=door.traffic.received))
        rosters(grid.roster())
        if checkpointer is not None:
            checkpointer.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: the process exit status."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["--warm"]:
        return run_task(lambda reporter: serve_warm(arguments[1:], reporter))
    return run_task(lambda reporter: serve_run(
        parse_args(arguments), reporter, os.environ.get(RUN_CREDENTIAL_ENV, "")))


def serve_warm(argv: Sequence[str], reporter: TaskReporter) -> None:
    """Import ahead (``--preload``), then serve the run whose job comes on stdin."""
    parser = argparse.ArgumentParser(prog="server_host --warm")
    parser.add_argument("--preload", default=",".join(DEFAULT_PRELOAD),
                        help="modules to import before the job comes (comma-separated)")
    loaded = preload([m for m in parser.parse_args(argv).preload.split(",") if m])
    logger.info("warm (%s); waiting for a job on stdin", ", ".join(loaded) or "nothing")
    job = read_job(sys.stdin, HostJob)
    if job is None:
        logger.info("no job came; exiting")
        return
    serve_run(parse_args(job.arguments), reporter, job.run_credential)


def _json_object(text: str) -> dict[str, ConfigValue]:
    value: Any = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("--run-config must be a JSON object")
    return value


if __name__ == "__main__":
    exit_now(main())
