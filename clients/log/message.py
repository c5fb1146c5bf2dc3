"""Message: what `Consumer.poll()`/`consume()` return and delivery callbacks receive.

confluent-kafka's Message is read through methods (`value()`, `offset()`...). Replaying a log
creates one per record, so the class is a tuple subclass: creating one is a single C-level
tuple allocation from the fields the fetcher already decoded, and each accessor is an index.
The field order is (topic, partition, offset, timestamp, key, value, headers, error).
"""

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
        return None if h is None else [tuple(x) for x in h]

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
