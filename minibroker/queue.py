"""A queue: its ready messages, its consumers, and the rules applied as messages come and go.

`MessageQueue` holds
- the ready messages (`ready_list.FifoReadyList`, or `PriorityReadyList` under `x-max-priority`),
- the count of its messages delivered and not yet settled (the messages themselves are in the
  channels' unacked maps, `channel.Channel.unacked`),
- its consumers, served round-robin (or only the first, under `x-single-active-consumer`),
- the settings parsed from its arguments (`QueueSettings`: TTL, expiry, length limits, overflow
  mode, dead-letter target, delivery limit), with their defaults in one place.

`publish` applies TTL and the length limits on the way in; `drain` hands ready messages to
consumers that have credit, many at once, skipping (and dead-lettering) expired ones;
`return_messages` puts delivered messages back at their original place, counting deliveries
against `x-delivery-limit`; `expire` is the periodic TTL sweep. What "dead-lettering" does is in
dead_letter.py; delivery tags, prefetch windows and the wire are the channel's business.
"""

import secrets

from clients.protocol.errors import BrokerError, ErrorCode

from .exchanges.base import freeze
from .ready_list import FifoReadyList, PriorityReadyList

OVERFLOW_MODES = ("drop-head", "reject-publish", "reject-publish-dlx")
DRAIN_LIMIT = 4096        # deliveries one queue makes in one loop turn, so no queue hogs the loop
DRAIN_BYTES = 4 << 20     # nor more body bytes than this (a no-ack consumer of big messages)
PER_MESSAGE_SWEEP_INTERVAL = 1.0   # full scans for per-message TTL, at most this often (seconds)


def server_named_queue() -> str:
    return "amq.gen-" + secrets.token_urlsafe(16)


class QueueSettings:
    """The queue arguments the broker acts on, validated. Unknown x- arguments are kept, unused."""

    __slots__ = ("message_ttl", "expires", "max_length", "max_length_bytes", "overflow",
                 "dead_letter_exchange", "dead_letter_routing_key", "max_priority",
                 "delivery_limit", "single_active_consumer")

    def __init__(self, arguments: dict):
        self.message_ttl = _int_arg(arguments, "x-message-ttl", 0)            # ms
        self.expires = _int_arg(arguments, "x-expires", 1)                    # ms
        self.max_length = _int_arg(arguments, "x-max-length", 0)
        self.max_length_bytes = _int_arg(arguments, "x-max-length-bytes", 0)
        self.overflow = arguments.get("x-overflow", "drop-head")
        if self.overflow not in OVERFLOW_MODES:
            raise _invalid("x-overflow", self.overflow, f"one of {', '.join(OVERFLOW_MODES)}")
        self.dead_letter_exchange = _str_arg(arguments, "x-dead-letter-exchange")
        self.dead_letter_routing_key = _str_arg(arguments, "x-dead-letter-routing-key")
        if self.dead_letter_routing_key is not None and self.dead_letter_exchange is None:
            raise BrokerError(ErrorCode.PRECONDITION_FAILED,
                              "x-dead-letter-routing-key needs x-dead-letter-exchange as well")
        self.max_priority = _int_arg(arguments, "x-max-priority", 0)
        if self.max_priority is not None and not 1 <= self.max_priority <= 255:
            raise _invalid("x-max-priority", self.max_priority, "an integer 1-255")
        self.delivery_limit = _int_arg(arguments, "x-delivery-limit", 0)
        sac = arguments.get("x-single-active-consumer", False)
        if type(sac) is not bool:
            raise _invalid("x-single-active-consumer", sac, "a boolean")
        self.single_active_consumer = sac


def _invalid(name, value, what):
    return BrokerError(ErrorCode.PRECONDITION_FAILED, f"invalid queue argument {name!r}: {value!r}; it must be {what}")


def _int_arg(arguments, name, minimum):
    value = arguments.get(name)
    if value is None:
        return None
    if type(value) is not int or value < minimum:
        raise _invalid(name, value, f"an integer >= {minimum}")
    return value


def _str_arg(arguments, name):
    value = arguments.get(name)
    if value is not None and type(value) is not str:
        raise _invalid(name, value, "a string")
    return value


class MessageQueue:
    is_queue = True

    def __init__(self, broker, name: str, durable: bool, exclusive_owner, auto_delete: bool,
                 arguments: dict, now: float):
        self.broker = broker
        self.name = name
        self.durable = durable
        self.exclusive_owner = exclusive_owner   # the Session that declared it exclusive, or None
        self.auto_delete = auto_delete
        self.arguments = arguments
        s = self.settings = QueueSettings(arguments)
        self.ready = PriorityReadyList(s.max_priority) if s.max_priority else FifoReadyList()
        self.ready_bytes = 0
        self.unacked = 0
        self.consumers: list = []
        self.bound_to: set = set()                # exchanges holding a binding to this queue
        self.deleted = False
        self.scheduled = False                    # waiting in the broker's list of queues to drain
        self.had_consumer = False
        self.last_used = now
        self.ttl = s.message_ttl / 1000.0 if s.message_ttl is not None else None
        self.expires = s.expires / 1000.0 if s.expires is not None else None
        self.has_message_expiry = False           # some message carries its own expiration
        self._last_full_sweep = now
        self._next_position = 1
        self._rr = 0
        # One flag keeps the common case (no limits) to two comparisons on publish.
        self.limited = s.max_length is not None or s.max_length_bytes is not None
        # `fast`: a transient message enters with no TTL or limit to apply (Broker.publish_batch inlines it).
        self.fast = self.ttl is None and not self.limited and not broker.tracers   # see Broker.set_tracing
        self.dead_letter_exchange = s.dead_letter_exchange
        # Counters for `minibroker list queues` and the metrics (minibroker/introspect.py):
        # plain int increments on the paths they count, deliveries once per drain.
        self.n_published = self.n_delivered = self.n_acked = self.n_redelivered = 0

    @property
    def counts(self) -> tuple:
        return self.n_published, self.n_delivered, self.n_acked, self.n_redelivered

    # ---- declaration -------------------------------------------------------------------------------
    def settings_key(self) -> tuple:
        return (self.durable, self.exclusive_owner is not None, self.auto_delete, freeze(self.arguments))

    def message_count(self) -> int:
        return len(self.ready)

    def consumer_count(self) -> int:
        return len(self.consumers)

    def describe(self) -> dict:
        return {"name": self.name, "durable": self.durable, "exclusive": self.exclusive_owner is not None,
                "auto_delete": self.auto_delete, "arguments": self.arguments,
                "messages_ready": len(self.ready), "messages_unacknowledged": self.unacked,
                "message_bytes_ready": self.ready_bytes, "consumers": len(self.consumers)}

    # ---- messages in -------------------------------------------------------------------------------
    def publish(self, msg, now: float) -> bool:
        """Take a routed message; False when the queue refuses it (reject-publish overflow)."""
        self.n_published += 1
        msg.queue = self
        msg.position = self._next_position
        self._next_position += 1
        if self.ttl is not None:
            expires = now + self.ttl
            if not msg.expires_at or expires < msg.expires_at:
                msg.expires_at = expires
        elif msg.expires_at:
            self.has_message_expiry = True
            self.broker.watch_expiry(self)
        if self.limited and not self._make_room(msg):
            return False
        if self.durable and msg.persistent:
            self.broker.store_enqueue(self, msg)
            store_id = msg.store_id
            if type(store_id) is int and store_id >= msg.position:
                # Positions only need to grow within the queue: reuse the store's id (already
                # an int object per message) instead of keeping a second one.
                msg.position = store_id
                self._next_position = store_id + 1
        self.ready.append(msg)
        self.ready_bytes += msg.size
        if self.consumers and not self.scheduled:
            self.broker.schedule_drain(self)
        return True

    def _make_room(self, msg) -> bool:
        s = self.settings
        max_len, max_bytes = s.max_length, s.max_length_bytes
        ready = self.ready

        def over():
            return ((max_len is not None and len(ready) + 1 > max_len)
                    or (max_bytes is not None and self.ready_bytes + msg.size > max_bytes))

        if not over():
            return True
        if s.overflow == "drop-head":
            dropped = []
            while ready and over():
                head = ready.popleft()
                self.ready_bytes -= head.size
                dropped.append(head)
            if dropped:
                self.discard(dropped, "maxlen")
            if over():   # the message alone does not fit (max length 0, or a body over the byte limit)
                self.discard([msg], "maxlen")
                return False
            return True
        if s.overflow == "reject-publish-dlx":
            self.discard([msg], "maxlen")
        return False

    # ---- messages out ------------------------------------------------------------------------------
    def drain(self, now: float) -> None:
        """Deliver ready messages to consumers with credit, up to DRAIN_LIMIT this turn."""
        self.scheduled = False
        ready = self.ready
        consumers = self.consumers
        if not ready or not consumers:
            return
        if self.settings.single_active_consumer:
            consumers = consumers[:1]
        expiring = self.ttl is not None or self.has_message_expiry
        budget = DRAIN_LIMIT
        before = len(ready)
        expired = None
        if len(consumers) == 1:
            consumer = consumers[0]
            credit = consumer.credit()
            if credit > budget:
                credit = budget
            channel = consumer.channel
            sent = 0
            if consumer.no_ack:
                deliver = channel.deliver
                floor = self.ready_bytes - DRAIN_BYTES
                while sent < credit and ready and self.ready_bytes > floor:
                    msg = ready.popleft()
                    self.ready_bytes -= msg.size
                    if expiring and msg.expires_at and msg.expires_at <= now:
                        if expired is None:
                            expired = []
                        expired.append(msg)
                        continue
                    deliver(consumer, msg)
                    sent += 1
            elif credit > 0:
                # The hot path, Channel.deliver inlined: tag, unacked map, outbox entry.
                popleft = ready.popleft
                unacked = channel.unacked
                append = channel.outbox.append
                ctag = consumer.tag
                tag = channel.next_tag
                ready_bytes = self.ready_bytes
                floor = ready_bytes - DRAIN_BYTES
                stored = stored_bytes = 0
                while sent < credit and ready and ready_bytes > floor:
                    msg = popleft()
                    ready_bytes -= msg.size
                    if expiring and msg.expires_at and msg.expires_at <= now:
                        if expired is None:
                            expired = []
                        expired.append(msg)
                        continue
                    if msg.store_id is not None:
                        # A stored message takes the full path: the store hears of the delivery
                        # and may have to supply the body (Channel.deliver counts it itself).
                        channel.next_tag = tag
                        channel.deliver(consumer, msg)
                        tag += 1
                        sent += 1
                        stored += 1
                        stored_bytes += msg.size
                        continue
                    msg.tag = tag
                    msg.consumer = consumer
                    unacked[tag] = msg
                    append([ctag, tag, msg.redelivered, msg.exchange, msg.routing_key, msg.body, msg.properties])
                    tag += 1
                    sent += 1
                channel.outbox_bytes += self.ready_bytes - ready_bytes - stored_bytes
                self.ready_bytes = ready_bytes
                channel.next_tag = tag
                consumer.unacked += sent - stored
                self.unacked += sent - stored
                if sent and not channel.dirty:
                    channel.dirty = True
                    self.broker.channel_dirty(channel)
            budget -= sent
            if sent < credit and ready:
                budget = 0          # the loop stopped at the byte budget: more next turn
        else:
            n = len(consumers)
            rr = self._rr % n
            floor = self.ready_bytes - DRAIN_BYTES
            while ready and budget > 0:
                if self.ready_bytes <= floor:
                    budget = 0
                    break
                for k in range(n):
                    consumer = consumers[(rr + k) % n]
                    if consumer.credit() > 0:
                        break
                else:
                    break
                msg = ready.popleft()
                self.ready_bytes -= msg.size
                if expiring and msg.expires_at and msg.expires_at <= now:
                    if expired is None:
                        expired = []
                    expired.append(msg)
                    continue
                consumer.channel.deliver(consumer, msg)
                budget -= 1
                rr = (rr + k + 1) % n
            self._rr = rr
        self.n_delivered += before - len(ready) - (len(expired) if expired else 0)
        if expired:
            self.discard(expired, "expired")
        if budget <= 0 and ready:
            self.broker.schedule_drain(self)   # more next turn, after other queues had theirs

    def get(self, now: float):
        """Take the next live message for a basic.get, or None."""
        self.last_used = now
        ready = self.ready
        expired = []
        msg = None
        while ready:
            candidate = ready.popleft()
            self.ready_bytes -= candidate.size
            if candidate.expires_at and candidate.expires_at <= now:
                expired.append(candidate)
                continue
            msg = candidate
            break
        if expired:
            self.discard(expired, "expired")
        if msg is not None:
            self.n_delivered += 1
        return msg

    # ---- settling ----------------------------------------------------------------------------------
    def settled(self, msg) -> None:
        """A delivered message was acked (or delivered with no-ack): it is gone for good."""
        if msg.store_id is not None:
            self.broker.store.settle(self, msg)

    def return_messages(self, msgs: list) -> None:
        """Delivered messages come back (nack/reject with requeue, channel closed): requeue them.

        Each return counts as a delivery attempt; under `x-delivery-limit` a message returned
        more often than the limit is dead-lettered (reason `delivery_limit`) instead, and the
        others carry the count so far in the `x-delivery-count` header.
        """
        if self.deleted:
            for m in msgs:
                self.settled(m)
            return
        limit = self.settings.delivery_limit
        back, over = [], []
        for m in msgs:
            m.delivery_count += 1
            m.redelivered = True
            m.consumer = None
            if limit is not None and m.delivery_count > limit:
                over.append(m)
            else:
                if limit is not None:
                    # As RabbitMQ's quorum queues do, tell the consumer how often it came back.
                    properties = dict(m.properties) if m.properties else {}
                    headers = dict(properties.get("headers") or {})
                    headers["x-delivery-count"] = m.delivery_count
                    properties["headers"] = headers
                    m.properties = properties
                back.append(m)
        if back:
            self.n_redelivered += len(back)
            self.ready.requeue(back)
            for m in back:
                self.ready_bytes += m.size
            if self.consumers and not self.scheduled:
                self.broker.schedule_drain(self)
        if over:
            self.discard(over, "delivery_limit")

    def discard(self, msgs: list, reason: str) -> None:
        """Messages leave the queue unconsumed (rejected, expired, overflow): dead-letter or drop."""
        stats = self.broker.stats
        stats["discarded"] += len(msgs)
        if self.dead_letter_exchange is not None and not self.deleted:
            stats["dead_lettered"] += len(msgs)
            self.broker.dead_letter(self, msgs, reason)
        for m in msgs:
            self.settled(m)

    # ---- time --------------------------------------------------------------------------------------
    def expire(self, now: float) -> None:
        """Periodic sweep: drop (dead-letter) expired ready messages so counts stay true."""
        ready = self.ready
        expired = []
        fifo = type(ready) is FifoReadyList
        if self.ttl is not None and fifo:
            # With one TTL for all, positions order expiry: stop at the first live head.
            while ready and ready[0].expires_at and ready[0].expires_at <= now:
                m = ready.popleft()
                self.ready_bytes -= m.size
                expired.append(m)
        if self.has_message_expiry or (self.ttl is not None and not fifo):
            # Expiry order is not queue order here: scan, but rarely once the queue is long.
            if len(ready) <= 10000 or now - self._last_full_sweep >= PER_MESSAGE_SWEEP_INTERVAL:
                self._last_full_sweep = now
                gone = ready.remove_if(lambda m: m.expires_at and m.expires_at <= now)
                for m in gone:
                    self.ready_bytes -= m.size
                expired.extend(gone)
        if expired:
            self.discard(expired, "expired")

    def unused_for(self, now: float) -> float:
        return now - self.last_used if not self.consumers else 0.0

    # ---- consumers ---------------------------------------------------------------------------------
    def add_consumer(self, consumer, now: float) -> None:
        if consumer.exclusive and self.consumers:
            raise BrokerError(ErrorCode.RESOURCE_LOCKED,
                              f"queue '{self.name}' already has consumers; an exclusive consumer must be the only one")
        if self.consumers and self.consumers[0].exclusive:
            raise BrokerError(ErrorCode.RESOURCE_LOCKED,
                              f"queue '{self.name}' has an exclusive consumer ({self.consumers[0].tag!r})")
        self.consumers.append(consumer)
        self.had_consumer = True
        self.last_used = now
        if self.ready and not self.scheduled:
            self.broker.schedule_drain(self)

    def remove_consumer(self, consumer, now: float) -> None:
        try:
            self.consumers.remove(consumer)
        except ValueError:
            return
        self.last_used = now
        if self.ready and self.consumers and not self.scheduled:
            self.broker.schedule_drain(self)   # a single-active-consumer successor, or others' turn

    def purge(self) -> int:
        msgs = self.ready.drain_all()
        self.ready_bytes = 0
        for m in msgs:
            self.settled(m)
        return len(msgs)

    def __repr__(self):
        return f"<MessageQueue {self.name!r} ready={len(self.ready)} unacked={self.unacked}>"
