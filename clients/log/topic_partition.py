"""TopicPartition and the logical offsets (OFFSET_BEGINNING...), as confluent-kafka spells them.

A TopicPartition names one partition of a topic and optionally carries an offset (to seek to,
to commit, or as returned by `committed()`/`position()`), an error and metadata. The logical
offsets are the negative numbers librdkafka uses, so code that compares against them works.
"""

OFFSET_BEGINNING = -2
OFFSET_END = -1
OFFSET_STORED = -1000
OFFSET_INVALID = -1001


class TopicPartition:
    __slots__ = ("topic", "partition", "offset", "metadata", "leader_epoch", "error")

    def __init__(self, topic, partition=-1, offset=OFFSET_INVALID, metadata=None, leader_epoch=None):
        if not isinstance(topic, str):
            raise TypeError(f"TopicPartition topic must be a str, got {type(topic).__name__}")
        self.topic = topic
        self.partition = int(partition)
        self.offset = int(offset)
        self.metadata = metadata
        self.leader_epoch = leader_epoch
        self.error = None

    def __eq__(self, other):
        if not isinstance(other, TopicPartition):
            return NotImplemented
        return (self.topic, self.partition) == (other.topic, other.partition)

    def __lt__(self, other):
        return (self.topic, self.partition) < (other.topic, other.partition)

    def __hash__(self):
        return hash((self.topic, self.partition))

    def __repr__(self):
        err = "None" if self.error is None else repr(self.error)
        return f"TopicPartition{{topic={self.topic},partition={self.partition},offset={self.offset},error={err}}}"

    __str__ = __repr__
