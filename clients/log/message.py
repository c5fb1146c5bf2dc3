"""Message: what `Consumer.poll()`/`consume()` return and delivery callbacks receive.

confluent-kafka's Message is read through methods (`value()`, `offset()`...). Replaying a log
creates one per record, so the class is a tuple subclass: creating one is a single C-level
tuple allocation from the fields the fetcher already decoded, and each accessor is an index.
The field order is (topic, partition, offset, timestamp, key, value, headers, error).
"""

import msgpack

from ..record_batch import BatchError
from .errors import KafkaError
from .fetch_session import CORRUPT, RecordBuilder

TIMESTAMP_NOT_AVAILABLE = 0
TIMESTAMP_CREATE_TIME = 1
TIMESTAMP_LOG_APPEND_TIME = 2

_new = tuple.__new__


class Message(tuple):
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


class _BatchRecord(Message):
    """A record exactly as msgpack decoded it, `(offset_delta, timestamp_delta, key, value, headers)`.

    The consumer decodes a large batch with `msgpack.unpackb(..., list_hook=cls)` where `cls`
    is a subclass made for that batch (`batch_record_class`) carrying the topic, partition,
    base offset and first timestamp as class attributes. msgpack then builds every Message in
    C, with no Python loop over the records; the accessors add the batch's base values.
    """

    __slots__ = ()
    _t = None
    _p = -1
    _b = 0
    _f = 0

    def topic(self):
        return self._t

    def partition(self):
        return self._p

    def offset(self):
        return self._b + self[0]

    def timestamp(self):
        return (TIMESTAMP_CREATE_TIME, self._f + self[1])

    def key(self):
        return self[2]

    def value(self):
        return self[3]

    def headers(self):
        h = self[4]
        return None if h is None else [(x[0], x[1]) for x in h]

    def error(self):
        return None

    def __len__(self):
        v = self[3]
        return 0 if v is None else len(v)

    def __repr__(self):
        return (f"Message(topic={self._t!r}, partition={self._p}, offset={self._b + self[0]}, key={self[2]!r}, "
                f"value={self[3]!r:.60}, error=None)")

    def __reduce__(self):
        return (make_message, (self._t, self._p, self._b + self[0], self._f + self[1], self[2], self[3],
                               self.headers(), None))


def batch_record_class(topic, partition, base_offset, first_timestamp):
    return type("Message", (_BatchRecord,), {"__slots__": (), "_t": topic, "_p": partition,
                                              "_b": base_offset, "_f": first_timestamp})


# Batches with at least this many records are decoded by msgpack straight into Message objects;
# smaller ones through a list comprehension (making a class per batch costs ~10 µs).
_CLASS_PER_BATCH = 64
_unpackb = msgpack.unpackb


class MessageBuilder(RecordBuilder):
    """The fetch session's records as confluent-style Messages (clients/log/fetch_session.py)."""

    def records(self, topic, partition, header, body, offset):
        base = header.base_offset
        if header.record_count >= _CLASS_PER_BATCH:
            # msgpack builds the Message objects itself (see _BatchRecord). Arrays decode to
            # tuples first: the hook copies a tuple into the subclass cheaper than a list.
            cls = batch_record_class(topic, partition, base, header.first_timestamp)
            raw = _unpackb(body, use_list=False, list_hook=cls)
            # The outer array became a cls too; its real length must be the header's count
            # (a batch stored by a broker that did not check bodies may lie).
            if tuple.__len__(raw) != header.record_count:
                raise BatchError(f"batch at offset {base} claims {header.record_count} records, "
                                 f"holds {tuple.__len__(raw)}")
            return raw if base >= offset else raw[offset - base:]
        first = header.first_timestamp
        raw = _unpackb(body, use_list=False)
        if base >= offset:
            return [_new(Message, (topic, partition, base + od, first + td, k, v, hd, None))
                    for od, td, k, v, hd in raw]
        # The batch starts before the offset asked for: skip its head.
        return [_new(Message, (topic, partition, base + od, first + td, k, v, hd, None))
                for od, td, k, v, hd in raw if base + od >= offset]

    def next_offset(self, message) -> int:
        return message.offset() + 1

    def event(self, event):
        code = KafkaError._BAD_MSG if event.kind == CORRUPT else KafkaError._PARTITION_EOF
        return error_message(KafkaError(code, event.text), event.topic, event.partition, event.offset)
