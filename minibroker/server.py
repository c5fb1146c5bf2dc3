"""The minibroker server: the wire front end of the routing broker.

It turns requests into calls on the broker core (broker.py, session.py, channel.py) and the
core's callbacks into pushes, through one `ConnectionSink` per connection. Routing, queues and
acks live in the core, not here. Op formats are in docs/PROTOCOL.md, section 8.

The core runs one *turn* (`Broker.run_turn`) per event-loop iteration in which something
happened, scheduled with `loop.call_soon`: all requests read from all connections in that
iteration are applied first, then deliveries and confirms go out in as few frames as possible.
"""

import logging

from clients.protocol.errors import BrokerError, ErrorCode
from clients.protocol.framing import LENGTH
from serverbase import BrokerServer, op
from serverbase.auth import NotAuthorized
from serverbase.cli import port_or_off
from serverbase.listener import Listener
from serverbase.schema import Array, Bin, Bool, Int, Name, Str, Table, Value
from serverbase.server import DEFERRED

from . import access
from . import gc_policy

from .broker import Broker
from . import introspect
from .introspect import QueueRates
from .flow_control import DEFAULT_LIMIT, ENTRY_ESTIMATE, PublisherFlowControl
from .store_interface import TransientStore

DEFAULT_PORT = 5673
DEFAULT_AMQP_PORT = 5672     # the AMQP 0-9-1 front door (minibroker/amqp/), --amqp-port
DEFAULT_DATA_DIR = "./data/minibroker"
RATE_INTERVAL_S = 1.0       # how often queue rates are sampled (minibroker list queues)
TICK_SECONDS = 0.05          # TTL sweeps and x-expires checks
ENTRY_OVERHEAD = 48          # msgpack bytes around one delivery besides its strings and body
PROPERTIES_ESTIMATE = 128
SMALL_ENTRY_BOUND = 512      # bytes besides the body that a typical delivery entry stays under    # a guess for a properties map; a frame that still overflows is re-split

log = logging.getLogger("minibroker.server")
_PUSH = 3


class ConnectionSink:
    """Where the core sends one connection's deliveries, confirms, returns and cancels."""

    __slots__ = ("conn", "session")

    def __init__(self, conn):
        self.conn = conn
        self.session = None

    @property
    def paused(self) -> bool:
        conn = self.conn
        return conn.writing_paused or conn.closed

    def deliver(self, ch: int, entries: list, body_bytes: int):
        """Send deliveries as `deliver` pushes no larger than the client's max frame.

        Returns the delivery tags of messages too large for this client on their own (the
        broker rejects them), or None.
        """
        limit = self.conn.send_limit - 64
        if body_bytes + len(entries) * SMALL_ENTRY_BOUND < limit:
            return self._send(ch, entries, None)   # surely one frame (and _send re-splits if not)
        start = 0
        size = 0
        too_large = None
        for i, e in enumerate(entries):
            s = len(e[5]) + len(e[0]) + len(e[3]) + len(e[4]) + ENTRY_OVERHEAD
            if e[6]:
                s += PROPERTIES_ESTIMATE
            if size + s > limit and i > start:
                too_large = self._send(ch, entries[start:i], too_large)
                start = i
                size = 0
            size += s
        return self._send(ch, entries[start:], too_large)

    def _send(self, ch, batch, too_large):
        conn = self.conn
        body = conn._packer.pack([_PUSH, "deliver", [ch, batch]])
        if len(body) > conn.send_limit:
            if len(batch) == 1:
                tag = batch[0][1]
                conn.send_error(0, ErrorCode.MESSAGE_TOO_LARGE,
                                f"channel {ch}: delivery {tag} does not fit in the max_frame of "
                                f"{conn.send_limit} bytes this client announced; the message was rejected",
                                ch)
                return (too_large or []) + [tag]
            half = len(batch) // 2
            too_large = self._send(ch, batch[:half], too_large)
            return self._send(ch, batch[half:], too_large)
        conn.send_raw(LENGTH.pack(len(body)))
        conn.send_raw(body)
        return too_large

    def confirm(self, ch, ack, seq, multiple):
        self.conn.push("confirm", [ch, ack, seq, multiple])

    def error(self, code, message, ch=None):
        """An error not tied to a request (id 0), such as STORAGE_ERROR with the nacks it
        explains; `ch` names the channel it concerns in the frame's detail map."""
        self.conn.send_error(0, code, message, ch)

    def return_message(self, ch, code, text, exchange, routing_key, body, properties):
        self.conn.push("return", [ch, code, text, exchange, routing_key, body, properties])

    def cancel(self, ch, tag):
        self.conn.push("cancel", [ch, tag])

    @property
    def send_limit(self):
        return self.conn.send_limit


# ---- argument schemas (docs/PROTOCOL.md section 8; the limits are in docs/robustness.md) ----------------
CH = Int(1, 65535, default=1)
QUEUE_OP = {"ch": CH, "queue": Name()}
BINDING = {"ch": CH, "routing_key": Name(default=""), "arguments": Table()}
PUBLISH = {"ch": CH, "exchange": Name(default=""), "routing_key": Name(default=""), "body": Bin(),
           "properties": Value(default=None), "mandatory": Bool(default=False)}


class MinibrokerServer(BrokerServer):
    """minibroker: a routing message queue in the spirit of RabbitMQ."""

    name = "minibroker"
    max_queued_bytes = DEFAULT_LIMIT   # memory alarm: see flow_control.py
    tls_default_ports = {"": 5674, "amqp": 5671}   # TLS twins of the doors (serverbase/tls.py)
    features = ("publisher_confirms", "exchange_to_exchange_bindings", "dead_lettering",
                "priorities", "single_active_consumer", "delivery_limit")

    def __init__(self, *args, store=None, fsync: str = "always", fsync_interval_ms: int = 200,
                 journal_segment_bytes: int = 64 << 20, amqp_port: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        # AMQP 0-9-1 front door (minibroker/amqp/): None = off. Off by default when built in code (tests
        # pass amqp_port=0); the command line's --amqp-port defaults to 5672.
        self.amqp_port = amqp_port
        self.store = store if store is not None else TransientStore()
        self.broker = Broker(store=self.store)
        # ---- durable store: with a data dir and no explicit store, keep durable
        # definitions and persistent messages on disk (minibroker/store/, docs/minibroker-durability.md).
        self._durable = store is None and bool(self.data_dir)
        self.fsync_policy, self.fsync_interval_ms = fsync, fsync_interval_ms
        self.journal_segment_bytes = journal_segment_bytes

    @classmethod
    def add_arguments(cls, parser) -> None:
        from .store.journal import FSYNC_POLICIES
        parser.add_argument("--fsync", choices=FSYNC_POLICIES, default="always",
                            help="when persistent messages reach the disk: always (confirm after fsync, the "
                                 "default), interval (fsync every --fsync-interval-ms), never (page cache only)")
        parser.add_argument("--fsync-interval-ms", type=int, default=200,
                            help="fsync period under --fsync interval (default 200)")
        parser.add_argument("--amqp-port", type=port_or_off, default=DEFAULT_AMQP_PORT,
                            help=f"port of the AMQP 0-9-1 listener (real pika, aio-pika, kombu, Celery); "
                                 f"0 picks a free one, off disables it (default {DEFAULT_AMQP_PORT})")
        parser.add_argument("--journal-segment-bytes", type=int, default=64 << 20,
                            help="size of a message journal segment file (default 64 MiB); smaller segments "
                                 "are garbage-collected and compacted sooner")

    @classmethod
    def from_args(cls, args):
        server = super().from_args(args)
        server.fsync_policy, server.fsync_interval_ms = args.fsync, args.fsync_interval_ms
        server.journal_segment_bytes = args.journal_segment_bytes
        server.amqp_port = args.amqp_port
        return server

    def extra_listeners(self):
        if self.amqp_port is None:
            return []
        from .amqp.connection import AMQPConnection
        return [Listener("amqp", "--amqp-port", self.amqp_port,
                         lambda: AMQPConnection(self, self.next_connection_id()),
                         host=self.host)]

    # ---- lifecycle --------------------------------------------------------------------------------
    async def open(self):
        import asyncio
        self.broker._schedule = asyncio.get_running_loop().call_soon
        if self._durable:   # durable store
            from .store.broker_store import BrokerStore
            self.store = self.broker.store = BrokerStore(self.data_dir, fsync=self.fsync_policy,
                                                         fsync_interval_ms=self.fsync_interval_ms,
                                                         segment_bytes=self.journal_segment_bytes)
        self.store.recover(self.broker)
        self.every(TICK_SECONDS, self.broker.tick)

        self.queue_rates = QueueRates()
        self.every(RATE_INTERVAL_S, lambda: self.queue_rates.sample(self.broker.queues))

        self.flow_control = PublisherFlowControl(self, self.max_queued_bytes)
        self.every(TICK_SECONDS, self.flow_control.check)
        self.every(gc_policy.SWEEP_INTERVAL_S, gc_policy.sweep)

    async def close(self):
        self.store.close()

    def on_connection_opened(self, conn):
        sink = ConnectionSink(conn)
        session = self.broker.open_session(sink, conn.id)
        sink.session = session
        conn.state["session"] = session
        conn.state["holds_publishes"] = True   # flow_control.py may park its publishes under the alarm
        conn.on_writable.append(session.resume)

    def on_logged_in(self, conn):
        conn.state["session"].user = conn.user

    def on_connection_closed(self, conn):
        tracer = conn.state.pop("tracer", None)
        if tracer is not None:
            self.broker.set_tracing(tracer, False)
        session = conn.state.pop("session", None)
        if session is not None:
            session.close()

    def extra_info(self) -> dict:
        info = self.broker.describe()
        if hasattr(self.store, "describe"):   # durable store: fsyncs, journal size, recovery
            info["store"] = self.store.describe()
        return info

    # ---- access control: RabbitMQ's configure/write/read (minibroker/access.py) ----------------------
    def compile_permissions(self, user: str, raw):
        return access.Permissions.from_stored(user, raw)

    def authorize(self, conn, op: str, args: dict):
        if op == "trace":   # shows every message: only for users who may do everything
            raise NotAuthorized(f"ACCESS_REFUSED: user {conn.user!r} may not trace (it shows every message)")
        if op == "publish_batch":
            return self._authorize_publish_batch(conn, args)
        try:
            access.authorize(conn.access, op, args)
        except NotAuthorized:
            if op == "publish":
                self._publish_refused(conn, args)
            raise
        return None

    def _authorize_publish_batch(self, conn, args):
        """Publish the messages of a batch the user may publish, nack (under confirms) those it
        may not, in order; then say what was refused. None when all are allowed."""
        messages = args.get("messages")
        if type(messages) is not list:
            return None   # the handler words the bad argument
        allowed = access.publish_allowed
        perms = conn.access
        if all(allowed(perms, m[0]) if type(m) is list and m else True for m in messages):
            return None
        channel = self._channel(conn, args)
        conn.state["session"].published = True
        run, refused, first_error = [], [], None
        for m in messages:
            if type(m) is list and m and not allowed(perms, m[0]):
                if run:
                    first_error = self._publish_run(channel, run) or first_error
                    run = []
                refused.append(m[0])
                self._publish_refused(conn, args)
                continue
            run.append(m)
        if run:
            first_error = self._publish_run(channel, run) or first_error
        self.flow_control.note_published(len(messages))
        names = sorted({str(n)[:100] for n in refused})
        raise NotAuthorized(f"ACCESS_REFUSED: channel {channel.number}: user {conn.user!r} has no write permission "
                            f"on exchange(s) {names}: {len(refused)} of {len(messages)} messages in this batch "
                            f"were refused" + (f"; also: {first_error.message}" if first_error else ""),
                            "exchange", names[0])

    def _publish_run(self, channel, run):
        try:
            self.broker.publish_batch(channel, run)
        except BrokerError as exc:
            return exc
        return None

    @staticmethod
    def _session(conn):
        return conn.state["session"]

    def _channel(self, conn, args):
        return conn.state["session"].channel(args["ch"])

    # ---- channels ---------------------------------------------------------------------------------
    @op("channel_open", schema={"ch": CH})
    def op_channel_open(self, conn, args):
        self._channel(conn, args)
        return {}

    @op("channel_close", schema={"ch": CH})
    def op_channel_close(self, conn, args):
        self._session(conn).close_channel(args["ch"])
        return {}

    # ---- exchanges --------------------------------------------------------------------------------
    @op("exchange_declare", schema={
        "ch": CH, "exchange": Name(), "type": Str(max_bytes=255, default="direct"),
        "durable": Bool(False), "auto_delete": Bool(False), "internal": Bool(False), "passive": Bool(False),
        "arguments": Table()})
    def op_exchange_declare(self, conn, args):
        self.broker.declare_exchange(
            args["exchange"], args["type"], durable=args["durable"], auto_delete=args["auto_delete"],
            internal=args["internal"], arguments=args["arguments"], passive=args["passive"])
        return {}

    @op("exchange_delete", schema={"ch": CH, "exchange": Name(), "if_unused": Bool(False)})
    def op_exchange_delete(self, conn, args):
        self.broker.delete_exchange(args["exchange"], args["if_unused"])
        return {}

    @op("exchange_bind", schema={"destination": Name(), "source": Name(), **BINDING})
    def op_exchange_bind(self, conn, args):
        self.broker.bind_exchange(args["destination"], args["source"], args["routing_key"], args["arguments"])
        return {}

    @op("exchange_unbind", schema={"destination": Name(), "source": Name(), **BINDING})
    def op_exchange_unbind(self, conn, args):
        self.broker.unbind_exchange(args["destination"], args["source"], args["routing_key"], args["arguments"])
        return {}

    # ---- queues -----------------------------------------------------------------------------------
    @op("queue_declare", schema={
        "ch": CH, "queue": Name(default=""), "passive": Bool(False), "durable": Bool(False),
        "exclusive": Bool(False), "auto_delete": Bool(False), "arguments": Table()})
    def op_queue_declare(self, conn, args):
        q = self.broker.declare_queue(
            self._session(conn), args["queue"], passive=args["passive"], durable=args["durable"],
            exclusive=args["exclusive"], auto_delete=args["auto_delete"], arguments=args["arguments"])
        return {"queue": q.name, "message_count": len(q.ready), "consumer_count": len(q.consumers)}

    @op("queue_bind", schema={**QUEUE_OP, "exchange": Name(), **BINDING})
    def op_queue_bind(self, conn, args):
        self.broker.bind_queue(self._session(conn), args["queue"], args["exchange"], args["routing_key"],
                               args["arguments"])
        return {}

    @op("queue_unbind", schema={**QUEUE_OP, "exchange": Name(), **BINDING})
    def op_queue_unbind(self, conn, args):
        self.broker.unbind_queue(self._session(conn), args["queue"], args["exchange"], args["routing_key"],
                                 args["arguments"])
        return {}

    @op("queue_purge", schema=QUEUE_OP)
    def op_queue_purge(self, conn, args):
        return {"message_count": self.broker.purge_queue(self._session(conn), args["queue"])}

    @op("queue_delete", schema={**QUEUE_OP, "if_unused": Bool(False), "if_empty": Bool(False)})
    def op_queue_delete(self, conn, args):
        count = self.broker.delete_queue(self._session(conn), args["queue"],
                                         if_unused=args["if_unused"], if_empty=args["if_empty"])
        return {"message_count": count}

    # ---- channel settings -------------------------------------------------------------------------
    @op("basic_qos", schema={"ch": CH, "prefetch_count": Int(0, 65535, default=0),
                             "prefetch_size": Int(0, 0, default=0), "global": Bool(False)})
    def op_basic_qos(self, conn, args):
        # prefetch_size is not supported (nor by RabbitMQ): the schema accepts only 0.
        self._channel(conn, args).qos(args["prefetch_count"], args["global"])
        return {}

    @op("confirm_select", schema={"ch": CH})
    def op_confirm_select(self, conn, args):
        self._channel(conn, args).confirm_mode = True
        return {}

    # ---- publishing -------------------------------------------------------------------------------
    def _publish_refused(self, conn, raw_args):
        """A publish whose args fail the schema still takes a sequence number, and it is a nack."""
        ch = raw_args.get("ch", 1) if type(raw_args) is dict else 1
        session = conn.state.get("session")
        if session is None or type(ch) is not int or not 1 <= ch <= 65535 or ch not in session.channels:
            return
        if "held" in conn.state:   # after the publishes held before it, to keep sequence numbers in order
            self.flow_control.hold(conn, self._nack_refused, ch, 0, rid=0)
            return
        self._nack_refused(conn, ch)

    def _nack_refused(self, conn, ch):
        channel = conn.state["session"].channels.get(ch)
        if channel is not None and channel.confirm_mode:
            channel.publish_seq += 1
            channel.nacks.append(channel.publish_seq)
            if not channel.dirty:
                channel.dirty = True
                self.broker.channel_dirty(channel)

    @op("publish", schema=PUBLISH, on_invalid="_publish_refused")
    def op_publish(self, conn, args):
        if "held" in conn.state:   # memory alarm, and this connection consumes: see flow_control.py
            self.flow_control.hold(conn, self._publish, args, len(args["body"]) + ENTRY_ESTIMATE)
            return DEFERRED
        return self._publish(conn, args)

    def _publish(self, conn, args):
        channel = self._channel(conn, args)
        broker = self.broker
        conn.state["session"].published = True
        broker.publish(channel, args["exchange"], args["routing_key"], args["body"], args["properties"],
                       args["mandatory"], broker.clock())
        broker.stats["published"] += 1
        self.flow_control.note_published(1)
        return {}

    @op("publish_batch", schema={"ch": CH, "messages": Array(max_items=1_000_000)})
    def op_publish_batch(self, conn, args):
        if "held" in conn.state:
            nbytes = sum(len(m[2]) if type(m) is list and len(m) > 2 and type(m[2]) is bytes else 0
                         for m in args["messages"]) + ENTRY_ESTIMATE * len(args["messages"])
            self.flow_control.hold(conn, self._publish_batch, args, nbytes)
            return DEFERRED
        return self._publish_batch(conn, args)

    def _publish_batch(self, conn, args):
        channel = self._channel(conn, args)
        conn.state["session"].published = True
        messages = args["messages"]
        try:
            self.broker.publish_batch(channel, messages)
        finally:
            self.flow_control.note_published(len(messages))
        return {}

    # ---- consuming --------------------------------------------------------------------------------
    @op("consume", schema={**QUEUE_OP, "consumer_tag": Name(default=""), "no_ack": Bool(False),
                           "exclusive": Bool(False), "arguments": Table()})
    def op_consume(self, conn, args):
        channel = self._channel(conn, args)
        session = self._session(conn)
        queue = self.broker.get_queue(args["queue"], session)
        tag = channel.consume(queue, args["consumer_tag"], args["no_ack"], args["exclusive"], args["arguments"],
                              self.broker.clock())
        return {"consumer_tag": tag}

    @op("cancel", schema={"ch": CH, "consumer_tag": Name()})
    def op_cancel(self, conn, args):
        self._channel(conn, args).cancel(args["consumer_tag"], self.broker.clock())
        return {}

    @op("get", schema={**QUEUE_OP, "no_ack": Bool(False)})
    def op_get(self, conn, args):
        channel = self._channel(conn, args)
        queue = self.broker.get_queue(args["queue"], self._session(conn))
        return channel.get(queue, args["no_ack"], self.broker.clock())

    @op("ack", schema={"ch": CH, "delivery_tag": Int(0, default=0), "multiple": Bool(False)})
    def op_ack(self, conn, args):
        self._channel(conn, args).ack(args["delivery_tag"], args["multiple"])
        return {}

    @op("nack", schema={"ch": CH, "delivery_tag": Int(0, default=0), "multiple": Bool(False),
                        "requeue": Bool(True)})
    def op_nack(self, conn, args):
        self._channel(conn, args).nack(args["delivery_tag"], args["multiple"], args["requeue"])
        return {}

    @op("reject", schema={"ch": CH, "delivery_tag": Int(0), "requeue": Bool(True)})
    def op_reject(self, conn, args):
        self._channel(conn, args).nack(args["delivery_tag"], False, args["requeue"], "reject")
        return {}

    # ---- looking inside (minibroker list ..., the stats op; minibroker/introspect.py) --------------
    def _sessions(self) -> list:
        """(session, connection) of every client connection (msgpack or AMQP), in connection order."""
        out = []
        for conn in self.connections.values():
            state = getattr(conn, "state", None)
            session = state.get("session") if isinstance(state, dict) else getattr(conn, "session", None)
            if session is not None:
                out.append((session, conn))
        return out

    @op("list", schema={"kind": Name()})
    def op_list(self, conn, args):
        kind = args["kind"]
        broker = self.broker
        if kind == "queues":
            rows = introspect.queue_rows(broker, self.queue_rates)
        elif kind == "exchanges":
            rows = introspect.exchange_rows(broker)
        elif kind == "bindings":
            rows = introspect.binding_rows(broker)
        elif kind == "consumers":
            rows = introspect.consumer_rows(s for s, _ in self._sessions())
        elif kind == "channels":
            rows = introspect.channel_rows(s for s, _ in self._sessions())
        elif kind == "connections":
            rows = [introspect.connection_row(s, c) for s, c in self._sessions()]
        else:
            raise BrokerError(ErrorCode.BAD_REQUEST, f"list: unknown kind {kind!r}; use one of {', '.join(introspect.KINDS)}")
        return {"rows": rows}

    def extra_metrics(self) -> list:
        from serverbase.metrics import Sample
        broker = self.broker
        totals = list(broker.retired_counts)
        ready = unacked = 0
        for q in broker.queues.values():
            totals = [a + b for a, b in zip(totals, q.counts)]
            ready += len(q.ready)
            unacked += q.unacked
        published, delivered, acked, redelivered = totals
        stats = broker.stats
        samples = [
            Sample("published_total", "counter", "messages published (accepted by the server)", stats["published"]),
            Sample("enqueued_total", "counter", "messages put on queues (one per queue routed to)", published),
            Sample("delivered_total", "counter", "messages delivered to consumers or by get", delivered),
            Sample("acked_total", "counter", "deliveries acknowledged", acked),
            Sample("redelivered_total", "counter", "deliveries returned to their queue for redelivery", redelivered),
            Sample("dead_lettered_total", "counter", "messages dead-lettered (rejected, expired, over a limit)",
                   stats["dead_lettered"]),
            Sample("discarded_total", "counter", "messages that left a queue unconsumed (dead-lettered or dropped)",
                   stats["discarded"]),
            Sample("returned_total", "counter", "mandatory messages returned unroutable", stats["returned"]),
            Sample("queues", "gauge", "queues declared", len(broker.queues)),
            Sample("messages_ready", "gauge", "messages ready for delivery, all queues", ready),
            Sample("messages_unacknowledged", "gauge", "messages delivered and not yet acked, all queues", unacked),
        ]
        describe = getattr(self.store, "describe", None)
        if describe is not None:
            d = describe()
            samples.append(Sample("fsyncs_total", "counter", "fsyncs of the message journal", d.get("fsyncs") or 0))
            samples.append(Sample("fsync_latency_ms_avg", "gauge", "mean fsync time of the journal, in ms",
                                  d.get("fsync_ms_avg")))
        return samples

    @op("trace", schema={"on": Bool(True)})
    def op_trace(self, conn, args):
        """Start (or stop) `trace` pushes of every message's path to this connection (minibroker/trace.py)."""
        tracer = conn.state.get("tracer")
        if args["on"] and tracer is None:
            from serverbase.trace_push import push_tracer
            tracer = conn.state["tracer"] = push_tracer(conn)
            self.broker.set_tracing(tracer, True)
        elif not args["on"] and tracer is not None:
            del conn.state["tracer"]
            self.broker.set_tracing(tracer, False)
        return {"tracing": args["on"]}
