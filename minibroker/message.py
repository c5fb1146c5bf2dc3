"""One message as a queue holds it: body, properties, where it was published, and its life in the queue.

A `Message` is the only object the hot path creates per message, so it has `__slots__` and no
methods beyond construction and copying. The same content routed to several queues gets one
`Message` per queue (`copy_for_queue`), because what happens next (delivery count, redelivered
flag, expiry, delivery tag) belongs to each queue's copy; body and properties are shared, never
copied. Parsing the properties a broker acts on (priority, expiration, persistence) happens once,
here. Queues, channels and dead-lettering set the remaining fields; this module leaves them alone.
"""

from clients.protocol.errors import BrokerError, ErrorCode
from serverbase.schema import check_table

# RabbitMQ's bound for a TTL in milliseconds (2^32 - 1, about 49 days); an expiration must parse
# to a number the clock can add, and "1" followed by 400 zeros cannot.
MAX_EXPIRATION_MS = (1 << 32) - 1

# The property names of AMQP 0-9-1 basic properties, as pika spells them.
PROPERTY_NAMES = frozenset({
    "content_type", "content_encoding", "headers", "delivery_mode", "priority", "correlation_id",
    "reply_to", "expiration", "message_id", "timestamp", "type", "user_id", "app_id", "cluster_id",
})

PERSISTENT = 2


class Message:
    __slots__ = (
        "exchange", "routing_key", "body", "properties", "size",
        "priority", "persistent", "expires_at",
        "queue", "position", "redelivered", "delivery_count",
        "tag", "consumer", "store_id",
    )

    def __init__(self, exchange: str, routing_key: str, body: bytes, properties):
        self.exchange = exchange
        self.routing_key = routing_key
        self.body = body
        self.properties = properties    # dict or None, passed through to consumers untouched
        self.size = len(body)
        self.priority = 0
        self.persistent = False
        self.expires_at = 0.0           # monotonic seconds; 0 = never
        self.redelivered = False
        self.delivery_count = 0         # times returned to the queue after a delivery
        self.store_id = None            # set by a durable store when it keeps this copy
        # Set later, always before they are read (kept out of here: this runs once per message):
        #   queue     the MessageQueue holding this copy            (MessageQueue.publish)
        #   position  order within its queue, for requeue in place  (MessageQueue.publish)
        #   tag       delivery tag while unacked on a channel       (delivery / get)
        #   consumer  the Consumer it went to, None for get         (delivery / get)

    def copy_for_queue(self) -> "Message":
        """Another queue's copy of the same content (fanout, several bindings)."""
        m = Message.__new__(Message)
        m.exchange = self.exchange
        m.routing_key = self.routing_key
        m.body = self.body
        m.properties = self.properties
        m.size = self.size
        m.priority = self.priority
        m.persistent = self.persistent
        m.expires_at = self.expires_at
        m.queue = None
        m.position = 0
        m.redelivered = False
        m.delivery_count = 0
        m.tag = 0
        m.consumer = None
        m.store_id = None
        return m


def check_properties(properties, now: float, user: str | None = None) -> tuple[int, bool, float]:
    """(priority, persistent, expires_at) from a properties map; BAD_REQUEST for bad values.

    Called only when a message has properties, so a bare publish skips it. `user` is the
    publishing connection's user: as RabbitMQ validates it, a `user_id` property must name that
    user (PRECONDITION_FAILED otherwise). None (no user to compare with: a message read back at
    start, a connection with auth off that gave no name) checks nothing.
    """
    if type(properties) is not dict:
        raise BrokerError(ErrorCode.BAD_REQUEST, f"message properties must be a map or nil, got {type(properties).__name__}")
    # Headers are stored in the journal, compared by the headers exchange and copied by
    # dead-lettering: the same bounds as an arguments table (string keys, depth, size).
    check_table(properties, "properties")
    priority = properties.get("priority") or 0
    if type(priority) is not int or not 0 <= priority <= 255:
        raise BrokerError(ErrorCode.BAD_REQUEST, f"property 'priority' must be an integer 0-255, got {priority!r}")
    persistent = properties.get("delivery_mode") == PERSISTENT
    expires_at = 0.0
    expiration = properties.get("expiration")
    if expiration is not None:
        expires_at = now + parse_expiration(expiration) / 1000.0
    headers = properties.get("headers")
    if headers is not None and type(headers) is not dict:
        raise BrokerError(ErrorCode.BAD_REQUEST, "property 'headers' must be a map")
    if user is not None:
        user_id = properties.get("user_id")
        if user_id is not None and user_id != user:
            raise BrokerError(ErrorCode.PRECONDITION_FAILED, f"user_id property set to '{str(user_id)[:100]}' "
                                                             f"but authenticated user was '{user}'")
    return priority, persistent, expires_at


def parse_expiration(value) -> int:
    """The `expiration` property: milliseconds as a decimal string, as AMQP has it."""
    if type(value) is str and len(value) <= 10 and value.isascii() and value.isdigit():
        ms = int(value)
    elif type(value) is int and value >= 0:   # lenient: some clients send a number
        ms = value
    else:
        raise BrokerError(ErrorCode.BAD_REQUEST, f"property 'expiration' must be a string of milliseconds such as "
                                                 f"\"60000\", got {str(value)[:40]!r}")
    if ms > MAX_EXPIRATION_MS:
        raise BrokerError(ErrorCode.BAD_REQUEST,
                          f"property 'expiration' must be at most {MAX_EXPIRATION_MS} ms, got {str(value)[:40]}")
    return ms
