"""The value types of the aiokafka-style clients, shaped like aiokafka.structs.

`TopicPartition` is a namedtuple (topic, partition), usable as a dict key, as in aiokafka
(unlike confluent-kafka's mutable class). `ConsumerRecord` is a tuple subclass with named
fields so that replaying a log builds one C-level tuple per record.
"""

from collections import namedtuple

TopicPartition = namedtuple("TopicPartition", ["topic", "partition"])
OffsetAndMetadata = namedtuple("OffsetAndMetadata", ["offset", "metadata"])
OffsetAndTimestamp = namedtuple("OffsetAndTimestamp", ["offset", "timestamp"])
RecordMetadata = namedtuple("RecordMetadata", ["topic", "partition", "topic_partition", "offset", "timestamp",
                                               "timestamp_type", "log_start_offset"])

_ConsumerRecordBase = namedtuple("ConsumerRecord", ["topic", "partition", "offset", "timestamp", "timestamp_type",
                                                    "key", "value", "checksum", "serialized_key_size",
                                                    "serialized_value_size", "headers"])


class ConsumerRecord(_ConsumerRecordBase):
    __slots__ = ()
