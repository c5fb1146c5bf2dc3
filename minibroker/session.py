"""One client connection as the broker core sees it: its channels, exclusive queues and sink.

The core never touches a socket. A front end (minibroker/server.py) gives each connection a
*sink*: an object with `deliver(ch, entries, body_bytes)`, `confirm(ch, ack, seq, multiple)`,
`return_message(ch, code, text, exchange, routing_key, body, properties)`, `cancel(ch, tag)`,
`error(code, message)` (an id-0 error to the connection, e.g. STORAGE_ERROR beside nacks),
a `paused` attribute (true while the client is not reading: stop delivering) and `send_limit`.
When the sink becomes writable again the front end calls `Session.resume`.
"""

from clients.protocol.errors import BrokerError, ErrorCode

from .channel import Channel

MAX_CHANNEL = 65535


class Session:
    def __init__(self, broker, sink, session_id):
        self.broker = broker
        self.sink = sink
        self.id = session_id
        self.channels: dict[int, Channel] = {}
        self.exclusive_queues: set = set()
        self.closed = False
        self.published = False        # published since the last flow-control check (flow_control.py)
        # The connection's user, set by the front door at login (with auth off, the name the client
        # gave, or None): what a message's `user_id` property must equal (Broker.check_user_id).
        self.user: str | None = None

    @property
    def paused(self) -> bool:
        return self.sink.paused

    def channel(self, number: int) -> Channel:
        """The open channel `number`, opened on first use."""
        ch = self.channels.get(number)
        if ch is None:
            if type(number) is not int or not 1 <= number <= MAX_CHANNEL:
                raise BrokerError(ErrorCode.BAD_REQUEST, f"channel number must be an integer 1-{MAX_CHANNEL}, got {number!r}")
            ch = self.channels[number] = Channel(self, number)
        return ch

    def close_channel(self, number: int) -> None:
        ch = self.channels.pop(number, None)
        if ch is not None:
            ch.close(self.broker.clock())

    def resume(self) -> None:
        """The client reads again: let every queue this connection consumes from deliver."""
        for ch in self.channels.values():
            for c in ch.consumers.values():
                if c.queue.ready and not c.queue.scheduled and not c.queue.deleted:
                    self.broker.schedule_drain(c.queue)

    def close(self) -> None:
        """The connection is gone: close its channels, then delete its exclusive queues."""
        if self.closed:
            return
        self.closed = True
        for number in list(self.channels):
            self.close_channel(number)
        for queue in list(self.exclusive_queues):
            self.broker.delete_queue_object(queue)
        self.exclusive_queues.clear()
