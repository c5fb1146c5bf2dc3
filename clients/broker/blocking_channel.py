"""`BlockingChannel`: pika's channel API, each method mapped onto one minibroker op.

The channel's state lives in a sans-IO `ChannelState` (`channel_state.py`: publish buffer,
confirm sequence numbers and their settlement, ack merging, consumer registry), shared with
the asyncio client; this class is the blocking adapter over it. It decides when frames are
written and makes the calls wait as pika's do.

Synchronous methods (declares, binds, `basic_qos`, `basic_consume`, `basic_get`...) send their
request and wait for its reply, as pika does. The hot paths do not wait:

- `basic_publish` without confirms appends the message to the state's publish buffer;
  `_materialize` turns what the state holds back (`ChannelState.take_output`) into frames:
  one `publish_batch` (id 0, no reply) when the buffer holds 1,000 messages or 256 KiB, or
  whenever the connection flushes (it waits, reads or processes events). A publish more than
  a millisecond after the previous one is sent at once: only publish loops batch. With
  `confirm_delivery()` on, it sends the message at once, takes its sequence number
  (`ChannelState.track`) and blocks until the `confirm` push settles that record, raising
  `UnroutableError` if a `return` push was matched to it first (a mandatory message) and
  `NackError` for a negative confirm.
- `basic_ack` / `basic_nack` / `basic_reject` are id-0 requests queued for the next flush.
  Acks merge (`ChannelState.ack`): an ack that leaves every tag up to its own settled only
  raises the state's `ack_upto`, sent as one `multiple=True` ack at the flush; an ack out of
  order goes out as it is.
- Deliveries come in batches (`deliver` push); `_dispatch_batch` calls each consumer's
  callback in order with pika's `(channel, Basic.Deliver, BasicProperties, body)`.

A failed request closes the channel, as in AMQP: the error is raised as
`ChannelClosedByBroker(reply_code, reply_text)` (by the call that got it, or for an id-0
request by the next call on the channel) and later calls raise `ChannelWrongStateError`.
The client also closes the channel on the server then, so its unacked messages are requeued.
"""

import collections
import itertools
import time

from . import exceptions, spec
from .exchange_type import ExchangeType
from .channel_state import MESSAGE_OVERHEAD, PUBLISH_BATCH_BYTES, PUBLISH_BATCH_MESSAGES, ChannelState
from .frame import Method

SPARSE_PUBLISH_GAP = 0.001  # seconds since the previous publish that make a publish "lone"
_monotonic = time.monotonic

_Deliver = spec.Basic.Deliver
_props_from_wire = spec.BasicProperties.from_wire
_BasicProperties = spec.BasicProperties
_new_object = object.__new__
_tag_ids = itertools.count(1)


class ReturnedMessage:
    """A message the broker returned (pika's blocking_connection.ReturnedMessage)."""

    __slots__ = ("method", "properties", "body")

    def __init__(self, method, properties, body):
        self.method = method
        self.properties = properties
        self.body = body

    def __repr__(self):
        return f"ReturnedMessage(method={self.method!r}, properties={self.properties!r}, body={self.body!r})"


class _QueueConsumerGenerator:
    """The state behind `BlockingChannel.consume`: its consumer and the messages it holds."""

    def __init__(self, params, consumer_tag):
        self.params = params
        self.consumer_tag = consumer_tag
        self.pending = collections.deque()

    def deliver(self, channel, method, properties, body):
        self.pending.append((method, properties, body))


def _wire_properties(properties):
    if properties is None:
        return None
    if isinstance(properties, spec.BasicProperties):
        return properties.to_wire()
    raise TypeError(f"properties must be a BasicProperties, got {type(properties).__name__}")


class BlockingChannel:
    def __init__(self, connection, channel_number: int):
        self.connection = connection
        self._conn = connection
        self.channel_number = channel_number
        self._closed = False
        self._closing_exc = None       # ChannelClosedByBroker waiting to be raised by the next call
        # The channel's state without I/O (publish buffer, confirms, settlement, consumers);
        # this class decides when to write and how to wait.
        self._core = core = ChannelState(channel_number)
        self._consumers = core.consumers   # consumer_tag -> (on_message_callback, auto_ack)
        self._pub_buf = core.publishes     # the same list for the channel's life
        self._settled = core.settlement.settle
        self._generator = None
        self._last_publish = 0.0
        self._last_settle = 0.0
        self._awaiting = None          # the Unconfirmed record basic_publish is waiting on
        self._return_callbacks: list = []
        self._cancel_callbacks: list = []
        self._close_callbacks: list = []
        self._ch_args = {"ch": channel_number}
        self._lock = connection._lock
        self._buf_since = 0.0          # when the publish buffer got its oldest message

    # ---- state ---------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return not self._closed

    @property
    def is_closed(self) -> bool:
        return self._closed

    @property
    def consumer_tags(self) -> list:
        return list(self._consumers)

    def _check(self):
        if self._closing_exc is not None:
            exc, self._closing_exc = self._closing_exc, None
            raise exc
        if self._closed:
            raise exceptions.ChannelWrongStateError("Channel is closed.")

    def _mark_closed(self, reason):
        if self._closed:
            return
        self._closed = True
        with self._lock:
            self._core.reset()
        self._generator = None
        self._conn._forget_channel(self)
        for callback in self._close_callbacks:
            callback(self, reason)

    def _on_broker_error(self, exc, raise_later: bool):
        """The server refused a request: the channel is closed, as AMQP closes it."""
        if self._closed:
            return
        self._mark_closed(exc)
        self._conn._state_changed = True  # wakes process_data_events: start_consuming must see this
        if raise_later:
            self._closing_exc = exc
        conn = self._conn
        if not conn._closed:
            # Close the channel on the server too, so its unacked deliveries are requeued and
            # its consumers go; we do not wait for (or care about) the reply.
            try:
                rid = conn._send(None, "channel_close", {"ch": self.channel_number}, True)
                conn._ignored_replies[rid] = self.channel_number
            except exceptions.AMQPError:
                pass

    def close(self, reply_code=0, reply_text="Normal shutdown"):
        if self._closed:
            if self._closing_exc is not None:
                self._closing_exc = None
                return
            raise exceptions.ChannelWrongStateError("Channel is closed.")
        self._materialize()
        try:
            self._conn._call(self, "channel_close", {"ch": self.channel_number})
        finally:
            self._mark_closed(exceptions.ChannelClosedByClient(reply_code, reply_text))

    def __enter__(self):
        return self

    def __exit__(self, exc_type, value, traceback):
        if not self._closed:
            self.close()

    def add_on_close_callback(self, callback):
        self._close_callbacks.append(callback)

    def add_on_cancel_callback(self, callback):
        self._cancel_callbacks.append(callback)

    def add_on_return_callback(self, callback):
        """callback(channel, method, properties, body) for each mandatory message returned."""
        self._return_callbacks.append(callback)

    def _call(self, op, args):
        self._check()
        return self._conn._call(self, op, args)

    # ---- exchanges and queues ------------------------------------------------------------
    def exchange_declare(self, exchange, exchange_type=ExchangeType.direct, passive=False, durable=False,
                         auto_delete=False, internal=False, arguments=None):
        if isinstance(exchange_type, ExchangeType):
            exchange_type = exchange_type.value
        self._call("exchange_declare", {"ch": self.channel_number, "exchange": exchange, "type": exchange_type,
                                        "passive": passive, "durable": durable, "auto_delete": auto_delete,
                                        "internal": internal, "arguments": arguments or {}})
        return Method(self.channel_number, spec.Exchange.DeclareOk())

    def exchange_delete(self, exchange=None, if_unused=False):
        self._call("exchange_delete", {"ch": self.channel_number, "exchange": exchange or "",
                                       "if_unused": if_unused})
        return Method(self.channel_number, spec.Exchange.DeleteOk())

    def exchange_bind(self, destination, source, routing_key="", arguments=None):
        self._call("exchange_bind", {"ch": self.channel_number, "destination": destination, "source": source,
                                     "routing_key": routing_key, "arguments": arguments or {}})
        return Method(self.channel_number, spec.Exchange.BindOk())

    def exchange_unbind(self, destination=None, source=None, routing_key="", arguments=None):
        self._call("exchange_unbind", {"ch": self.channel_number, "destination": destination, "source": source,
                                       "routing_key": routing_key, "arguments": arguments or {}})
        return Method(self.channel_number, spec.Exchange.UnbindOk())

    def queue_declare(self, queue, passive=False, durable=False, exclusive=False, auto_delete=False,
                      arguments=None):
        result = self._call("queue_declare", {"ch": self.channel_number, "queue": queue, "passive": passive,
                                              "durable": durable, "exclusive": exclusive,
                                              "auto_delete": auto_delete, "arguments": arguments or {}})
        return Method(self.channel_number, spec.Queue.DeclareOk(
            result.get("queue", queue), result.get("message_count", 0), result.get("consumer_count", 0)))

    def queue_bind(self, queue, exchange, routing_key=None, arguments=None):
        if routing_key is None:
            routing_key = queue  # pika binds with the queue name when no key is given
        self._call("queue_bind", {"ch": self.channel_number, "queue": queue, "exchange": exchange,
                                  "routing_key": routing_key, "arguments": arguments or {}})
        return Method(self.channel_number, spec.Queue.BindOk())

    def queue_unbind(self, queue, exchange=None, routing_key=None, arguments=None):
        if routing_key is None:
            routing_key = queue
        self._call("queue_unbind", {"ch": self.channel_number, "queue": queue, "exchange": exchange or "",
                                    "routing_key": routing_key, "arguments": arguments or {}})
        return Method(self.channel_number, spec.Queue.UnbindOk())

    def queue_purge(self, queue):
        result = self._call("queue_purge", {"ch": self.channel_number, "queue": queue})
        return Method(self.channel_number, spec.Queue.PurgeOk((result or {}).get("message_count", 0)))

    def queue_delete(self, queue, if_unused=False, if_empty=False):
        result = self._call("queue_delete", {"ch": self.channel_number, "queue": queue,
                                             "if_unused": if_unused, "if_empty": if_empty})
        return Method(self.channel_number, spec.Queue.DeleteOk((result or {}).get("message_count", 0)))

    # ---- publishing ----------------------------------------------------------------------
    def confirm_delivery(self):
        """Turn on publisher confirms: from now on basic_publish waits for each message's confirm."""
        if self._core.confirming:
            return
        self._call("confirm_select", {"ch": self.channel_number})
        self._core.confirm_select()

    def basic_publish(self, exchange, routing_key, body, properties=None, mandatory=False):
        if self._closing_exc is not None or self._closed:
            self._check()
        if type(body) is str:
            body = body.encode("utf-8")
        elif body is None:
            body = b""
        if properties is None:
            props = None
        elif properties.__class__ is _BasicProperties:
            props = properties.__dict__.copy() or None  # BasicProperties.to_wire, inlined
        else:
            props = _wire_properties(properties)
        core = self._core
        if core.confirming:
            return self._publish_confirmed(exchange, routing_key, body, props, mandatory, properties)
        # No lock here (a `with` costs a fifth of this call): the flusher thread only takes
        # items from the head of the list, under the lock, and a list append is atomic; see
        # _materialize for the hand-over.
        buf = self._pub_buf
        buf.append((exchange, routing_key, body, props, mandatory))
        core.publish_bytes += len(body) + MESSAGE_OVERHEAD  # a batching heuristic: a lost update only resizes a batch
        now = _monotonic()
        n = len(buf)
        if n == 1:
            # The first of a batch: register the channel as holding output (before the
            # flush below, or the flusher's look), and note when its batch began.
            self._conn._dirty.add(self)
            self._buf_since = now
            if now - self._last_publish > SPARSE_PUBLISH_GAP:
                # A lone publish (none in the last millisecond) goes out at once, as pika's
                # would: a program that publishes now and then must not find its message
                # waiting. Only a loop publishing faster than that batches.
                self._last_publish = now
                self._conn._flush_output()
                return
            self._last_publish = now
            # The rest of a burst: the flusher writes it within flush_delay if the program
            # does not come back first (time.sleep, a wait on something else...).
            self._conn._output_buffered()
            return
        self._last_publish = now
        if n >= PUBLISH_BATCH_MESSAGES or core.publish_bytes >= PUBLISH_BATCH_BYTES:
            self._materialize()
            # A producer that never reads would not notice its channel being closed; a look
            # at what the server sent, without waiting, once per batch costs nothing.
            self._conn._poll_nowait()

    def _materialize(self):
        """Turn the held-back publishes and merged ack into frames in the connection's buffer."""
        with self._lock:
            frames = self._core.take_output()
            if frames:
                send = self._conn._send
                for op, args in frames:
                    send(self, op, args, False)
                if self._pub_buf:
                    # The program's thread appended while we took (basic_publish holds no
                    # lock); having seen the list non-empty it did not register the channel as
                    # holding output, so register it here.
                    self._conn._dirty.add(self)

    def _publish_confirmed(self, exchange, routing_key, body, props, mandatory, properties):
        """pika's BlockingChannel under confirms: the publish is sent at once and the call
        returns only when the confirm for its sequence number (ChannelState.track) came."""
        self._materialize()
        record = self._core.track(exchange, routing_key, mandatory)
        self._awaiting = record
        conn = self._conn
        try:
            conn._send(self, "publish", {"ch": self.channel_number, "exchange": exchange,
                                         "routing_key": routing_key, "body": body, "properties": props,
                                         "mandatory": mandatory}, False)
            while record.acked is None:
                if self._closing_exc is not None or self._closed:
                    self._check()
                conn._pump(None)
        finally:
            self._awaiting = None
        if self._closing_exc is not None:
            self._check()  # the server refused it outright (no such exchange...): that error, not a nack
        if not record.acked:
            raise exceptions.NackError([ReturnedMessage(None, properties, body)])
        if record.returned is not None:
            raise exceptions.UnroutableError([record.returned])

    def _on_return(self, returned):
        """A `return` push (a `channel_state.Returned`)."""
        method = spec.Basic.Return(returned.reply_code, returned.reply_text, returned.exchange,
                                   returned.routing_key)
        properties = _props_from_wire(returned.properties)
        if returned.record is not None:
            # Its publish is waiting for the confirm: it raises UnroutableError, as pika's does.
            returned.record.returned = ReturnedMessage(method, properties, returned.body)
        elif self._return_callbacks:
            self._conn._events.append((self._run_return_callbacks, (method, properties, returned.body)))

    def _run_return_callbacks(self, returned):
        if self._closed:
            return
        for callback in self._return_callbacks:
            callback(self, *returned)

    # ---- acknowledgements ----------------------------------------------------------------
    def basic_ack(self, delivery_tag=0, multiple=False):
        if self._closing_exc is not None or self._closed:
            self._check()
        core = self._core
        with self._lock:
            first = not core.ack_upto
            frames = core.ack(delivery_tag, multiple)
            if frames:
                self._send_frames(frames)
            elif first and core.ack_upto:
                # A merged ack is now held back: register the channel as holding output.
                if not self._pub_buf:
                    self._conn._dirty.add(self)
            else:
                first = False
        self._send_if_lone()
        if first and core.ack_upto:
            self._conn._output_buffered()

    def _send_if_lone(self):
        """Outside a consumer callback, a settlement with none in the previous millisecond
        goes out at once (a program acking after basic_get, or from the consume generator
        while it works slowly, must not leave the broker waiting for it); inside callbacks
        the flush after the batch sends them, merged."""
        if self._conn._dispatch_depth:
            return
        now = _monotonic()
        lone = now - self._last_settle > SPARSE_PUBLISH_GAP
        self._last_settle = now
        if lone:
            self._conn._flush_output()

    def basic_nack(self, delivery_tag=0, multiple=False, requeue=True):
        self._check()
        self._send_frames(self._core.nack(delivery_tag, multiple, requeue))
        self._send_if_lone()

    def basic_reject(self, delivery_tag=0, requeue=True):
        self._check()
        self._send_frames(self._core.reject(delivery_tag, requeue))
        self._send_if_lone()

    def _send_frames(self, frames):
        send = self._conn._send
        for op, args in frames:
            send(self, op, args, False)

    def basic_recover(self, requeue=False):
        """Give back every unacked delivery of this channel; they are redelivered (requeued:
        the broker, like RabbitMQ, does not support redelivering to the same consumer only)."""
        self._call("nack", {"ch": self.channel_number, "delivery_tag": 0, "multiple": True, "requeue": True})
        self._core.recovered()

    def basic_qos(self, prefetch_size=0, prefetch_count=0, global_qos=False):
        self._call("basic_qos", {"ch": self.channel_number, "prefetch_size": prefetch_size,
                                 "prefetch_count": prefetch_count, "global": global_qos})
        return Method(self.channel_number, spec.Basic.QosOk())

    # ---- getting -------------------------------------------------------------------------
    def basic_get(self, queue, auto_ack=False):
        """One message from `queue`: (Basic.GetOk, BasicProperties, body), or (None, None, None)."""
        result = self._call("get", {"ch": self.channel_number, "queue": queue, "no_ack": auto_ack})
        if not result:
            return None, None, None
        self._core.on_get(result["delivery_tag"], auto_ack)
        method = spec.Basic.GetOk(result["delivery_tag"], result.get("redelivered", False),
                                  result.get("exchange", ""), result.get("routing_key", ""),
                                  result.get("message_count", 0))
        return method, _props_from_wire(result.get("properties")), result.get("body", b"")

    # ---- consuming -----------------------------------------------------------------------
    def _new_tag(self) -> str:
        return f"ctag{self.channel_number}.{next(_tag_ids)}"

    def basic_consume(self, queue, on_message_callback, auto_ack=False, exclusive=False, consumer_tag=None,
                      arguments=None):
        """Start a consumer; `on_message_callback(channel, method, properties, body)` runs for
        each delivery from process_data_events / start_consuming. Returns the consumer tag."""
        self._check()
        if not callable(on_message_callback):
            raise ValueError("callback must be callable; got %r" % (on_message_callback,))
        return self._consume(queue, on_message_callback, auto_ack, exclusive, consumer_tag, arguments)

    def _consume(self, queue, on_message, auto_ack, exclusive, consumer_tag, arguments):
        if not consumer_tag:
            consumer_tag = self._new_tag()
        core = self._core
        # Registered before the request leaves: deliveries may follow the reply at once.
        if not core.add_consumer(consumer_tag, on_message, auto_ack):
            raise exceptions.DuplicateConsumerTag(consumer_tag)
        try:
            result = self._conn._call(self, "consume", {"ch": self.channel_number, "queue": queue,
                                                        "consumer_tag": consumer_tag, "no_ack": auto_ack,
                                                        "exclusive": exclusive, "arguments": arguments or {}})
        except BaseException:
            core.forget_consumer(consumer_tag)
            raise
        server_tag = (result or {}).get("consumer_tag") or consumer_tag
        core.rename_consumer(consumer_tag, server_tag)
        return server_tag

    def _dispatch_batch(self, batch):
        """Call consumers for one `deliver` push: [[tag, delivery_tag, redelivered, exchange, key, body, props], ...]."""
        consumers = self._consumers
        i = -1
        try:
            for i, d in enumerate(batch):
                if self._closed:
                    return  # closed under us: the server requeues what is left
                entry = consumers.get(d[0])
                if entry is None:
                    self._orphans(batch[i:i + 1])
                    continue
                if entry[1]:
                    self._settled(d[1])  # auto-ack: settled as it was sent
                props = d[6]
                # Without properties (the common case) an empty BasicProperties is just a new
                # object: no call to from_wire.
                entry[0](self, _Deliver(d[0], d[1], d[2], d[3], d[4]),
                         _props_from_wire(props) if props else _new_object(_BasicProperties), d[5])
        except BaseException:
            # A callback raised (the exception goes to the caller of start_consuming, as in
            # pika): the rest of the batch stays queued for the next dispatch.
            rest = batch[i + 1:]
            if rest:
                self._conn._events.appendleft((self._dispatch_batch, rest))
            raise

    def _orphans(self, deliveries):
        """Deliveries for a consumer that is gone: requeue those that wait for an ack."""
        for d in deliveries:
            if self._closed:
                return
            self._send_frames(self._core.orphaned(d))

    def _take_pending(self, consumer_tag) -> list:
        """Remove the deliveries for `consumer_tag` still waiting for dispatch; return them."""
        taken = []
        events = self._conn._events
        for index, (fn, batch) in enumerate(events):
            if getattr(fn, "__self__", None) is self and fn.__func__ is BlockingChannel._dispatch_batch:
                kept = [d for d in batch if d[0] != consumer_tag]
                if len(kept) != len(batch):
                    taken.extend(d for d in batch if d[0] == consumer_tag)
                    events[index] = (fn, kept)
        return taken

    def basic_cancel(self, consumer_tag):
        """Cancel a consumer. Returns the auto_ack messages received but not yet dispatched
        (as (method, properties, body)); unacked ones not yet dispatched are requeued."""
        if self._closed and self._closing_exc is None:
            return []
        self._check()
        entry = self._core.remove_consumer(consumer_tag)
        if entry is None:
            return []
        auto_ack = entry[1]
        self._conn._call(self, "cancel", {"ch": self.channel_number, "consumer_tag": consumer_tag})
        pending = self._take_pending(consumer_tag)
        if auto_ack:
            for d in pending:
                self._settled(d[1])
            return [(_Deliver(d[0], d[1], d[2], d[3], d[4]), _props_from_wire(d[6]), d[5]) for d in pending]
        self._orphans(pending)
        return []

    def start_consuming(self):
        """Process I/O and dispatch consumer callbacks until every consumer is cancelled."""
        conn = self._conn
        if conn._dispatch_depth:
            raise exceptions.ReentrancyError(
                "start_consuming may not be called from the scope of another BlockingConnection or BlockingChannel callback")
        self._check()
        conn._dispatch()  # deliveries that came while we were busy elsewhere
        while self._consumers and not self._closed:
            conn.process_data_events(None)
        self._check_after_consuming()

    def _check_after_consuming(self):
        if self._closing_exc is not None:
            exc, self._closing_exc = self._closing_exc, None
            raise exc

    def stop_consuming(self, consumer_tag=None):
        """Cancel every consumer (or one) so start_consuming returns."""
        if self._closed:
            return
        tags = [consumer_tag] if consumer_tag else list(self._consumers)
        for tag in tags:
            if self._generator is not None and tag == self._generator.consumer_tag:
                self.cancel()
            else:
                self.basic_cancel(tag)

    def _on_broker_cancel(self, consumer_tag):
        """The broker cancelled a consumer (ChannelState.receive took it off the registry)."""
        self._conn._state_changed = True
        if self._generator is not None and self._generator.consumer_tag == consumer_tag:
            self._generator.cancelled_by_broker = True
        for callback in self._cancel_callbacks:
            self._conn._events.append((lambda _, cb=callback: cb(Method(self.channel_number,
                                                                         spec.Basic.Cancel(consumer_tag))), None))

    def consume(self, queue, auto_ack=False, exclusive=False, arguments=None, inactivity_timeout=None):
        """A generator of (method, properties, body); (None, None, None) after `inactivity_timeout`
        seconds without a message. Leave the loop and call `cancel()` to stop."""
        self._check()
        params = (queue, auto_ack, exclusive)
        if self._generator is not None:
            if self._generator.params != params:
                raise ValueError(f"Consume with different params not allowed on existing queue consumer "
                                 f"generator; previous params: {self._generator.params!r}; new params: {params!r}")
        else:
            tag = self._new_tag()
            generator = _QueueConsumerGenerator(params, tag)
            generator.cancelled_by_broker = False
            self._generator = generator
            try:
                self._consume(queue, generator.deliver, auto_ack, exclusive, tag, arguments)
            except BaseException:
                self._generator = None
                raise
        generator = self._generator
        pending = generator.pending
        conn = self._conn
        while self._generator is generator:
            if pending:
                yield pending.popleft()
                continue
            if generator.cancelled_by_broker or self._closed:
                self._check_after_consuming()
                return
            if inactivity_timeout is None:
                conn.process_data_events(None)
                continue
            deadline = time.monotonic() + inactivity_timeout
            while not pending and self._generator is generator and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                conn.process_data_events(remaining)
            if not pending and self._generator is generator and not self._closed:
                yield None, None, None
        self._check_after_consuming()

    def get_waiting_message_count(self) -> int:
        return len(self._generator.pending) if self._generator is not None else 0

    def cancel(self) -> int:
        """Cancel the `consume` generator's consumer; requeue what it held. Returns how many."""
        generator = self._generator
        if generator is None:
            return 0
        self._generator = None
        auto_ack = generator.params[1]
        if self._closed:
            return 0
        if generator.consumer_tag in self._consumers:
            self.basic_cancel(generator.consumer_tag)
        pending = list(generator.pending)
        generator.pending.clear()
        if auto_ack:
            return 0
        for method, _, _ in pending:
            self._send_frames(self._core.nack(method.delivery_tag, False, True))
        return len(pending)

    def __repr__(self):
        return f"<BlockingChannel number={self.channel_number} {'CLOSED' if self._closed else 'OPEN'} conn={self._conn!r}>"
