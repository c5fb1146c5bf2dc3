"""Publisher flow control: a memory alarm that stops reading from publishers while queues are full.

A producer that publishes faster than anyone consumes would otherwise grow the server's memory
without bound. Like RabbitMQ's memory alarm, `PublisherFlowControl.check` (run every tick) sums
the body bytes of all ready messages; above `limit` it pauses reading from every connection
that has published since the last check and holds no consumers, so TCP backpressure blocks the
producers' sends — nothing lost. A sink that can say so (`publishing_blocked`: AMQP's
connection.blocked/unblocked) is told as well. When the total falls to `resume_fraction`
of the limit, reading resumes.

The check runs every tick (50 ms) and, since loopback clients can send tens of megabytes in that
time, also after every `CHECK_EVERY` published messages (`note_published`, called by the publish
ops): the sum is O(queues), a few microseconds spread over a thousand messages. Connections with
consumers are never paused: their acks are what drains the queues (a
connection that both floods and consumes is not stopped here; RabbitMQ advises separate
connections for the same reason).
"""

DEFAULT_LIMIT = 1 << 30          # bytes of ready message bodies across all queues
RESUME_FRACTION = 0.8
CHECK_EVERY = 1000               # published messages between checks on the publish path


class PublisherFlowControl:
    def __init__(self, server, limit: int = DEFAULT_LIMIT, resume_fraction: float = RESUME_FRACTION):
        self.server = server
        self.limit = limit
        self.resume_below = int(limit * resume_fraction)
        self.blocked: dict = {}      # conn id -> connection we paused
        self.alarm = False
        self.pending = 0             # messages published since the last check

    def note_published(self, count: int) -> None:
        self.pending += count
        if self.pending >= CHECK_EVERY:
            self.check()

    def queued_bytes(self) -> int:
        total = sum(q.ready_bytes for q in self.server.broker.queues.values())
        # durable store (issue 4): bodies it paged out to the journal take no memory
        return total - getattr(self.server.store, "paged_bytes", 0)

    def check(self) -> None:
        self.pending = 0
        total = self.queued_bytes()
        if total > self.limit:
            self.alarm = True
            for conn in list(self.server.connections.values()):
                session = conn.state.get("session")
                if session is None or not session.published or conn.id in self.blocked or conn.closed:
                    continue
                if any(ch.consumers for ch in session.channels.values()):
                    continue
                conn.transport.pause_reading()
                self.blocked[conn.id] = conn
                _tell(session, True)
        elif self.alarm and total <= self.resume_below:
            self.alarm = False
            for conn in self.blocked.values():
                if not conn.closed and not conn.writing_paused:
                    conn.transport.resume_reading()
                    _tell(conn.state.get("session"), False)
            self.blocked.clear()
        for conn in self.server.connections.values():
            session = conn.state.get("session")
            if session is not None:
                session.published = False


def _tell(session, blocked: bool) -> None:
    """Tell a client whose protocol can say so (AMQP's connection.blocked) that it is paused."""
    notify = getattr(session.sink, "publishing_blocked", None) if session is not None else None
    if notify is not None:
        notify(blocked)
