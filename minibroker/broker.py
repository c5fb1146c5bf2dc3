"""The broker core: one virtual host's exchanges, queues and bindings, and the publish path.

`Broker` knows nothing of the network. A front end opens a `Session` per client connection
(`open_session`), calls the declare/bind/delete methods and the channel operations, and gives
the broker a `schedule(callback)` function (the event loop's `call_soon`). The broker uses it to
run `run_turn` once per loop turn in which anything happened: the queues that received messages
or regained consumer credit deliver (`MessageQueue.drain`), then each channel's deliveries go to
its connection as one batch and its publisher confirms are coalesced and sent, after the store
says the turn's persistent messages are durable (`Store.when_durable`). Batching per turn is
what makes the hot path cheap: one push frame and one confirm per channel per turn, however
many messages.

Routing (`route`) asks the exchange for destinations and follows exchange-to-exchange bindings.
Exchange types are in exchanges/, queue behaviour in queue.py, acks in channel.py, dead-lettering
in dead_letter.py, the store seam in store_interface.py.
"""

import logging
import time

from clients.protocol.errors import BrokerError, ErrorCode

from . import dead_letter as dead_letter_module
from . import trace
from .exchanges import EXCHANGE_TYPES, DefaultExchange
from .exchanges.headers import HeadersExchange
from .exchanges.base import freeze
from serverbase.schema import NAME_MAX_BYTES, utf8_len

from .message import Message, check_properties
from .queue import MessageQueue, server_named_queue
from .session import Session
from .store_interface import TransientStore

PREDECLARED = {"amq.direct": "direct", "amq.fanout": "fanout", "amq.topic": "topic",
               "amq.headers": "headers", "amq.match": "headers"}
log = logging.getLogger("minibroker.broker")
NO_ROUTE = 312
NO_ROUTE_TEXT = "NO_ROUTE"


def _not_found(what: str) -> BrokerError:
    return BrokerError(ErrorCode.NOT_FOUND, what)


class Broker:
    def __init__(self, store=None, schedule=None, clock=time.monotonic):
        self.store = store if store is not None else TransientStore()
        self._schedule = schedule         # None: the caller runs run_turn itself (benchmarks, tests)
        self.clock = clock
        self.queues: dict[str, MessageQueue] = {}
        self.exchanges: dict = {"": DefaultExchange(self.queues)}
        for name, type_name in PREDECLARED.items():
            self.exchanges[name] = EXCHANGE_TYPES[type_name](name, durable=True)
        self._to_drain: list = []
        self._dirty_channels: list = []
        self._turn_scheduled = False
        self._expiring: set = set()        # queues that hold messages with a TTL
        self._session_ids = 0
        # Server-wide counters (the `stats` op, /metrics); per-queue ones are on MessageQueue.
        self.stats = {"published": 0, "delivered_batches": 0, "returned": 0, "discarded": 0, "dead_lettered": 0}
        self.retired_counts = [0, 0, 0, 0]   # MessageQueue.counts of deleted queues
        self.tracers: list = []              # minibroker/trace.py: callbacks of `minibroker trace`

    # ---- sessions -----------------------------------------------------------------------------------
    def open_session(self, sink, session_id=None) -> Session:
        self._session_ids += 1
        return Session(self, sink, session_id if session_id is not None else self._session_ids)

    # ---- turns ------------------------------------------------------------------------------------
    def _want_turn(self):
        if not self._turn_scheduled and self._schedule is not None:
            self._turn_scheduled = True
            self._schedule(self.run_turn)

    def schedule_drain(self, queue) -> None:
        queue.scheduled = True
        self._to_drain.append(queue)
        self._want_turn()

    def channel_dirty(self, channel) -> None:
        self._dirty_channels.append(channel)
        self._want_turn()

    def run_turn(self) -> None:
        """Deliver what can be delivered, then send each channel's deliveries and confirms."""
        self._turn_scheduled = False
        now = self.clock()
        to_drain, self._to_drain = self._to_drain, []
        for q in to_drain:
            if q.scheduled and not q.deleted:
                q.drain(now)
        channels, self._dirty_channels = self._dirty_channels, []
        self.store.deliveries_leaving()
        confirms = []
        for ch in channels:
            ch.dirty = False
            if ch.closed:
                continue
            if ch.outbox:
                entries, nbytes = ch.take_deliveries()
                if self.tracers:
                    trace.delivered(self, ch, entries)
                too_large = ch.session.sink.deliver(ch.number, entries, nbytes)
                if too_large:
                    for tag in too_large:
                        if tag in ch.unacked:
                            ch.nack(tag, False, False, "reject")
            if ch.confirm_mode and ch.publish_seq > ch.confirmed_upto:
                confirms.append((ch, ch.take_confirms()))
        if confirms:
            self.store.when_durable(lambda failure=None: self._send_confirms(confirms, failure))
        if self._to_drain:
            self._want_turn()

    @staticmethod
    def _send_confirms(confirms, failure=None) -> None:
        """Send the turn's confirms; if the store could not make them durable (`failure`, a
        sentence), nack them all instead and tell each channel why with a STORAGE_ERROR."""
        for ch, pushes in confirms:
            if ch.closed:
                continue
            sink = ch.session.sink
            if failure is not None:
                for _ack, seq, multiple in pushes:
                    sink.confirm(ch.number, False, seq, multiple)
                sink.error(ErrorCode.STORAGE_ERROR, f"channel {ch.number}: {failure}", ch.number)
                continue
            for ack, seq, multiple in pushes:
                sink.confirm(ch.number, ack, seq, multiple)

    # ---- the store --------------------------------------------------------------------------------
    def store_enqueue(self, queue, msg) -> None:
        self.store.enqueue(queue, msg)

    def watch_expiry(self, queue) -> None:
        self._expiring.add(queue)

    # ---- exchanges --------------------------------------------------------------------------------
    def declare_exchange(self, name: str, type_name: str, durable=False, auto_delete=False,
                         internal=False, arguments=None, passive=False):
        arguments = arguments or {}
        existing = self.exchanges.get(name)
        if passive:
            if existing is None:
                raise _not_found(f"no exchange '{name}' (passive declare)")
            return existing
        if name == "":
            raise BrokerError(ErrorCode.PRECONDITION_FAILED, "the default exchange '' cannot be declared")
        if type_name not in EXCHANGE_TYPES:
            raise BrokerError(ErrorCode.BAD_REQUEST,
                              f"unknown exchange type {type_name!r}; use one of {', '.join(EXCHANGE_TYPES)}")
        if existing is not None:
            wanted = (type_name, bool(durable), bool(auto_delete), bool(internal), freeze(arguments))
            if wanted != existing.settings():
                raise BrokerError(ErrorCode.PRECONDITION_FAILED, _diff_message(
                    f"exchange '{name}'", existing.settings(), wanted,
                    ("type", "durable", "auto_delete", "internal", "arguments")))
            return existing
        if name.startswith("amq."):
            raise BrokerError(ErrorCode.PRECONDITION_FAILED,
                              f"exchange names starting with 'amq.' are reserved; '{name}' cannot be declared")
        exchange = EXCHANGE_TYPES[type_name](name, bool(durable), bool(auto_delete), bool(internal), arguments)
        if exchange.durable:
            # Saved first: a declare the store refuses changes nothing here either.
            self.store.exchange_declared(exchange)
        self.exchanges[name] = exchange
        return exchange

    def get_exchange(self, name: str):
        exchange = self.exchanges.get(name)
        if exchange is None:
            raise _not_found(f"no exchange '{name}'")
        return exchange

    def delete_exchange(self, name: str, if_unused=False) -> None:
        if name == "" or name in PREDECLARED:
            raise BrokerError(ErrorCode.PRECONDITION_FAILED, f"exchange '{name}' is built in and cannot be deleted")
        exchange = self.get_exchange(name)
        if if_unused and exchange.bindings:
            raise BrokerError(ErrorCode.PRECONDITION_FAILED,
                              f"exchange '{name}' has {len(exchange.bindings)} binding(s) (if_unused was set)")
        self._delete_exchange_object(exchange)

    def _delete_exchange_object(self, exchange) -> None:
        if exchange.deleted:
            return
        exchange.deleted = True
        self.exchanges.pop(exchange.name, None)
        for b in list(exchange.bindings.values()):
            exchange.unbind(b.destination, b.routing_key, b.arguments)
            if b.destination.is_queue:
                b.destination.bound_to.discard(exchange)
        # bindings where this exchange is the destination
        for other in list(self.exchanges.values()):
            if other is not exchange and other.bindings:
                if other.unbind_destination(exchange):
                    self._maybe_auto_delete_exchange(other)
        if exchange.durable:
            self.store.exchange_deleted(exchange)
        log.log(logging.DEBUG if exchange.auto_delete else logging.INFO, "deleted exchange %r", exchange.name)

    def _maybe_auto_delete_exchange(self, exchange) -> None:
        if exchange.auto_delete and not exchange.bindings and exchange.name not in PREDECLARED:
            self._delete_exchange_object(exchange)

    # ---- bindings ---------------------------------------------------------------------------------
    def _bindable_source(self, name: str):
        if name == "":
            raise BrokerError(ErrorCode.PRECONDITION_FAILED,
                              "the default exchange '' cannot be bound to or unbound from; every queue is bound to it by name")
        return self.get_exchange(name)

    def bind_queue(self, session, queue_name, exchange_name, routing_key="", arguments=None) -> None:
        queue = self.get_queue(queue_name, session)
        exchange = self._bindable_source(exchange_name)
        _check_binding_arguments(exchange, arguments)
        if exchange.bind(queue, routing_key, arguments):
            if queue.durable and exchange.durable:
                try:
                    self.store.bound(exchange, queue, routing_key, arguments or {})
                except BaseException:
                    exchange.unbind(queue, routing_key, arguments)   # not saved: not in effect
                    raise
            queue.bound_to.add(exchange)

    def unbind_queue(self, session, queue_name, exchange_name, routing_key="", arguments=None) -> None:
        queue = self.get_queue(queue_name, session)
        exchange = self._bindable_source(exchange_name)
        if exchange.unbind(queue, routing_key, arguments):
            if not any(b.destination is queue for b in exchange.bindings.values()):
                queue.bound_to.discard(exchange)
            if queue.durable and exchange.durable:
                self.store.unbound(exchange, queue, routing_key, arguments or {})
            self._maybe_auto_delete_exchange(exchange)

    def bind_exchange(self, destination, source, routing_key="", arguments=None) -> None:
        dest = self._bindable_source(destination)
        src = self._bindable_source(source)
        _check_binding_arguments(src, arguments)
        if src.bind(dest, routing_key, arguments) and src.durable and dest.durable:
            try:
                self.store.bound(src, dest, routing_key, arguments or {})
            except BaseException:
                src.unbind(dest, routing_key, arguments)   # not saved: not in effect
                raise

    def unbind_exchange(self, destination, source, routing_key="", arguments=None) -> None:
        dest = self._bindable_source(destination)
        src = self._bindable_source(source)
        if src.unbind(dest, routing_key, arguments):
            if src.durable and dest.durable:
                self.store.unbound(src, dest, routing_key, arguments or {})
            self._maybe_auto_delete_exchange(src)

    # ---- queues -----------------------------------------------------------------------------------
    def get_queue(self, name: str, session=None) -> MessageQueue:
        queue = self.queues.get(name)
        if queue is None:
            raise _not_found(f"no queue '{name}'")
        if queue.exclusive_owner is not None and session is not None and queue.exclusive_owner is not session:
            raise BrokerError(ErrorCode.RESOURCE_LOCKED,
                              f"queue '{name}' is exclusive to another connection; only that connection may use it")
        return queue

    def declare_queue(self, session, name="", passive=False, durable=False, exclusive=False,
                      auto_delete=False, arguments=None) -> MessageQueue:
        arguments = arguments or {}
        now = self.clock()
        if passive:
            # A passive declare only looks: it does not renew an x-expires lease.
            return self.get_queue(name, session)
        server_named = not name
        if server_named:
            name = server_named_queue()
        existing = self.queues.get(name)
        if existing is not None:
            self.get_queue(name, session)   # RESOURCE_LOCKED for another connection's exclusive queue
            wanted = (bool(durable), bool(exclusive), bool(auto_delete), freeze(arguments))
            if wanted != existing.settings_key():
                raise BrokerError(ErrorCode.PRECONDITION_FAILED, _diff_message(
                    f"queue '{name}'", existing.settings_key(), wanted,
                    ("durable", "exclusive", "auto_delete", "arguments")))
            existing.last_used = now
            return existing
        if name.startswith("amq.") and not server_named:
            raise BrokerError(ErrorCode.PRECONDITION_FAILED,
                              f"queue names starting with 'amq.' are reserved; '{name}' cannot be declared "
                              f"(declare the name \"\" to get a server-named queue)")
        queue = MessageQueue(self, name, bool(durable), session if exclusive else None, bool(auto_delete),
                             arguments, now)
        if queue.durable:
            # Saved first: a declare the store refuses changes nothing here either.
            self.store.queue_declared(queue)
        self.queues[name] = queue
        if exclusive:
            session.exclusive_queues.add(queue)
        if queue.ttl is not None or queue.expires is not None:
            self._expiring.add(queue)
        return queue

    def purge_queue(self, session, name: str) -> int:
        return self.get_queue(name, session).purge()

    def delete_queue(self, session, name: str, if_unused=False, if_empty=False) -> int:
        queue = self.get_queue(name, session)
        if if_unused and queue.consumers:
            raise BrokerError(ErrorCode.PRECONDITION_FAILED,
                              f"queue '{name}' has {len(queue.consumers)} consumer(s) (if_unused was set)")
        if if_empty and queue.ready:
            raise BrokerError(ErrorCode.PRECONDITION_FAILED,
                              f"queue '{name}' has {len(queue.ready)} message(s) (if_empty was set)")
        return self.delete_queue_object(queue)

    def delete_queue_object(self, queue) -> int:
        """Delete a queue: cancel its consumers (telling their clients), unbind it, drop its messages."""
        if queue.deleted:
            return 0
        count = len(queue.ready)
        queue.deleted = True
        self.queues.pop(queue.name, None)
        self._expiring.discard(queue)
        for consumer in list(queue.consumers):
            ch = consumer.channel
            if ch.consumers.pop(consumer.tag, None) is not None and not ch.closed:
                ch.session.sink.cancel(ch.number, consumer.tag)
        queue.consumers.clear()
        for exchange in list(queue.bound_to):
            exchange.unbind_destination(queue)
            self._maybe_auto_delete_exchange(exchange)
        queue.bound_to.clear()
        for m in queue.ready.drain_all():
            queue.settled(m)
        queue.ready_bytes = 0
        if queue.exclusive_owner is not None:
            queue.exclusive_owner.exclusive_queues.discard(queue)
        if queue.durable:
            self.store.queue_deleted(queue)
        # The server-wide totals keep what a deleted queue counted.
        self.retired_counts = [a + b for a, b in zip(self.retired_counts, queue.counts)]
        # Exclusive and auto-delete queues come and go with their clients: only at DEBUG.
        transient = queue.exclusive_owner is not None or queue.auto_delete
        log.log(logging.DEBUG if transient else logging.INFO, "deleted queue %r (%d ready message(s) dropped)",
                queue.name, count)
        return count

    def consumer_removed(self, consumer, now: float) -> None:
        queue = consumer.queue
        queue.remove_consumer(consumer, now)
        if queue.auto_delete and queue.had_consumer and not queue.consumers and not queue.deleted:
            self.delete_queue_object(queue)

    # ---- time -------------------------------------------------------------------------------------
    def tick(self) -> None:
        """Periodic work: TTL sweeps and the expiry of unused queues (`x-expires`)."""
        now = self.clock()
        for queue in list(self._expiring):
            if queue.deleted:
                self._expiring.discard(queue)
                continue
            if queue.expires is not None and not queue.consumers and now - queue.last_used >= queue.expires:
                self.delete_queue_object(queue)
                continue
            if queue.ready:
                queue.expire(now)

    # ---- routing and publishing -----------------------------------------------------------------------
    def route(self, exchange, routing_key: str, properties) -> list:
        """The queues a message reaches from `exchange`, following exchange-to-exchange bindings."""
        dests = exchange.route(routing_key, properties)
        for d in dests:
            if not d.is_queue:
                break
        else:
            return dests
        queues: dict = {}
        seen = {id(exchange)}
        stack = list(dests)
        while stack:
            d = stack.pop()
            if d.is_queue:
                queues[id(d)] = d
            elif id(d) not in seen:
                seen.add(id(d))
                stack.extend(d.route(routing_key, properties))
        return list(queues.values())

    def publish(self, channel, exchange_name: str, routing_key: str, body: bytes, properties,
                mandatory: bool, now: float) -> None:
        """Route and enqueue one message; under confirms, record its ack or nack.

        Raises NOT_FOUND (missing exchange) or BAD_REQUEST (bad properties) after recording a
        nack, so a client waiting on confirms learns of it too. Whatever else goes wrong on the
        way (a bug included) is a nack as well: a confirm is never an ack for a message that was
        not queued where it was routed.
        """
        if channel.confirm_mode:
            channel.publish_seq += 1
            if not channel.dirty:
                channel.dirty = True
                self.channel_dirty(channel)
        try:
            accepted = self._route_and_enqueue(channel, exchange_name, routing_key, body, properties,
                                               mandatory, now)
        except BaseException:
            if channel.confirm_mode:
                channel.nacks.append(channel.publish_seq)
            raise
        if not accepted and channel.confirm_mode:
            channel.nacks.append(channel.publish_seq)

    def _route_and_enqueue(self, channel, exchange_name, routing_key, body, properties, mandatory, now) -> bool:
        """False when a queue refused the message (reject-publish overflow); an unroutable message is True."""
        exchange = self.exchanges.get(exchange_name)
        if exchange is None:
            raise _not_found(f"channel {channel.number}: publish to exchange '{exchange_name}': no such exchange; "
                             f"the message was dropped")
        if exchange.internal:
            raise BrokerError(ErrorCode.PRECONDITION_FAILED,
                              f"channel {channel.number}: exchange '{exchange_name}' is internal; "
                              f"publish to it is not allowed")
        if len(routing_key) > 63 and utf8_len(routing_key) > NAME_MAX_BYTES:
            raise BrokerError(ErrorCode.BAD_REQUEST, f"channel {channel.number}: routing key of "
                                                     f"{utf8_len(routing_key)} bytes; the limit is {NAME_MAX_BYTES}")
        msg = Message(exchange_name, routing_key, body, properties)
        if properties:
            msg.priority, msg.persistent, msg.expires_at = check_properties(properties, now, channel.session.user)
        queues = exchange.route(routing_key, properties)
        if queues:
            for q in queues:
                if not q.is_queue:
                    queues = self.route(exchange, routing_key, properties)
                    break
        if self.tracers:
            trace.published(self, channel, exchange_name, routing_key, body, properties)
            trace.routed(self, exchange, routing_key, queues)
        if not queues:
            if mandatory:
                self.stats["returned"] += 1
                if self.tracers:
                    trace.returned(self, channel, exchange_name, routing_key)
                channel.session.sink.return_message(channel.number, NO_ROUTE, NO_ROUTE_TEXT, exchange_name,
                                                    routing_key, body, properties)
            return True
        accepted = True
        try:
            if len(queues) == 1:
                accepted = queues[0].publish(msg, now)
            else:
                # Copy before any queue takes it: a store may drop the body of a stored copy.
                copies = [msg] + [msg.copy_for_queue() for _ in range(len(queues) - 1)]
                for q, m in zip(queues, copies):
                    if not q.publish(m, now):
                        accepted = False
        except BrokerError as exc:   # STORAGE_ERROR: the store cannot keep it (disk full)
            raise BrokerError(exc.code, f"channel {channel.number}: {exc.message}") from None
        return accepted

    def publish_batch(self, channel, messages: list) -> None:
        """Publish many; each takes a sequence number in order. Bad entries are nacked and the
        rest still published; then one error describes what was refused.

        The common case — a transient message routed to exactly one queue with no TTL or limit,
        without properties or with properties that ask for no expiry and no storing — is inlined
        here; everything else goes through `publish`. The route is worked out once per run of
        consecutive entries with the same exchange and routing key: no binding can change inside
        one batch (it is one operation), and the cached queue is dropped whenever an entry takes
        the general path.
        """
        now = self.clock()
        exchanges = self.exchanges
        queues_by_name = self.queues
        confirm = channel.confirm_mode
        user = channel.session.user
        new_message = object.__new__
        end_run = self._end_run
        errors = None
        run_name = run_rk = None    # the (exchange, routing key) whose route `q` holds
        q = None                    # that route's only queue if it takes the fast path, else None
        by_properties = False       # the route depends on the properties (headers exchange)
        # While a run appends to `q`, its counters wait in locals (`_end_run` settles them):
        # nothing else touches `q` until the run ends, which it does before any general path.
        first_pos = pos = run_bytes = 0
        ready_append = None
        for entry in messages:
            seq_before = channel.publish_seq
            try:
                if type(entry) is list and len(entry) == 5:
                    name, rk, body, properties, mandatory = entry
                    if rk != run_rk or name != run_name:
                        if q is not None:
                            end_run(q, pos - first_pos, run_bytes)
                            q = None
                        run_name = run_rk = None
                        exchange = exchanges.get(name) if type(name) is str else None
                        if exchange is not None and not exchange.internal and type(rk) is str \
                                and (len(rk) <= 63 or utf8_len(rk) <= NAME_MAX_BYTES):
                            if name == "":
                                q = queues_by_name.get(rk)  # the default exchange, without a tuple per message
                            else:
                                queues = exchange.route(rk, None)
                                q = queues[0] if len(queues) == 1 else None
                            run_name, run_rk = name, rk
                            by_properties = type(exchange) is HeadersExchange
                            if q is not None:
                                if q.fast:
                                    first_pos = pos = q._next_position
                                    run_bytes = 0
                                    ready_append = q.ready.append
                                else:
                                    q = None
                    if q is not None and type(body) is bytes:
                        if not properties:
                            properties = None
                            priority, persistent = 0, False
                        elif type(properties) is dict and not by_properties:
                            # Raises BAD_REQUEST as `publish` would; the handler below nacks it.
                            priority, persistent, expires_at = check_properties(properties, now, user)
                            if expires_at or (persistent and q.durable):
                                properties = False      # expiry or the store: the general path
                        else:
                            properties = False
                    else:
                        properties = False
                    if properties is not False:
                        if confirm:
                            channel.publish_seq += 1
                        # Message.__init__ without the call: these are its fields, plus queue and position.
                        msg = new_message(Message)
                        # The run's strings, not this entry's equal copies: a queued message
                        # then holds one object fewer of its own (less memory, less for the
                        # garbage collector to visit).
                        msg.exchange = run_name
                        msg.routing_key = run_rk
                        msg.body = body
                        msg.properties = properties
                        msg.size = size = len(body)
                        msg.priority = priority
                        msg.persistent = persistent
                        msg.expires_at = 0.0
                        msg.redelivered = False
                        msg.delivery_count = 0
                        msg.store_id = None
                        msg.queue = q
                        msg.position = pos
                        pos += 1
                        ready_append(msg)
                        run_bytes += size
                        continue
                if q is not None:
                    end_run(q, pos - first_pos, run_bytes)
                    q = None
                run_name = run_rk = None
                self._publish_entry(channel, entry, now)
            except Exception as exc:
                if q is not None:
                    end_run(q, pos - first_pos, run_bytes)
                    q = None
                run_name = run_rk = None
                if not isinstance(exc, BrokerError):
                    # A bug: log it (once per batch), and still give this entry and the later ones their numbers.
                    if errors is None or errors[0].code != ErrorCode.INTERNAL_ERROR:
                        log.exception("publish_batch entry failed on channel %s", channel.number)
                    exc = BrokerError(ErrorCode.INTERNAL_ERROR, f"channel {channel.number}: "
                                                                f"{type(exc).__name__}: {exc}")
                if confirm:
                    if channel.publish_seq == seq_before:
                        channel.publish_seq += 1
                    if not channel.nacks or channel.nacks[-1] != channel.publish_seq:
                        channel.nacks.append(channel.publish_seq)
                if errors is None:
                    errors = [exc, 0]
                errors[1] += 1
        if q is not None:
            end_run(q, pos - first_pos, run_bytes)
        if confirm and not channel.dirty:
            channel.dirty = True
            self.channel_dirty(channel)
        self.stats["published"] += len(messages)
        if errors is not None:
            exc, count = errors
            if count > 1:
                raise BrokerError(exc.code, f"{exc.message} ({count} of {len(messages)} messages in this batch "
                                            f"were refused; the others were published)")
            raise exc

    def _end_run(self, q, n: int, nbytes: int) -> None:
        """Settle what a run of `publish_batch`'s fast path appended to `q`: its counters (the
        run kept them in locals) and, if it has consumers, a drain this turn."""
        if n:
            q.n_published += n
            q._next_position += n
            q.ready_bytes += nbytes
            if q.consumers and not q.scheduled:
                self.schedule_drain(q)

    def _publish_entry(self, channel, entry, now) -> None:
        if type(entry) is not list or not 3 <= len(entry) <= 5 or type(entry[0]) is not str \
                or type(entry[1]) is not str or type(entry[2]) is not bytes:
            if channel.confirm_mode:
                channel.publish_seq += 1
                channel.nacks.append(channel.publish_seq)
            raise BrokerError(ErrorCode.BAD_REQUEST,
                              f"channel {channel.number}: publish_batch entries must be "
                              f"[exchange (str), routing_key (str), body (bin), properties (map or nil), mandatory (bool)]")
        properties = entry[3] if len(entry) > 3 else None
        mandatory = entry[4] if len(entry) > 4 else False
        self.publish(channel, entry[0], entry[1], entry[2], properties, mandatory, now)

    def dead_letter(self, queue, msgs: list, reason: str) -> None:
        dead_letter_module.dead_letter(self, queue, msgs, reason)

    # ---- recovery (called by a durable store's `recover`) ----------------------------------------------
    def restore_exchange(self, name, type_name, durable=True, auto_delete=False, internal=False, arguments=None):
        """Re-create a durable exchange at start, without telling the store (it already knows)."""
        if name in self.exchanges:
            return self.exchanges[name]
        exchange = EXCHANGE_TYPES[type_name](name, durable, auto_delete, internal, arguments or {})
        self.exchanges[name] = exchange
        return exchange

    def restore_queue(self, name, auto_delete=False, arguments=None) -> MessageQueue:
        """Re-create a durable queue at start (exclusive queues die with their connection, so none come back)."""
        queue = self.queues.get(name)
        if queue is None:
            queue = MessageQueue(self, name, True, None, auto_delete, arguments or {}, self.clock())
            self.queues[name] = queue
            if queue.ttl is not None or queue.expires is not None:
                self._expiring.add(queue)
        return queue

    def restore_binding(self, source, destination, routing_key="", arguments=None, destination_is_queue=True):
        src = self.exchanges[source]
        dest = self.queues[destination] if destination_is_queue else self.exchanges[destination]
        src.bind(dest, routing_key, arguments)
        if destination_is_queue:
            dest.bound_to.add(src)

    def restore_message(self, queue_name, exchange, routing_key, body, properties, store_id,
                        delivery_count=0, redelivered=True) -> Message:
        """Put a recovered persistent message back at the tail of its queue (call in queue order).

        Recovered messages are flagged redelivered by default: the broker cannot know whether a
        client saw them before the restart (RabbitMQ does the same). TTL restarts from now.
        """
        queue = self.queues[queue_name]
        now = self.clock()
        msg = Message(exchange, routing_key, body, properties)
        if properties:
            msg.priority, msg.persistent, msg.expires_at = check_properties(properties, now)
        msg.store_id = store_id
        msg.delivery_count = delivery_count
        msg.redelivered = redelivered
        msg.queue = queue
        position = queue._next_position
        if type(store_id) is int and store_id >= position:
            position = store_id     # the same int object: one fewer per message of a large backlog
        msg.position = position
        queue._next_position = position + 1
        if queue.ttl is not None:
            expires = now + queue.ttl
            if not msg.expires_at or expires < msg.expires_at:
                msg.expires_at = expires
        elif msg.expires_at:
            queue.has_message_expiry = True
            self._expiring.add(queue)
        queue.ready.append(msg)
        queue.ready_bytes += msg.size
        return msg

    # ---- tracing (minibroker/trace.py) -----------------------------------------------------------
    def set_tracing(self, tracer, on: bool) -> None:
        """Add or remove a trace callback. While any is set, every publish takes the full path
        (the publish_batch fast path has no trace hook), so tracing costs nothing when off."""
        if on:
            self.tracers.append(tracer)
        elif tracer in self.tracers:
            self.tracers.remove(tracer)
        for q in self.queues.values():
            q.fast = q.ttl is None and not q.limited and not self.tracers

    # ---- introspection ----------------------------------------------------------------------------
    def describe(self) -> dict:
        return {"queues": len(self.queues), "exchanges": len(self.exchanges) - 1}


def _check_binding_arguments(exchange, arguments) -> None:
    if arguments is not None and not isinstance(arguments, dict):
        raise BrokerError(ErrorCode.BAD_REQUEST, "binding arguments must be a map")
    if exchange.type_name == "headers" and arguments:
        from .exchanges import MATCH_MODES
        mode = arguments.get("x-match", "all")
        if mode not in MATCH_MODES:
            raise BrokerError(ErrorCode.PRECONDITION_FAILED,
                              f"x-match must be one of {', '.join(MATCH_MODES)}, got {mode!r}")


def _diff_message(what: str, have: tuple, wanted: tuple, names: tuple) -> str:
    diffs = [f"{n}: existing {h!r}, requested {w!r}" for n, h, w in zip(names, have, wanted) if h != w]
    return f"{what} exists with other settings ({'; '.join(diffs)}); declare it with the same settings or delete it first"
