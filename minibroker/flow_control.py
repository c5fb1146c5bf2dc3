"""Publisher flow control: a memory alarm that stops publishers while queues are full.

A producer that publishes faster than anyone consumes would otherwise grow the server's memory
without bound. Like RabbitMQ's memory alarm, `PublisherFlowControl.check` (run every tick) sums
what the queued messages cost (`queued_bytes`: their bodies, plus `MESSAGE_OVERHEAD` for each
ready or unacked message, so three million empty messages count as the 750 MB they take and not
as zero); above `limit` it stops every connection that has published since the last check:

- a connection with no consumers: reading from it is paused, so TCP backpressure blocks the
  producer's sends — no protocol change, nothing lost. A sink that can say so
  (`publishing_blocked`: AMQP's connection.blocked/unblocked) is told as well;
- a connection that also consumes must keep being read, or its acks (which drain the queues)
  would stop too. Its publishes are *held* instead (`hold`): parked in order, not routed, while
  its other requests, acks included, are served as usual. Held publishes are applied, in order,
  when the alarm clears (`release`); a held publish with a request id gets its reply then. A
  connection holding more than `HOLD_LIMIT` bytes of publishes is paused like the others: a
  publisher cannot bypass the alarm by consuming on its connection. (An AMQP-door connection
  that consumes is not stopped: AMQP has no way to hold its publishes apart from its acks.)

When the total falls to `resume_fraction` of the limit, reading resumes and held publishes go
through. The check runs every tick (50 ms) and, since loopback clients can send tens of megabytes
in that time, also after every `CHECK_EVERY` published messages (`note_published`, called by the
publish ops): the sum is O(queues), a few microseconds spread over a thousand messages.
"""

import logging

from clients.protocol.errors import BrokerError, ErrorCode

DEFAULT_LIMIT = 1 << 30          # bytes that queued messages may cost, across all queues
RESUME_FRACTION = 0.8
CHECK_EVERY = 1000               # published messages between checks on the publish path
# What a queued message costs besides its body: the Message object and its slot in the ready list
# (192 bytes measured with tracemalloc), plus the routing key and body objects each message
# decoded from the wire has of its own. 3M empty messages took 789 MB: about 260 bytes each.
MESSAGE_OVERHEAD = 256
HOLD_LIMIT = 16 << 20            # bytes of held publishes per connection before it is paused
ENTRY_ESTIMATE = 64              # bytes counted per held message besides its body

log = logging.getLogger("minibroker.flow_control")


class HeldPublishes:
    """One connection's publishes parked under the alarm: (request id, function, args) in order."""

    __slots__ = ("requests", "bytes")

    def __init__(self):
        self.requests: list = []
        self.bytes = 0


class PublisherFlowControl:
    def __init__(self, server, limit: int = DEFAULT_LIMIT, resume_fraction: float = RESUME_FRACTION):
        self.server = server
        self.limit = limit
        self.resume_below = int(limit * resume_fraction)
        self.blocked: dict = {}      # conn id -> connection we paused
        self.holding: dict = {}      # conn id -> connection whose publishes we hold
        self.alarm = False
        self.pending = 0             # messages published since the last check

    def note_published(self, count: int) -> None:
        self.pending += count
        if self.pending >= CHECK_EVERY:
            self.check()

    def queued_bytes(self) -> int:
        body = 0
        count = 0
        for q in self.server.broker.queues.values():
            body += q.ready_bytes
            count += len(q.ready) + q.unacked
        # durable store: bodies it paged out to the journal take no memory
        return body - getattr(self.server.store, "paged_bytes", 0) + count * MESSAGE_OVERHEAD

    def check(self) -> None:
        self.pending = 0
        total = self.queued_bytes()
        if total > self.limit:
            if not self.alarm:
                log.warning("memory alarm: queued messages cost %d bytes, over the limit of %d; "
                            "publishers are stopped until it falls to %d", total, self.limit, self.resume_below)
            self.alarm = True
            for conn in list(self.server.connections.values()):
                session = conn.state.get("session")
                if session is None or not session.published or conn.closed \
                        or conn.id in self.blocked or conn.id in self.holding:
                    continue
                if any(ch.consumers for ch in session.channels.values()):
                    if conn.state.get("holds_publishes"):   # our protocol's connections (server.py)
                        conn.state["held"] = HeldPublishes()
                        self.holding[conn.id] = conn
                    # Others (the AMQP door) are left running: pausing them would stop their acks.
                else:
                    self._pause(conn)
        elif self.alarm and total <= self.resume_below:
            self.alarm = False
            log.info("memory alarm cleared: queued messages cost %d bytes", total)
            for conn in self.blocked.values():
                if not conn.closed and not conn.writing_paused:
                    conn.transport.resume_reading()
                    _tell(conn.state.get("session"), False)
            self.blocked.clear()
            holding, self.holding = self.holding, {}
            for conn in holding.values():
                self.release(conn)
        for conn in self.server.connections.values():
            session = conn.state.get("session")
            if session is not None:
                session.published = False

    def _pause(self, conn) -> None:
        conn.transport.pause_reading()
        self.blocked[conn.id] = conn
        _tell(conn.state.get("session"), True)

    # ---- held publishes ------------------------------------------------------------------
    def hold(self, conn, fn, args, nbytes: int, rid=None) -> None:
        """Park a publish of a connection that consumes; pause it once it holds HOLD_LIMIT bytes.

        `fn(conn, args)` runs at release; its result answers request `rid` (default: the request
        being dispatched; 0 for none)."""
        held = conn.state["held"]
        held.requests.append((conn.request_id if rid is None else rid, fn, args))
        held.bytes += nbytes
        if held.bytes > HOLD_LIMIT and conn.id not in self.blocked and not conn.closed:
            self._pause(conn)

    def release(self, conn) -> None:
        """Apply a connection's held publishes in order and answer those that asked for a reply."""
        held = conn.state.pop("held", None)
        if held is None or conn.closed:
            return
        for rid, fn, args in held.requests:
            try:
                result = fn(conn, args)
            except BrokerError as exc:
                conn.send_error(rid, exc.code, exc.message)
            except Exception as exc:   # a bug: the same answer dispatch gives
                log.exception("held publish failed on connection %s", conn.id)
                conn.send_error(rid, ErrorCode.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")
            else:
                if rid:
                    conn.send_response(rid, result)
        conn.flush()


def _tell(session, blocked: bool) -> None:
    """Tell a client whose protocol can say so (AMQP's connection.blocked) that it is paused."""
    notify = getattr(session.sink, "publishing_blocked", None) if session is not None else None
    if notify is not None:
        notify(blocked)
