"""Message: what `Consumer.poll()`/`consume()` return and delivery callbacks receive.

confluent-kafka's Message is read through methods (`value()`, `offset()`...). Replaying a log
creates one per record, so making one must cost next to nothing. Two classes carry the same
methods: `Message`, a tuple subclass (topic, partition, offset, timestamp, key, value, headers,
error) for delivery reports, errors and records of small batches, one C-level tuple allocation
each; and the records of large batches, built by msgspec straight from the stored bytes
(`_BatchRecord`, below).
"""

import msgpack
import msgspec

from ..record_batch import BatchError
from .errors import KafkaError
from .fetch_session import CORRUPT, RecordBuilder

TIMESTAMP_NOT_AVAILABLE = 0
TIMESTAMP_CREATE_TIME = 1
TIMESTAMP_LOG_APPEND_TIME = 2

_new = tuple.__new__


class RecordClass(type):
    """The metaclass of a record type whose large-batch records are another class.

    Records of large batches are msgspec structs (`_BatchRecord` here, the aiokafka-style
    `_BatchConsumerRecord`), which cannot subclass a tuple. A program that checks
    `isinstance(msg, Message)`, as code written against confluent-kafka may, must see both kinds
    as the class it imported: the class names its struct kind in `_also_instances`. The check of
    an exact tuple instance stays C's own fast path; only the struct kind reaches this method.
    """

    def __instancecheck__(cls, obj):
        return type.__instancecheck__(cls, obj) or isinstance(obj, cls.__dict__.get("_also_instances", ()))


class Message(tuple, metaclass=RecordClass):
    __slots__ = ()

    def topic(self):
        return self[0]

    def partition(self):
        return self[1]

    def offset(self):
        return self[2]

    def timestamp(self):
        ts = self[3]
        return (TIMESTAMP_NOT_AVAILABLE, -1) if ts is None or ts < 0 else (TIMESTAMP_CREATE_TIME, ts)

    def key(self):
        return self[4]

    def value(self):
        return self[5]

    def headers(self):
        h = self[6]
        return None if h is None else [(x[0], x[1]) for x in h]

    def error(self):
        return self[7]

    def latency(self):
        return None

    def leader_epoch(self):
        return None

    def __len__(self):
        v = self[5]
        return 0 if v is None else len(v)

    def set_value(self, value):
        raise TypeError("minilog Message objects are immutable; build a new one instead")

    def __repr__(self):
        return (f"Message(topic={self[0]!r}, partition={self[1]}, offset={self[2]}, key={self[4]!r}, "
                f"value={self[5]!r:.60}, error={self[7]!r})")


def make_message(topic, partition, offset, timestamp, key, value, headers=None, error=None) -> Message:
    return _new(Message, (topic, partition, offset, timestamp, key, value, headers, error))


def error_message(error, topic=None, partition=-1, offset=-1001) -> Message:
    """A Message that only carries an error (partition EOF, a fetch failure)."""
    return _new(Message, (topic, partition, offset, None, None, None, None, error))


class _BatchRecord(msgspec.Struct, array_like=True, gc=False, eq=False):
    """A record of a large batch, built by msgspec straight from the batch's msgpack body.

    The stored record is `[offset_delta, timestamp_delta, key, value, headers]`; msgspec
    decodes each such array into one of these (`array_like`) in C, one allocation per record:
    no intermediate tuple, no Python code per record. `gc=False`: a record holds bytes, ints
    and None (headers: lists of str and bytes), never a cycle, so the collector need not track
    it. The batch's topic, partition, base offset and first timestamp are class attributes of
    a subclass made for the batch (`batch_record_class`), and the accessors add them. Like
    confluent-kafka's Message (a C type without comparisons) two records are equal only if
    they are the same object.
    """

    od: int
    td: int
    k: bytes | None
    v: bytes | None
    h: object   # nil or [[str, bin | nil], ...] (the broker checked it); headers() makes tuples

    _t = None
    _p = -1
    _b = 0
    _f = 0

    def topic(self):
        return self._t

    def partition(self):
        return self._p

    def offset(self):
        return self._b + self.od

    def timestamp(self):
        return (TIMESTAMP_CREATE_TIME, self._f + self.td)

    def key(self):
        return self.k

    def value(self):
        return self.v

    def headers(self):
        h = self.h
        return None if h is None else [(x[0], x[1]) for x in h]

    def error(self):
        return None

    def latency(self):
        return None

    def leader_epoch(self):
        return None

    def set_value(self, value):
        raise TypeError("minilog Message objects are immutable; build a new one instead")

    def __len__(self):
        v = self.v
        return 0 if v is None else len(v)

    def __repr__(self):
        return (f"Message(topic={self._t!r}, partition={self._p}, offset={self._b + self.od}, key={self.k!r}, "
                f"value={self.v!r:.60}, error=None)")

    def __reduce__(self):
        return (make_message, (self._t, self._p, self._b + self.od, self._f + self.td, self.k, self.v,
                               self.headers(), None))


Message._also_instances = _BatchRecord


def batch_record_class(topic, partition, base_offset, first_timestamp):
    return type("Message", (_BatchRecord,), {"_t": topic, "_p": partition, "_b": base_offset,
                                              "_f": first_timestamp})


# Batches with at least this many records are decoded by msgspec straight into records of a
# class made for the batch; smaller ones through a list comprehension (making a class and its
# decoder per batch costs ~11 µs).
_CLASS_PER_BATCH = 64
_unpackb = msgpack.unpackb
_Decoder = msgspec.msgpack.Decoder


class MessageBuilder(RecordBuilder):
    """The fetch session's records as confluent-style Messages (clients/log/fetch_session.py)."""

    def records(self, topic, partition, header, body, offset):
        base = header.base_offset
        if header.record_count >= _CLASS_PER_BATCH:
            cls = batch_record_class(topic, partition, base, header.first_timestamp)
            raw = _Decoder(list[cls]).decode(body)
            # Its length must be the header's count (a batch stored by a broker that did not
            # check bodies may lie).
            if len(raw) != header.record_count:
                raise BatchError(f"batch at offset {base} claims {header.record_count} records, "
                                 f"holds {len(raw)}")
            return raw if base >= offset else raw[offset - base:]
        first = header.first_timestamp
        raw = _unpackb(body, use_list=False)
        if len(raw) == 1:
            # One record (a producer with linger.ms 0 sends each alone): no comprehension.
            od, td, k, v, hd = raw[0]
            if base + od < offset:
                return []
            return [_new(Message, (topic, partition, base + od, first + td, k, v, hd, None))]
        if base >= offset:
            return [_new(Message, (topic, partition, base + od, first + td, k, v, hd, None))
                    for od, td, k, v, hd in raw]
        # The batch starts before the offset asked for: skip its head.
        return [_new(Message, (topic, partition, base + od, first + td, k, v, hd, None))
                for od, td, k, v, hd in raw if base + od >= offset]

    def next_offset(self, message) -> int:
        # A Message (a small batch's record) holds its offset third: read it without a call.
        return message[2] + 1 if message.__class__ is Message else message.offset() + 1

    def event(self, event):
        code = KafkaError._BAD_MSG if event.kind == CORRUPT else KafkaError._PARTITION_EOF
        return error_message(KafkaError(code, event.text), event.topic, event.partition, event.offset)
