"""confluent-kafka style blocking clients for minilog: `from clients.log import Producer, Consumer, ...`.

A program written for confluent-kafka runs against minilog after changing only its import
line. The pieces: `producer.py` (batching, pipelining) over `accumulator.py` (the record
accumulator, shared with the asyncio producer), `consumer.py` (prefetching fetcher, offsets),
`group.py` (consumer-group membership) over `group_protocol.py`, `assignors.py`,
`partitioner.py` (librdkafka's partitioners; `consistent_random`, CRC32, by default),
`connection.py`, `config.py`, `admin.py`, `message.py`, `errors.py`, `topic_partition.py`.
"""

from .admin import (AdminClient, BrokerMetadata, ClusterMetadata, ConsumerGroupDescription, ConsumerGroupState,
                    NewTopic, PartitionMetadata, TopicMetadata)
from .consumer import Consumer
from .errors import KafkaError, KafkaException
from .message import TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME, TIMESTAMP_NOT_AVAILABLE, Message
from .producer import Producer
from .topic_partition import OFFSET_BEGINNING, OFFSET_END, OFFSET_INVALID, OFFSET_STORED, TopicPartition

__all__ = [
    "AdminClient", "BrokerMetadata", "ClusterMetadata", "Consumer", "ConsumerGroupDescription",
    "ConsumerGroupState", "KafkaError", "KafkaException", "Message", "NewTopic", "OFFSET_BEGINNING",
    "OFFSET_END", "OFFSET_INVALID", "OFFSET_STORED", "PartitionMetadata", "Producer",
    "TIMESTAMP_CREATE_TIME", "TIMESTAMP_LOG_APPEND_TIME", "TIMESTAMP_NOT_AVAILABLE", "TopicMetadata",
    "TopicPartition",
]
