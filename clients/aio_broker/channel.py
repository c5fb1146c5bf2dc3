"""aio-pika's `Channel` over `clients.aio_rpc.AsyncRpcConnection`.

The channel's state lives in the sans-IO `clients/broker/channel_state.py` (`ChannelState`:
publish buffer, confirm sequence numbers and their settlement, ack merging, consumer
registry), shared with the pika-style client; this class is the asyncio adapter over it.

What it does on the wire:

- **Publishing.** `_publish` appends the message to the state's publish buffer and, once
  per loop turn (`call_soon(_flush_publishes)`), sends what the state holds back
  (`ChannelState.take_output`) as one `publish_batch` frame with id 0. Under publisher
  confirms each message takes the next sequence number as it enters the buffer
  (`ChannelState.track`, with the message's future; the server numbers them in the same
  order) and its future resolves when a `confirm` push settles its record
  (`ChannelState.on_confirm`, honouring `multiple`): many publishes pipeline. A `return`
  push for a mandatory message is matched to the oldest unconfirmed message with that
  exchange and routing key (`ChannelState.on_return`); its confirm then resolves to a
  `DeliveryError` when the channel was opened with `on_return_raises=True`, else to the
  returned message.
- **Consuming.** A `deliver` push carries a batch; `_on_deliver` builds one `IncomingMessage`
  per entry, in order, and hands it to the consumer's callback (coroutines run as tasks).
- **Settling.** ack/nack/reject are id-0 requests; AsyncRpcConnection writes all frames
  queued in one loop turn with a single `writelines`. Acks that leave every lower delivery
  tag settled merge into one `multiple=True` ack per turn (`ChannelState.ack`).
- **Errors.** A refused request closes the channel (AMQP semantics), on the server too so it
  requeues the channel's unacked messages; pending confirms fail with the same exception.
  `await channel.reopen()` opens it again.
"""

import asyncio
import itertools
import logging

from clients.broker.channel_state import (MESSAGE_OVERHEAD, PUBLISH_BATCH_BYTES, PUBLISH_BATCH_MESSAGES,
                                          ChannelState)
from clients.protocol.errors import BrokerError

from . import exceptions
from .entities import Exchange, ExchangeType, Queue
from .message import IncomingMessage

_tag_ids = itertools.count(1)
log = logging.getLogger("clients.aio_broker")


class Channel:
    def __init__(self, connection, channel_number: int, publisher_confirms: bool = True,
                 on_return_raises: bool = False):
        self.connection = connection
        self._rpc = connection._rpc
        self._loop = asyncio.get_running_loop()
        self.number = channel_number
        self.publisher_confirms = publisher_confirms
        self.on_return_raises = on_return_raises
        self._opened = False
        self._closed = False
        self.close_reason = None
        # The channel's state without I/O; this class decides when to write and resolves futures.
        self._core = core = ChannelState(channel_number)
        self._consumers = core.consumers    # consumer_tag -> (callback, no_ack)
        self._pub_buf = core.publishes      # the same list for the channel's life
        self._pub_scheduled = False
        self.default_exchange = Exchange(self, "", ExchangeType.DIRECT)
        self._qos = None
        self._tasks: set = set()
        self.return_callbacks: list = []
        self.close_callbacks: list = []
        self.cancel_callbacks: list = []
        # What a robust connection replays on a new connection (only filled when robust).
        self._qos_args = None
        self._exchanges: dict = {}           # name -> declare kwargs
        self._queues: list = []              # Queue objects declared here (server-named: name "")
        self._bindings: list = []            # (queue, exchange name, routing key, arguments)
        self._consumer_specs: dict = {}      # consumer_tag -> (queue, callback, no_ack, exclusive, arguments)

    # ---- lifecycle -----------------------------------------------------------------------
    def __await__(self):
        return self.initialize().__await__()

    async def initialize(self, timeout=None):
        if not self._opened:
            await self._call("channel_open", {})
            if self.publisher_confirms:
                await self._call("confirm_select", {})
                self._core.confirm_select()
            self._opened = True
            self._closed = False
        return self

    async def reopen(self):
        if not self._closed:
            return self
        self._opened = False
        self._core.reset()
        self.connection._channels[self.number] = self
        self._closed = False
        self.close_reason = None
        return await self.initialize()

    @property
    def is_closed(self) -> bool:
        return self._closed or self.connection.is_closed

    @property
    def is_initialized(self) -> bool:
        return self._opened

    @property
    def channel_number(self) -> int:
        return self.number

    async def close(self, exc=None):
        if self._closed:
            return
        self._flush_publishes()
        try:
            if not self._rpc.closed:
                await self._rpc.call("channel_close", {"ch": self.number})
        except BrokerError:
            pass
        self._mark_closed(exc or exceptions.ChannelInvalidStateError("channel closed by the client"))

    async def __aenter__(self):
        return await self.initialize()

    async def __aexit__(self, exc_type, exc, tb):
        await self.close()

    def _mark_closed(self, exc):
        if self._closed:
            return
        self._closed = True
        self._opened = False
        self.close_reason = exc
        self._fail_unconfirmed(exc)
        if self.connection._channels.get(self.number) is self:
            del self.connection._channels[self.number]
        for callback in self.close_callbacks:
            callback(self, exc)

    # ---- robustness: surviving a lost connection (RobustConnection) ----------------------
    def _interrupt(self, exc):
        """The connection dropped and will be re-established: fail what was in flight, keep
        what the channel declared and who consumes, to replay them on the new connection."""
        self._opened = False
        self._fail_unconfirmed(exc)  # and delivery tags start again at 1 on the new channel

    def _fail_unconfirmed(self, exc):
        """Reset the channel's state; publishes still awaiting a confirm fail with `exc`."""
        for record in self._core.reset():
            if not record.waiter.done():
                record.waiter.set_exception(exc)

    async def _restore(self):
        """Open the channel on the new connection and replay its declarations and consumers."""
        self._rpc = self.connection._rpc
        self._opened = False
        await self.initialize()
        if self._qos_args is not None:
            count, size, global_ = self._qos_args
            await self.set_qos(prefetch_count=count, prefetch_size=size, global_=global_)
        for name, kwargs in self._exchanges.items():
            await self._call("exchange_declare", {"exchange": name, "passive": False, **kwargs,
                                                  "arguments": kwargs["arguments"] or {}})
        for queue in self._queues:
            result = await self._call("queue_declare", {
                "queue": "" if queue.server_named else queue.name, "passive": False, "durable": queue.durable,
                "exclusive": queue.exclusive, "auto_delete": queue.auto_delete, "arguments": queue.arguments or {}})
            queue.name = result.get("queue", queue.name)  # a server-named queue gets a new name
        for queue, exchange, routing_key, arguments in self._bindings:
            await self._call("queue_bind", {"queue": queue.name, "exchange": exchange,
                                            "routing_key": routing_key, "arguments": arguments or {}})
        specs, self._consumer_specs = self._consumer_specs, {}
        for tag, (queue, callback, no_ack, exclusive, arguments) in specs.items():
            await self._consume(queue, callback, no_ack, exclusive, arguments, tag)

    def _on_broker_error(self, exc):
        """A request on this channel failed: the channel closes, here and on the server."""
        if self._closed:
            return
        self._mark_closed(exc)
        if not self._rpc.closed:
            fut = self._rpc.send("channel_close", {"ch": self.number})
            fut.add_done_callback(lambda f: f.exception())  # nobody waits on it

    def _check(self):
        if self._closed:
            raise exceptions.ChannelInvalidStateError(f"channel {self.number} is closed: {self.close_reason!r}")
        if self._rpc.closed or (not self._opened and self.connection.robust and not self.connection.connected.is_set()):
            raise exceptions.ChannelInvalidStateError(
                "connection is closed" if self.connection.is_closed else
                "connection is down and being re-established; wait for connection.connected")
        if not self._opened:
            raise exceptions.ChannelInvalidStateError(f"channel {self.number} is not open: await it first")

    async def _call(self, op, args, timeout=30.0):
        if self._opened:
            self._check()
        self._flush_publishes()  # requests on a channel keep the order they were made in
        args["ch"] = self.number
        try:
            fut = self._rpc.send(op, args)
        except BrokerError as exc:
            raise exceptions.ConnectionClosed(0, exc.message) from None
        try:
            if timeout is None:
                return await fut
            return await asyncio.wait_for(fut, timeout)
        except BrokerError as exc:
            if exc.code == "CONNECTION_CLOSED":
                raise exceptions.ConnectionClosed(0, exc.message) from None
            error = exceptions.channel_error(exc.code, exc.message)
            self._on_broker_error(error)
            raise error from None

    # ---- declarations --------------------------------------------------------------------
    async def set_qos(self, prefetch_count: int = 0, prefetch_size: int = 0, global_: bool = False,
                      timeout=None, all_channels=None):
        if all_channels is not None:
            global_ = all_channels
        await self._call("basic_qos", {"prefetch_count": prefetch_count, "prefetch_size": prefetch_size,
                                       "global": global_})
        if self.connection.robust:
            self._qos_args = (prefetch_count, prefetch_size, global_)

    async def declare_exchange(self, name: str, type=ExchangeType.DIRECT, *, durable: bool = False,
                               auto_delete: bool = False, internal: bool = False, passive: bool = False,
                               arguments=None, timeout=None) -> Exchange:
        type_name = type.value if isinstance(type, ExchangeType) else str(type)
        if name:
            await self._call("exchange_declare", {"exchange": name, "type": type_name, "durable": durable,
                                                  "auto_delete": auto_delete, "internal": internal,
                                                  "passive": passive, "arguments": arguments or {}})
            if self.connection.robust and not passive:
                self._exchanges[name] = dict(type=type_name, durable=durable, auto_delete=auto_delete,
                                             internal=internal, arguments=arguments)
        return Exchange(self, name, type, durable=durable, auto_delete=auto_delete, internal=internal,
                        arguments=arguments)

    async def get_exchange(self, name: str, *, ensure: bool = True) -> Exchange:
        if ensure:
            return await self.declare_exchange(name, passive=True)
        return Exchange(self, name)

    async def declare_queue(self, name: str | None = None, *, durable: bool = False, exclusive: bool = False,
                            passive: bool = False, auto_delete: bool = False, arguments=None,
                            timeout=None) -> Queue:
        result = await self._call("queue_declare", {"queue": name or "", "passive": passive, "durable": durable,
                                                    "exclusive": exclusive, "auto_delete": auto_delete,
                                                    "arguments": arguments or {}})
        queue = Queue(self, result.get("queue", name), durable=durable, exclusive=exclusive,
                      auto_delete=auto_delete, arguments=arguments, declaration_result=result)
        if self.connection.robust and not passive:
            queue.server_named = not name
            self._queues.append(queue)
        return queue

    async def get_queue(self, name: str, *, ensure: bool = True) -> Queue:
        if ensure:
            return await self.declare_queue(name, passive=True)
        return Queue(self, name)

    async def queue_delete(self, queue_name: str, timeout=None, if_unused=False, if_empty=False, nowait=False):
        self._queues = [q for q in self._queues if q.name != queue_name]
        self._bindings = [b for b in self._bindings if b[0].name != queue_name]
        return await self._call("queue_delete", {"queue": queue_name, "if_unused": if_unused, "if_empty": if_empty})

    async def exchange_delete(self, exchange_name: str, timeout=None, if_unused=False, nowait=False):
        self._exchanges.pop(exchange_name, None)
        return await self._call("exchange_delete", {"exchange": exchange_name, "if_unused": if_unused})

    # ---- publishing ----------------------------------------------------------------------
    def _publish(self, exchange: str, routing_key: str, message, mandatory: bool):
        """Queue one message for the next publish_batch; returns its confirm future (or None)."""
        if self._closed or not self._opened or self._rpc.closed:
            self._check()
        buf = self._pub_buf
        core = self._core
        body = message.body
        buf.append((exchange, routing_key, body, message.properties_map(), mandatory))  # ChannelState.publish, inlined
        core.publish_bytes += len(body) + MESSAGE_OVERHEAD
        if len(buf) >= PUBLISH_BATCH_MESSAGES or core.publish_bytes >= PUBLISH_BATCH_BYTES:
            # A publish loop that never yields to the event loop would otherwise hold
            # everything: send the batch now, so the transport's flow control can push back.
            self._flush_publishes()
            self._rpc._flush()
        elif not self._pub_scheduled:
            self._pub_scheduled = True
            self._loop.call_soon(self._flush_publishes)
        if not self.publisher_confirms:
            return None
        fut = self._loop.create_future()
        core.track(exchange, routing_key, mandatory, fut)
        return fut

    def _flush_publishes(self):
        """Send what the channel holds back: the publish batch, then the merged ack."""
        self._pub_scheduled = False
        if self._closed:
            return
        try:
            frames = self._core.take_output()
            if frames:
                self._send_frames(frames)
        except BrokerError as exc:
            self._mark_closed(exceptions.ConnectionClosed(0, exc.message))

    def _send_frames(self, frames):
        self.connection._last_noreply_channel = self
        send = self._rpc.send
        for op, args in frames:
            send(op, args, want_reply=False)

    def _on_confirmed(self, records):
        """A `confirm` push settled these records (`ChannelState.receive`): resolve their futures."""
        for record in records:
            fut = record.waiter
            if fut.done():
                continue
            returned = record.returned
            if not record.acked:
                fut.set_exception(exceptions.DeliveryError(None, "nack: the broker refused the message"))
            elif returned is not None:
                if self.on_return_raises:
                    fut.set_exception(exceptions.DeliveryError(returned, returned))
                else:
                    fut.set_result(returned)
            else:
                fut.set_result(True)

    def _on_return(self, happened):
        """A `return` push (a `channel_state.Returned`)."""
        returned = IncomingMessage(self, happened.body, None, False, happened.exchange, happened.routing_key,
                                   happened.properties, no_ack=True)
        if happened.record is not None:
            happened.record.returned = returned
        for callback in self.return_callbacks:
            callback(self, returned)

    # ---- consuming -----------------------------------------------------------------------
    async def _consume(self, queue, callback, no_ack, exclusive, arguments, consumer_tag):
        queue_name = getattr(queue, "name", queue)
        tag = consumer_tag or f"ctag{self.number}.{next(_tag_ids)}"
        core = self._core
        # Registered before the request leaves: deliveries can arrive in the same read as the
        # reply, before this coroutine resumes.
        if not core.add_consumer(tag, callback, no_ack):
            raise exceptions.DuplicateConsumerTag(530, f"consumer tag {tag!r} is in use on this channel")
        try:
            result = await self._call("consume", {"queue": queue_name, "consumer_tag": tag, "no_ack": no_ack,
                                                  "exclusive": exclusive, "arguments": arguments or {}})
        except BaseException:
            core.forget_consumer(tag)
            raise
        server_tag = (result or {}).get("consumer_tag") or tag
        core.rename_consumer(tag, server_tag)
        if self.connection.robust:
            self._consumer_specs[server_tag] = (queue, callback, no_ack, exclusive, arguments)
        return server_tag

    async def _cancel(self, consumer_tag):
        self._consumer_specs.pop(consumer_tag, None)
        self._core.remove_consumer(consumer_tag)
        if not self._closed:
            await self._call("cancel", {"consumer_tag": consumer_tag})

    def _on_deliver(self, batch):
        consumers = self._consumers
        tasks = self._tasks
        core = self._core
        settle = core.settlement.settle
        for d in batch:
            entry = consumers.get(d[0])
            if entry is None:
                # Its consumer was cancelled while this was in flight: give it back.
                frames = core.orphaned(d)
                if frames:
                    self._flush_publishes()  # what is held back goes first, so requests keep their order
                    self._send_frames(frames)
                continue
            callback, no_ack = entry
            if no_ack:
                settle(d[1])
            message = IncomingMessage(self, d[5], d[1], d[2], d[3], d[4], d[6], d[0], None, no_ack)
            try:
                result = callback(message)
            except Exception:
                # We are inside the protocol's data_received: a consumer's bug must not break
                # the connection. aio-pika logs it the same way.
                log.exception("consumer %s on channel %s raised", d[0], self.number)
                continue
            if result is not None and asyncio.iscoroutine(result):
                task = self._loop.create_task(result)
                tasks.add(task)
                task.add_done_callback(self._task_done)

    def _task_done(self, task):
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("consumer callback on channel %s raised", self.number, exc_info=task.exception())

    def _on_broker_cancel(self, consumer_tag):
        """The broker cancelled a consumer (ChannelState.receive took it off the registry)."""
        for callback in self.cancel_callbacks:
            callback(self, consumer_tag)

    def _settle(self, op, args):
        if self._closed:
            raise exceptions.ChannelInvalidStateError(f"channel {self.number} is closed")
        core = self._core
        tag = args["delivery_tag"]
        if op == "ack":
            held = core.ack_upto
            frames = core.ack(tag, args.get("multiple", False))
            if not frames:
                # Merged: the acks of one loop turn go out as one multiple=True frame.
                if core.ack_upto != held and not self._pub_scheduled:
                    self._pub_scheduled = True
                    self._loop.call_soon(self._flush_publishes)
                return
        elif op == "nack":
            frames = core.nack(tag, args.get("multiple", False), args.get("requeue", True))
        else:
            frames = core.reject(tag, args.get("requeue", True))
        self._flush_publishes()  # what is held back goes first, so requests keep their order
        self._send_frames(frames)

    async def get(self, queue_name, no_ack=False):
        result = await self._call("get", {"queue": queue_name, "no_ack": no_ack})
        if not result:
            return None
        self._core.on_get(result["delivery_tag"], no_ack)
        return IncomingMessage(self, result.get("body", b""), result["delivery_tag"], result.get("redelivered", False),
                               result.get("exchange", ""), result.get("routing_key", ""), result.get("properties"),
                               None, result.get("message_count"), no_ack)

    def __repr__(self):
        return f"<Channel #{self.number} {'closed' if self._closed else 'open'}>"
