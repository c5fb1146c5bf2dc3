"""The record accumulator: a producer's records waiting to be sent, per topic and partition.

Both log producers (`clients/log/producer.py`, blocking, and `clients/aio_log/producer.py`,
asyncio) keep their unsent records here, and this module knows nothing of sockets, event
loops, deadlines or delivery reports:

- `OpenBatch`: one partition's records, as wire-ready rows; the one builder
  (`clients/record_batch.BatchBuilder`) plus the topic and partition it goes to. Each producer
  subclasses it with what its own I/O needs (a linger deadline and callbacks, or a future and
  a timer handle).
- `TopicBatches`: one topic's partition count, the open batch of each partition, and the
  sticky partition keyless records join (Kafka's KIP-480): `current` is that partition's open
  batch, the one a plain `produce(topic, value)` appends to.
- `RecordAccumulator`: every topic's `TopicBatches` (`topics`) and every open batch oldest
  first (`open`: the first is the next to reach its linger time). `opened()` files a new
  batch, `closing()` takes a full or due batch out and moves the sticky partition on;
  `sent_alone()` moves it on for a record a linger-0 producer sent as a batch of its own.
"""

from ..record_batch import RECORD_OVERHEAD, BatchBuilder, record_size
from .partitioner import RANDOM, pick_sticky

__all__ = ["OpenBatch", "RecordAccumulator", "TopicBatches", "RECORD_OVERHEAD", "record_size"]


class OpenBatch(BatchBuilder):
    """Records of one topic-partition not yet sent: append them, then `pack()` the batch."""

    __slots__ = ("topic", "partition")

    def __init__(self, topic, partition: int):
        BatchBuilder.__init__(self)
        self.topic = topic
        self.partition = partition


class TopicBatches:
    """One topic in the accumulator: its open batch per partition and its sticky partition."""

    __slots__ = ("name", "num_partitions", "batches", "sticky", "fixed", "current", "max_batch")

    def __init__(self, name: str, num_partitions: int, null_partition: int = RANDOM, max_batch: int = 1_000_000):
        self.name = name
        self.num_partitions = num_partitions
        self.max_batch = max_batch  # bytes a batch may reach: the topic's max.message.bytes and the producer's
        self.batches = [None] * num_partitions
        # Keyless records go to the sticky partition, which moves when its batch closes --
        # unless the partitioner maps them all to one partition (`consistent`, `murmur2`...).
        self.fixed = null_partition != RANDOM
        self.sticky = null_partition if self.fixed else pick_sticky(num_partitions, None)
        self.current = None  # the open batch of the sticky partition: keyless records go here


class RecordAccumulator:
    """A producer's open batches: by topic and partition (`topics`), and oldest first (`open`)."""

    __slots__ = ("topics", "open")

    def __init__(self):
        self.topics: dict[str, TopicBatches] = {}
        self.open: list[tuple[TopicBatches, OpenBatch]] = []

    def add_topic(self, name: str, num_partitions: int, null_partition: int = RANDOM,
                  max_batch: int = 1_000_000) -> TopicBatches:
        t = self.topics[name] = TopicBatches(name, num_partitions, null_partition, max_batch)
        return t

    def opened(self, t: TopicBatches, batch: OpenBatch) -> OpenBatch:
        """File a new (empty) batch as its partition's open batch; returns it."""
        t.batches[batch.partition] = batch
        if batch.partition == t.sticky:
            t.current = batch
        self.open.append((t, batch))
        return batch

    def closing(self, t: TopicBatches, batch: OpenBatch) -> bool:
        """Take `batch` out (it is full or due); False if it was not open (closed already).

        When it was the sticky partition's batch, keyless records move to another partition
        (at random, not this one), joining that partition's open batch if it has one.
        """
        if t.batches[batch.partition] is not batch:
            return False
        t.batches[batch.partition] = None
        if t.current is batch:
            t.current = None
        opened = self.open
        for i, (_, b) in enumerate(opened):  # the oldest, nearly always
            if b is batch:
                del opened[i]
                break
        if t.sticky == batch.partition and t.num_partitions > 1 and not t.fixed:
            self.sent_alone(t, batch.partition)
        return True

    def sent_alone(self, t: TopicBatches, partition: int) -> None:
        """A batch of `partition` left without being open here (a linger-0 producer's record
        sent alone): keyless records move on from it as when its open batch closes."""
        if t.sticky == partition and t.num_partitions > 1 and not t.fixed:
            t.sticky = pick_sticky(t.num_partitions, partition)
            nxt = t.batches[t.sticky]
            if nxt is not None:
                t.current = nxt

    def records(self) -> int:
        """Records in open batches."""
        return sum(len(b.rows) for _, b in self.open)
