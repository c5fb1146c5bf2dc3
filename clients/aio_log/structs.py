"""The value types of the aiokafka-style clients, shaped like aiokafka.structs.

`TopicPartition` is a namedtuple (topic, partition), usable as a dict key, as in aiokafka
(unlike confluent-kafka's mutable class). `ConsumerRecord` is a tuple subclass with named
fields so that replaying a log builds one C-level tuple per record; the records of large
batches are msgspec structs made straight from the stored bytes (`_BatchConsumerRecord`) with
the same attributes.
"""

from collections import namedtuple

import msgspec

from ..log.message import RecordClass

TopicPartition = namedtuple("TopicPartition", ["topic", "partition"])
OffsetAndMetadata = namedtuple("OffsetAndMetadata", ["offset", "metadata"])
OffsetAndTimestamp = namedtuple("OffsetAndTimestamp", ["offset", "timestamp"])
RecordMetadata = namedtuple("RecordMetadata", ["topic", "partition", "topic_partition", "offset", "timestamp",
                                               "timestamp_type", "log_start_offset"])

_ConsumerRecordBase = namedtuple("ConsumerRecord", ["topic", "partition", "offset", "timestamp", "timestamp_type",
                                                    "key", "value", "checksum", "serialized_key_size",
                                                    "serialized_value_size", "headers"])


class ConsumerRecord(_ConsumerRecordBase, metaclass=RecordClass):
    __slots__ = ()


class _BatchConsumerRecord(msgspec.Struct, array_like=True, gc=False, eq=False):
    """A ConsumerRecord of a large batch, built by msgspec straight from the batch's msgpack
    body (the confluent-style consumer's records are made the same way: clients/log/message.py,
    `_BatchRecord`). Each stored `[offset_delta, timestamp_delta, key, value, headers]` array
    becomes one object in C; the batch's topic, partition, base offset and first timestamp are
    class attributes of a subclass made for the batch (`batch_record_class`). It has every
    attribute of aiokafka's ConsumerRecord (a dataclass: attributes, compared by value), and
    compares and hashes equal to the namedtuple `ConsumerRecord` (small batches) of the same
    fields; unlike that one it is not a tuple."""

    od: int
    td: int
    key: bytes | None
    value: bytes | None
    h: tuple[tuple[str, bytes | None], ...] | None

    topic = None
    partition = -1
    timestamp_type = 0
    checksum = None
    _b = 0
    _f = 0

    @property
    def offset(self):
        return self._b + self.od

    @property
    def timestamp(self):
        return self._f + self.td

    @property
    def serialized_key_size(self):
        k = self.key
        return -1 if k is None else len(k)

    @property
    def serialized_value_size(self):
        v = self.value
        return -1 if v is None else len(v)

    @property
    def headers(self):
        return self.h or ()

    def _fields(self) -> tuple:
        return (self.topic, self.partition, self._b + self.od, self._f + self.td, 0, self.key, self.value, None,
                self.serialized_key_size, self.serialized_value_size, self.h or ())

    def __eq__(self, other):
        if isinstance(other, (_BatchConsumerRecord, ConsumerRecord)):
            return self._fields() == (other._fields() if isinstance(other, _BatchConsumerRecord) else tuple(other))
        return NotImplemented

    def __hash__(self):
        # Equal to the namedtuple ConsumerRecord of the same fields, so hashed as it is.
        return hash(self._fields())

    def __repr__(self):
        return "ConsumerRecord(topic=%r, partition=%r, offset=%r, timestamp=%r, timestamp_type=%r, key=%r, " \
               "value=%r, checksum=%r, serialized_key_size=%r, serialized_value_size=%r, headers=%r)" % self._fields()

    def __reduce__(self):
        return (ConsumerRecord._make, (self._fields(),))


ConsumerRecord._also_instances = _BatchConsumerRecord


def batch_record_class(topic, partition, base_offset, first_timestamp):
    return type("ConsumerRecord", (_BatchConsumerRecord,), {"topic": topic, "partition": partition,
                                                           "_b": base_offset, "_f": first_timestamp})
