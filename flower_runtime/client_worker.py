"""``python -m flower_runtime.client_worker``: a device's ClientApp for one run, started warm.

The client task manager starts this process before any run needs it: it imports Flower (and the
heavy libraries apps use, when installed) and then waits, blocked on its standard input, for one
job line (JSON: the app's folder, the cloud and the run, the device's id and run credential).
It then joins the run over one websocket through the cloud gateway, calls the app's ClientApp
for every message in this same process (imports paid once), sends each reply back, and ends
when the run does. A ClientApp
that raises sends Flower's error reply to the ServerApp, reports the exception and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import ssl
import sys
import time
import uuid
from collections.abc import Sequence

import aiohttp
from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp

from agata_contracts.checkpoints import SPOOL_FILE, STATE_DIR
from agata_contracts.lifecycle import RESULTS_DIR_ENV
from agata_contracts.run_door import (
    CLIENT_HEADER,
    CREDENTIAL_HEADER,
    NODE_CONFIG_HEADER,
    check_channel,
    node_config_header,
    run_url,
)
from flower_runtime import DEFAULT_PRELOAD, preload, wire
from flower_runtime.flower_internals import ErrorCode, load_app
from flower_runtime.jobs import WorkerJob, read_job
from flower_runtime.manifest import read_manifest
from flower_runtime.quiet import quiet_flower
from task_daemon_lib.messages import INFO_FIRST_TRAIN, INFO_RUN_FULL, INFO_RUN_OVER
from task_daemon_lib.task_main import exit_now, run_task
from task_daemon_lib.task_reporter import TaskReporter

logger = logging.getLogger("flower_runtime.client_worker")

CONNECT_TIMEOUT_S = 30.0
MAX_REJOINS = 10
RETRY_STATUSES = frozenset({502, 503, 504})
RUN_OVER_STATUS = 409
"""Gateway answers that mean "not yet": the run's door is not open yet or is moving."""


class RunRefused(RuntimeError):
    """The run's host did not take this device."""


class RunLeft(Exception):
    """The device leaves the run without failing: ``info`` says why (it is over, or has all
    its devices)."""

    def __init__(self, info: str, detail: str) -> None:
        super().__init__(detail)
        self.info = info


class HostLost(ConnectionError):
    """The run's host went away before the run ended."""


class ClientAppFailed(Exception):
    """The ClientApp raised ``error`` (its error reply was sent to the ServerApp)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def tls_context(job: WorkerJob) -> ssl.SSLContext | bool:
    """How the run's socket checks the cloud: the job's CA when it names one, else the
    system's (plain ``ws://`` for an ``http://`` cloud)."""
    if job.cloud_ca_file is None:
        return True
    return ssl.create_default_context(cafile=str(job.cloud_ca_file))


def send_unmasked(socket: aiohttp.ClientWebSocketResponse) -> None:
    """Send this socket's frames unmasked. RFC 6455 masks a client's frames so that a browser
    script cannot choose the bytes an HTTP intermediary on the path sees; here both ends are
    ours, the gateway splices the bytes without reading them, and the host accepts unmasked
    frames, while masking costs a copy and an XOR pass of every model byte on both sides
    (``python -m experiments.wire_costs``: both ends' CPU time about halves)."""
    writer = getattr(socket, "_writer", None)
    if writer is not None and hasattr(writer, "use_mask"):
        writer.use_mask = False


async def _connect(session: aiohttp.ClientSession, job: WorkerJob
                   ) -> aiohttp.ClientWebSocketResponse:
    """The run's socket through the cloud gateway; retried while the run's door is not open
    yet (503) or the cloud cannot be reached, ``RunRefused`` when the cloud says no."""
    url = run_url(job.cloud_url, job.task_id, job.run)
    check_channel(job.cloud_url, url)
    headers = {CLIENT_HEADER: job.client_id, CREDENTIAL_HEADER: job.credential,
               NODE_CONFIG_HEADER: node_config_header(job.node_config)}
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    delay = 0.05
    ssl_context = tls_context(job)
    while True:
        try:
            socket = await session.ws_connect(url, headers=headers, heartbeat=15.0,
                                              max_msg_size=wire.MAX_FRAME_BYTES, compress=0,
                                              ssl=ssl_context)
            send_unmasked(socket)
            return socket
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == RUN_OVER_STATUS:
                raise RunLeft(INFO_RUN_OVER, f"run {job.run} is over") from None
            if exc.status not in RETRY_STATUSES:
                raise RunRefused(f"the cloud refused this device's socket for run {job.run} "
                                 f"(HTTP {exc.status}): {exc.message}") from None
            failure: Exception = exc
        except aiohttp.ClientConnectionError as exc:
            failure = exc
        if time.monotonic() + delay > deadline:
            raise HostLost(f"cannot reach the run at {url}: {failure}") from None
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.25)


def _error_reply(message: Message, exc: BaseException) -> Message:
    reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                          reason=f"{type(exc).__name__}: {exc}"), reply_to=message)
    reply.metadata.__dict__["_message_id"] = uuid.uuid4().hex
    return reply


async def take_part(job: WorkerJob, reporter: TaskReporter) -> None:
    """Join the run, answer its messages with the ClientApp, return when the run ended.

    When the run's host goes away mid-run (its cloud task manager restarted, and starts the
    run again under the same number), the device rejoins it: within ``CONNECT_TIMEOUT_S`` each
    time, at most ``MAX_REJOINS`` times, keeping the ClientApp's ``context.state``.
    """
    app_dir = job.app.resolve()
    manifest = read_manifest((app_dir / "pyproject.toml").read_bytes())
    os.chdir(app_dir)
    if job.results_dir is not None:
        job.results_dir.mkdir(parents=True, exist_ok=True)
        os.chdir(job.results_dir)  # what the app writes where it works is a result of the run
        os.environ[RESULTS_DIR_ENV] = str(job.results_dir.resolve())
        (job.results_dir / STATE_DIR).mkdir(exist_ok=True)
        reporter.spool_to(job.results_dir / STATE_DIR / SPOOL_FILE)
    client_app = load_app(manifest.clientapp, ValueError, project_dir=app_dir)
    if not isinstance(client_app, ClientApp):
        raise TypeError(f"{manifest.clientapp} is a {type(client_app).__name__}, not a ClientApp")
    part = _Part(job, client_app, reporter)
    try:
        await _serve(part)
    except RunLeft as left:
        reporter.send_print(f"leaving run {job.run}: {left}")
        reporter.send_info(left.info)


async def _serve(part: _Part) -> None:
    """Serve the run, rejoining its host when it goes away (``take_part``)."""
    reporter = part.reporter
    async with aiohttp.ClientSession() as session:
        for attempt in range(MAX_REJOINS + 1):
            try:
                await part.serve(session)
                return
            except ClientAppFailed as failed:
                raise failed.error from None
            except (HostLost, aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
                if part.state is None or attempt == MAX_REJOINS:
                    raise HostLost(str(exc) or "the run's host went away") from None
                reporter.send_print(f"lost the run's host ({exc}); rejoining")


class _Part:
    """This device's part in the run, across the connections it takes."""

    def __init__(self, job: WorkerJob, client_app: ClientApp, reporter: TaskReporter) -> None:
        self.job = job
        self.client_app = client_app
        self.reporter = reporter
        self.state: RecordDict | None = None
        self.trained = False

    async def serve(self, session: aiohttp.ClientSession) -> None:
        """One connection to the run's host: returns when the run ended, raises ``HostLost``
        when the host went away first."""
        job, reporter = self.job, self.reporter
        socket = await _connect(session, job)
        async with socket:
            first = await socket.receive(timeout=CONNECT_TIMEOUT_S)
            if first.type != aiohttp.WSMsgType.TEXT:
                raise HostLost("the run's host closed the connection before welcoming us")
            answer = wire.parse_control(first.data, wire.Welcome, wire.Refusal)
            if isinstance(answer, wire.Refusal) and answer.full:
                raise RunLeft(INFO_RUN_FULL, answer.reason)
            if isinstance(answer, wire.Refusal):
                raise RunRefused(f"the run's host refused this device: {answer.reason}")
            welcome: wire.Welcome = answer
            reporter.send_print(f"joined run {welcome.run_id} as node {welcome.node_id} "
                                f"({json.dumps(welcome.node_config, sort_keys=True)})")
            if self.state is None:
                self.state = RecordDict()
            context = Context(run_id=welcome.run_id, node_id=welcome.node_id,
                              node_config=dict(welcome.node_config), state=self.state,
                              run_config=dict(welcome.run_config))
            inbox = wire.Inbox(welcome.max_message_bytes, wire.RunEnded)
            async for frame in socket:
                if frame.type == aiohttp.WSMsgType.TEXT:
                    item = inbox.text(frame.data)
                elif frame.type == aiohttp.WSMsgType.BINARY:
                    item = inbox.binary(frame.data)
                else:
                    break
                if isinstance(item, wire.RunEnded):
                    if item.status == "failed":
                        reporter.send_print(f"the run ended on the server: {item.reason}")
                    return
                if isinstance(item, Message):
                    await self._answer(socket, item, context)
        raise HostLost("the run's host went away before the run ended")

    async def _answer(self, socket: aiohttp.ClientWebSocketResponse, message: Message,
                      context: Context) -> None:
        if not self.trained and message.metadata.message_type.startswith("train"):
            self.trained = True
            self.reporter.send_info(INFO_FIRST_TRAIN)
        loop = asyncio.get_running_loop()
        try:
            reply = await loop.run_in_executor(None, self.client_app, message, context)
        except Exception as exc:
            await wire.send(socket, wire.encode(_error_reply(message, exc)))
            raise ClientAppFailed(exc) from exc
        del message
        if not reply.metadata.message_id:
            reply.metadata.__dict__["_message_id"] = uuid.uuid4().hex
        await wire.send(socket, wire.encode(reply))


def work(args: argparse.Namespace, reporter: TaskReporter) -> None:
    """Preload, wait for the job, take part in the run."""
    quiet_flower()
    loaded = preload([m for m in args.preload.split(",") if m])
    logger.info("warm (%s); waiting for a job on stdin", ", ".join(loaded) or "nothing preloaded")
    job = read_job(sys.stdin, WorkerJob)
    if job is None:
        logger.info("no job came; exiting")
        return
    asyncio.run(take_part(job, reporter))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The worker's command line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--preload", default=",".join(DEFAULT_PRELOAD),
                        help="modules to import before the job comes (comma-separated)")
    parser.add_argument("--warm", action="store_true",
                        help="accepted for symmetry with the server host: the worker always "
                             "waits for its job on stdin")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: the process exit status."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_task(lambda reporter: work(parse_args(argv), reporter))


if __name__ == "__main__":
    exit_now(main())
