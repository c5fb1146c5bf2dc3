"""aiokafka-style asyncio clients for minilog: `from clients.aio_log import AIOKafkaProducer, AIOKafkaConsumer`.

`producer.py` batches per partition and pipelines produce requests; `consumer.py` prefetches
and runs the group protocol in background tasks. The partitioner, assignors and record batch
layout are shared with the blocking clients in `clients/log/`.
"""

from .consumer import AIOConsumer, AIOKafkaConsumer, ConsumerRebalanceListener
from .errors import (CommitFailedError, ConsumerStoppedError, IllegalStateError, KafkaConnectionError, KafkaError,
                     TopicAlreadyExistsError, UnknownTopicOrPartitionError)
from .producer import AIOKafkaProducer, AIOProducer
from .structs import ConsumerRecord, OffsetAndMetadata, OffsetAndTimestamp, RecordMetadata, TopicPartition

__all__ = [
    "AIOConsumer", "AIOKafkaConsumer", "AIOKafkaProducer", "AIOProducer", "CommitFailedError", "ConsumerRebalanceListener",
    "ConsumerRecord", "ConsumerStoppedError", "IllegalStateError", "KafkaConnectionError", "KafkaError",
    "OffsetAndMetadata", "OffsetAndTimestamp", "RecordMetadata", "TopicAlreadyExistsError", "TopicPartition",
    "UnknownTopicOrPartitionError",
]
