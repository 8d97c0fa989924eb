"""RPC services, nameko-style: a method declared with ``@rpc(SPEC)`` is an endpoint.

The host declares one queue per RPC (AGATA's layout: the queue is the RPC's name), validates
each request against the spec's model, runs the handler on a worker thread (the link's loop keeps
heartbeats going however slow the handler is), replies with AGATA's envelope and acks only after
replying. Validation errors are 400s naming the field; ``RpcError`` subclasses keep their status;
anything else is a 500 with an error id that appears, with the traceback, only in the log. Every
request records the experiment events ``received`` and ``replied`` under the RPC's name, so
services never write those by hand.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from pika.channel import Channel
from pika.spec import Basic, BasicProperties
from pydantic import BaseModel, ValidationError

from agata_contracts.rpc import RpcSpec
from microservice_interconnect import wire
from microservice_interconnect.errors import RpcError
from microservice_interconnect.events import NO_EVENTS, EventRecorder
from microservice_interconnect.link import AmqpLink, await_callback

logger = logging.getLogger(__name__)

HandlerT = TypeVar("HandlerT", bound=Callable[..., Any])
_SPEC_ATTRIBUTE = "__rpc_spec__"
QUEUE_EXPIRES_MS = 10 * 60 * 1000
"""An RPC queue nobody has consumed for this long is deleted by the broker: callers of a service
that is gone get a quick 503 instead of a timeout, and old queue names do not pile up."""


_INLINE_ATTRIBUTE = "__rpc_inline__"


def rpc(spec: RpcSpec[Any, Any], *, inline: bool = False) -> Callable[[HandlerT], HandlerT]:
    """Mark a service method as the implementation of ``spec``.

    Handlers run on worker threads, so however slow they are the connection keeps its
    heartbeats. ``inline=True`` runs the handler on the connection's loop instead, saving two
    thread hand-offs per call: only for handlers that finish in well under a millisecond
    without waiting on anything but a local lookup, and that never make RPC calls themselves.
    """

    def mark(function: HandlerT) -> HandlerT:
        setattr(function, _SPEC_ATTRIBUTE, spec)
        setattr(function, _INLINE_ATTRIBUTE, inline)
        return function

    return mark


@dataclass(frozen=True)
class Endpoint:
    """A spec bound to the service method that implements it."""

    spec: RpcSpec[Any, Any]
    handler: Callable[[BaseModel], BaseModel]
    inline: bool = False


def endpoints_of(service: object) -> dict[str, Endpoint]:
    """Every ``@rpc`` method of a service object, by RPC name."""
    found: dict[str, Endpoint] = {}
    for attribute in dir(type(service)):
        function = getattr(type(service), attribute, None)
        spec = getattr(function, _SPEC_ATTRIBUTE, None)
        if spec is None:
            continue
        if spec.name in found:
            raise TypeError(f"{type(service).__name__} implements {spec.name} twice")
        found[spec.name] = Endpoint(spec, getattr(service, attribute),
                                    bool(getattr(function, _INLINE_ATTRIBUTE, False)))
    if not found:
        raise TypeError(f"{type(service).__name__} declares no @rpc endpoint")
    return found


def dispatch(endpoint: Endpoint, body: bytes) -> bytes:
    """Validate, run and wrap one request; always returns an envelope, never raises."""
    spec = endpoint.spec
    try:
        request = wire.parse_request(spec.request, body, f"request for {spec.name}")
        result = endpoint.handler(request)
        if not isinstance(result, spec.response):
            result = spec.response.model_validate(result)
        return wire.ok_reply(result)
    except RpcError as exc:
        if exc.status_code >= 500:
            logger.error("%s failed: %s", spec.name, exc.message)
        return wire.error_reply(exc)
    except ValidationError:
        error_id = uuid.uuid4().hex[:12]
        logger.exception("%s produced a reply outside its contract [error %s]", spec.name, error_id)
        return wire.error_reply(RpcError(f"internal error (id {error_id})", error_id=error_id))
    except Exception:
        error_id = uuid.uuid4().hex[:12]
        logger.exception("%s failed unexpectedly [error %s]", spec.name, error_id)
        return wire.error_reply(RpcError(f"internal error (id {error_id})", error_id=error_id))


class ServiceHost:
    """Serves one service object's endpoints on a link."""

    def __init__(
        self,
        service: object,
        link: AmqpLink,
        *,
        name: str = "",
        queue_prefix: str = "",
        threads: int = 8,
        prefetch: int = 32,
        events: EventRecorder = NO_EVENTS,
    ) -> None:
        self.service = service
        self.name = name or type(service).__name__
        self.events = events
        self.link = link
        self.queue_prefix = queue_prefix
        self.prefetch = prefetch
        self.endpoints = endpoints_of(service)
        self._by_queue = {ep.spec.queue(queue_prefix): ep for ep in self.endpoints.values()}
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rpc")
        self._channel: Channel | None = None
        self._consumer_tags: list[str] = []
        self._stopping = False
        self.ready = threading.Event()
        link.add_user(self)

    def __repr__(self) -> str:
        return f"ServiceHost({type(self.service).__name__})"

    async def on_connected(self, link: AmqpLink) -> None:
        """Declare the RPC queues and start consuming them."""
        if self._stopping:
            return
        channel = await link.open_channel()
        await await_callback(link.loop, channel.basic_qos, prefetch_count=self.prefetch)
        tags = []
        for queue in self._by_queue:
            await await_callback(link.loop, channel.queue_declare, queue, durable=False,
                                 arguments={"x-expires": QUEUE_EXPIRES_MS})
            tags.append(channel.basic_consume(queue, self._on_request))
        self._channel = channel
        self._consumer_tags = tags
        self.ready.set()
        logger.info("%s serving %s", type(self.service).__name__, ", ".join(self._by_queue))

    def on_disconnected(self) -> None:
        """Forget the channel; unacked requests go back to their queues on the broker."""
        self._channel = None
        self._consumer_tags = []
        self.ready.clear()

    def _on_request(self, channel: Channel, method: Basic.Deliver, props: BasicProperties,
                    body: bytes) -> None:
        endpoint = self._by_queue.get(method.routing_key)
        if endpoint is None:
            channel.basic_ack(method.delivery_tag)
            return
        self.events.register_event(self.name, endpoint.spec.name, "received")
        if endpoint.inline:
            self._reply(channel, method.delivery_tag, props, dispatch(endpoint, body), endpoint)
            return
        self._executor.submit(self._handle, channel, method.delivery_tag, props, body, endpoint)

    def _handle(self, channel: Channel, delivery_tag: int, props: BasicProperties, body: bytes,
                endpoint: Endpoint) -> None:
        reply = dispatch(endpoint, body)
        self.link.loop.call_soon_threadsafe(self._reply, channel, delivery_tag, props, reply,
                                            endpoint)

    def _reply(self, channel: Channel, delivery_tag: int, props: BasicProperties,
               reply: bytes, endpoint: Endpoint) -> None:
        self.events.register_event(self.name, endpoint.spec.name, "replied")
        if not channel.is_open:
            return
        if props.reply_to:
            channel.basic_publish(
                "",
                props.reply_to,
                reply,
                BasicProperties(correlation_id=props.correlation_id,
                                content_type=wire.CONTENT_TYPE),
            )
        channel.basic_ack(delivery_tag)

    async def _cancel_consumers(self) -> None:
        channel = self._channel
        if channel is None or not channel.is_open:
            return
        for tag in self._consumer_tags:
            await await_callback(self.link.loop, channel.basic_cancel, tag)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking requests, finish the ones in hand (their replies go out), then return."""
        self._stopping = True
        # a link never started (or already closed) has no loop to run on: nothing to cancel
        if self.link.loop.is_running():
            try:
                self.link.run_coroutine(self._cancel_consumers()).result(timeout)
            except Exception as exc:
                logger.debug("cancelling consumers: %s", exc)
        self._executor.shutdown(wait=True)
        if not self.link.loop.is_running():
            return
        # every reply was queued on the loop before this marker: once it runs, they are out
        try:
            self.link.run_coroutine(asyncio.sleep(0)).result(timeout)
        except Exception as exc:
            logger.debug("draining replies: %s", exc)
