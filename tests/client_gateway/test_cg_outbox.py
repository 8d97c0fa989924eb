"""Reports through the durable outbox: kept while the cloud is away, delivered in order after."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiohttp import web
from cg_helpers import await_until, closed_port_url
from support import Cloud, Gateway, free_port

from agata_common.config import BrokerSettings
from agata_contracts.queues import outbox_queue
from agata_contracts.tasks import REPORT_CLIENT_TASK
from agata_contracts.users import GET_USER_INFO, UPDATE_USER_INFO
from client_gateway.http import CloudGatewayHttp
from client_gateway.reports import ReportForwarder
from cloud_gateway.wiring import create_app
from microservice_interconnect import NotFound, ServiceUnavailable
from microservice_interconnect.link import AmqpLink
from microservice_interconnect.outbox import Outbox, decode_message
from microservice_interconnect.outbox_worker import OutboxWorker


def _user(cloud: Cloud, user_id: str):
    try:
        return cloud.client.call(GET_USER_INFO, {"user_id": user_id})
    except NotFound:
        return None


async def test_reports_wait_for_the_cloud_and_survive_a_restart(cloud: Cloud, start_cg, device,
                                                                broker) -> None:
    port = cloud.settings.server_gateway.port
    url = f"http://127.0.0.1:{port}"
    queue = outbox_queue(cloud.settings.client_broker.queue_prefix)
    first = await asyncio.to_thread(start_cg, url)
    outbox = Outbox(device.runtime.link, queue)

    reports = [{"user_id": "dev-9", "data_qnt": 1, "sensors": ["a"]},
               {"user_id": "dev-9", "data_qnt": 2},
               {"user_id": "dev-9", "data_qnt": 3, "sensors": ["b"]}]
    for report in reports:
        await asyncio.to_thread(outbox.send, UPDATE_USER_INFO, report)
    # the worker holds the first (unacked, retrying), the other two wait in the durable queue
    assert await await_until(lambda: broker.counts(queue) == (2, 1), 5), broker.counts(queue)

    # the client gateway goes away: nothing is lost, the held report is back in the queue
    await asyncio.to_thread(first.stop)
    assert await await_until(lambda: broker.counts(queue) == (3, 0), 5), broker.counts(queue)
    assert first.worker.delivered == 0

    await asyncio.to_thread(start_cg, url)
    await asyncio.sleep(1)  # the new worker meets a closed port too and backs off

    app = create_app(cloud.settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        def all_arrived() -> bool:
            user = _user(cloud, "dev-9")
            return user is not None and user.data_qnt == 3 and broker.counts(queue)[0] == 0

        assert await await_until(all_arrived, 35, interval=0.2), _user(cloud, "dev-9")
        user = _user(cloud, "dev-9")
        # applied in order: the last report's values win, the untouched field kept the 3rd's
        assert (user.data_qnt, user.sensors) == (3, ["b"])
        assert await await_until(lambda: broker.counts(queue) == (0, 1), 5)
    finally:
        await runner.cleanup()


async def test_rejected_report_is_set_aside_and_does_not_block(gateway: Gateway, cloud: Cloud,
                                                              start_cg, device, broker) -> None:
    queue = outbox_queue(cloud.settings.client_broker.queue_prefix)
    running = await asyncio.to_thread(start_cg, gateway.url)
    outbox = Outbox(device.runtime.link, queue)

    await asyncio.to_thread(outbox.send, UPDATE_USER_INFO, {"user_id": "dev-r", "data_qnt": 1})
    await asyncio.to_thread(outbox.send, REPORT_CLIENT_TASK,
                            {"task_id": "ghost", "client_id": "dev-r", "status": "failed",
                             "reason": "boom"})
    await asyncio.to_thread(broker.publish_raw, queue, b"not json")
    await asyncio.to_thread(outbox.send, UPDATE_USER_INFO, {"user_id": "dev-r", "data_qnt": 2})

    def settled() -> bool:
        user = _user(cloud, "dev-r")
        return (user is not None and user.data_qnt == 2
                and broker.counts(f"{queue}.rejected")[0] == 2)

    assert await await_until(settled, 10, interval=0.1)
    assert (running.worker.delivered, running.worker.rejected) == (2, 2)
    set_aside = await asyncio.to_thread(broker.take_all, f"{queue}.rejected")
    (ghost_props, ghost_body), (raw_props, raw_body) = set_aside
    assert decode_message(ghost_body)[0] == REPORT_CLIENT_TASK.name
    assert json.loads(decode_message(ghost_body)[1])["task_id"] == "ghost"
    assert ghost_props.delivery_mode == 2
    reason = ghost_props.headers["x-rejected-reason"]
    assert "404" in reason and "ghost" in reason
    assert raw_body == b"not json"
    assert "malformed" in raw_props.headers["x-rejected-reason"]
    assert broker.counts(queue) == (0, 1)


def test_send_fails_when_the_broker_is_unreachable() -> None:
    link = AmqpLink(BrokerSettings(port=free_port(), connect_timeout_s=0.5), name="test_no_broker")
    link.start()
    try:
        outbox = Outbox(link, "test-never")
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable) as info:
            outbox.send(UPDATE_USER_INFO, {"user_id": "x"}, timeout=1.0)
        assert 0.9 < time.monotonic() - started < 10  # its own 1 s timeout, not a hang
        assert "unreachable" in info.value.message
    finally:
        link.close()


def test_send_validates_the_request(device, broker) -> None:
    queue = outbox_queue(device.settings.client_broker.queue_prefix)
    outbox = Outbox(device.runtime.link, queue)
    with pytest.raises(TypeError):
        outbox.send(UPDATE_USER_INFO, REPORT_CLIENT_TASK.request(
            task_id="t", client_id="c", status="failed"))


def test_unreachable_cloud_url_still_queues(start_cg, device, broker) -> None:
    """Sending never depends on the cloud: the broker's confirm is enough."""
    start_cg(closed_port_url())
    queue = outbox_queue(device.settings.client_broker.queue_prefix)
    outbox = Outbox(device.runtime.link, queue)
    started = time.monotonic()
    outbox.send(UPDATE_USER_INFO, {"user_id": "dev-q"}, timeout=30)
    # returned on the broker's confirm, long before the cloud could have been tried for 30 s
    assert time.monotonic() - started < 15


async def test_delivery_resumes_when_the_cloud_is_back_not_when_the_back_off_ends(
        cloud: Cloud, device, broker) -> None:
    """A probe of the cloud's /health ends a grown back-off as soon as the cloud answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = cloud.settings.model_copy(update={"server_gateway": cloud.settings.server_gateway
                                                 .model_copy(update={"port": port})})
    queue = outbox_queue(cloud.settings.client_broker.queue_prefix)
    http = CloudGatewayHttp(url, settings.server_gateway.client_token, timeout_s=2)
    worker = OutboxWorker(device.runtime.link, queue, ReportForwarder(http),
                          min_backoff_s=20, max_backoff_s=20, probe=http.healthy)
    try:
        assert await asyncio.to_thread(worker.ready.wait, 10)
        await asyncio.to_thread(Outbox(device.runtime.link, queue).send, UPDATE_USER_INFO,
                                {"user_id": "dev-p", "data_qnt": 7})
        # the first attempt meets a closed port; the worker now waits a 20 s back-off
        assert await await_until(lambda: broker.counts(queue) == (0, 1), 5)
        app = create_app(settings)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        back = time.monotonic()
        try:
            def arrived() -> bool:
                user = _user(cloud, "dev-p")
                return user is not None and user.data_qnt == 7

            assert await await_until(arrived, 10, interval=0.05)
            assert time.monotonic() - back < 5, "delivery waited for the back-off"
        finally:
            await runner.cleanup()
    finally:
        await asyncio.to_thread(worker.stop)
        http.close()
