"""pika's `spec` names for the pika-style client: message properties, method objects, constants.

`BasicProperties` carries pika's field names and travels on the wire as a map of the fields
that are set (docs/PROTOCOL.md section 8). The method classes (`Basic.Deliver`,
`Queue.DeclareOk`...) are plain records with pika's attribute names, so code that reads
`method.delivery_tag` or `result.method.queue` runs unchanged. Nothing here does I/O.
"""

import enum

PERSISTENT_DELIVERY_MODE = 2
TRANSIENT_DELIVERY_MODE = 1

# AMQP 0-9-1 reply codes, as pika.spec names them.
REPLY_SUCCESS = 200
CONTENT_TOO_LARGE = 311
NO_ROUTE = 312
NO_CONSUMERS = 313
CONNECTION_FORCED = 320
INVALID_PATH = 402
ACCESS_REFUSED = 403
NOT_FOUND = 404
RESOURCE_LOCKED = 405
PRECONDITION_FAILED = 406
FRAME_ERROR = 501
SYNTAX_ERROR = 502
COMMAND_INVALID = 503
CHANNEL_ERROR = 504
UNEXPECTED_FRAME = 505
RESOURCE_ERROR = 506
NOT_ALLOWED = 530
NOT_IMPLEMENTED = 540
INTERNAL_ERROR = 541


class DeliveryMode(enum.Enum):
    """pika 1.3's `pika.DeliveryMode`."""
    Transient = 1
    Persistent = 2


_PROPERTY_NAMES = ("content_type", "content_encoding", "headers", "delivery_mode", "priority",
                   "correlation_id", "reply_to", "expiration", "message_id", "timestamp", "type",
                   "user_id", "app_id", "cluster_id")


class BasicProperties:
    """Message properties with pika's names. Unset fields read as None.

    Only the fields that are set live in the instance dict (the class holds the None
    defaults): `__init__` and `__setattr__` keep None out of it and store a `DeliveryMode` as
    its number. So the wire map is a copy of that dict (`to_wire`), which keeps publishing
    with properties on `basic_publish`'s fast path.
    """

    content_type = content_encoding = headers = delivery_mode = priority = None
    correlation_id = reply_to = expiration = message_id = timestamp = type = None
    user_id = app_id = cluster_id = None

    def __init__(self, content_type=None, content_encoding=None, headers=None, delivery_mode=None,
                 priority=None, correlation_id=None, reply_to=None, expiration=None, message_id=None,
                 timestamp=None, type=None, user_id=None, app_id=None, cluster_id=None):
        # One test per field (a loop over locals() cost a microsecond per message).
        d = self.__dict__
        if content_type is not None:
            d["content_type"] = content_type
        if content_encoding is not None:
            d["content_encoding"] = content_encoding
        if headers is not None:
            d["headers"] = headers
        if delivery_mode is not None:
            d["delivery_mode"] = delivery_mode.value if isinstance(delivery_mode, DeliveryMode) else delivery_mode
        if priority is not None:
            d["priority"] = priority
        if correlation_id is not None:
            d["correlation_id"] = correlation_id
        if reply_to is not None:
            d["reply_to"] = reply_to
        if expiration is not None:
            d["expiration"] = expiration
        if message_id is not None:
            d["message_id"] = message_id
        if timestamp is not None:
            d["timestamp"] = timestamp
        if type is not None:
            d["type"] = type
        if user_id is not None:
            d["user_id"] = user_id
        if app_id is not None:
            d["app_id"] = app_id
        if cluster_id is not None:
            d["cluster_id"] = cluster_id

    def __setattr__(self, name, value):
        if value is None:
            self.__dict__.pop(name, None)
        else:
            if isinstance(value, DeliveryMode):
                value = value.value
            self.__dict__[name] = value

    NAME = "BasicProperties"

    def to_wire(self) -> dict | None:
        """The wire map: only the set fields (None when nothing is set)."""
        d = self.__dict__
        return d.copy() if d else None

    @classmethod
    def from_wire(cls, fields):
        props = object.__new__(cls)
        if fields:
            d = props.__dict__
            d.update(fields)
            if None in d.values():  # the map may carry explicit nils: unset, as __setattr__ keeps them
                for k in [k for k, v in d.items() if v is None]:
                    del d[k]
        return props

    def __eq__(self, other):
        return isinstance(other, BasicProperties) and self.to_wire() == other.to_wire()

    def __repr__(self):
        items = [f"{k}={v!r}" for k, v in sorted(self.__dict__.items()) if v is not None]
        return f"<BasicProperties({items})>"


class _Method:
    """A method record: pika's attribute names, positional order and repr."""

    __slots__ = ()
    NAME = "?"
    synchronous = False

    def __repr__(self):
        items = [f"{k}={getattr(self, k)!r}" for k in self.__slots__]
        return f"<{self.NAME}({items})>"

    def __eq__(self, other):
        return type(other) is type(self) and all(getattr(self, k) == getattr(other, k) for k in self.__slots__)


def _method(name, fields, defaults=()):
    """Build a method class with __slots__ and an __init__ taking `fields` in pika's order."""
    ns = {"__slots__": tuple(fields), "NAME": name}
    params = ", ".join(f"{f}={d!r}" for f, d in zip(fields, list(defaults) + [None] * (len(fields) - len(defaults))))
    body = "\n".join(f"    self.{f} = {f}" for f in fields) or "    pass"
    code = f"def __init__(self, {params}):\n{body}\n" if fields else "def __init__(self):\n    pass\n"
    scope = {}
    exec(code, scope)  # a generated __init__ keeps construction as cheap as a hand-written one
    ns["__init__"] = scope["__init__"]
    return type(name.split(".")[1], (_Method,), ns)


class Basic:
    Deliver = _method("Basic.Deliver", ("consumer_tag", "delivery_tag", "redelivered", "exchange", "routing_key"),
                      (None, None, False))
    GetOk = _method("Basic.GetOk", ("delivery_tag", "redelivered", "exchange", "routing_key", "message_count"),
                    (None, False))
    GetEmpty = _method("Basic.GetEmpty", ())
    Return = _method("Basic.Return", ("reply_code", "reply_text", "exchange", "routing_key"))
    Ack = _method("Basic.Ack", ("delivery_tag", "multiple"), (0, False))
    Nack = _method("Basic.Nack", ("delivery_tag", "multiple", "requeue"), (0, False, True))
    Reject = _method("Basic.Reject", ("delivery_tag", "requeue"), (None, True))
    ConsumeOk = _method("Basic.ConsumeOk", ("consumer_tag",))
    Cancel = _method("Basic.Cancel", ("consumer_tag",))
    CancelOk = _method("Basic.CancelOk", ("consumer_tag",))
    QosOk = _method("Basic.QosOk", ())
    Properties = BasicProperties


class Queue:
    DeclareOk = _method("Queue.DeclareOk", ("queue", "message_count", "consumer_count"))
    BindOk = _method("Queue.BindOk", ())
    UnbindOk = _method("Queue.UnbindOk", ())
    PurgeOk = _method("Queue.PurgeOk", ("message_count",))
    DeleteOk = _method("Queue.DeleteOk", ("message_count",))


class Exchange:
    DeclareOk = _method("Exchange.DeclareOk", ())
    DeleteOk = _method("Exchange.DeleteOk", ())
    BindOk = _method("Exchange.BindOk", ())
    UnbindOk = _method("Exchange.UnbindOk", ())


class Confirm:
    SelectOk = _method("Confirm.SelectOk", ())


class Channel:
    OpenOk = _method("Channel.OpenOk", ())
    CloseOk = _method("Channel.CloseOk", ())
