"""LogConfig: every tunable of a partition log, with its default, in one place.

Keys use Kafka's topic-config names (``segment.bytes``, ``retention.ms`` ...) so
operators can carry their habits over; :meth:`LogConfig.from_dict` accepts those
names and :meth:`LogConfig.to_dict` writes them back (that is what the topic
config JSON of ``log_manager.py`` holds). How a value is applied is left to the
modules that use it: rolling to ``log.py``, flushing to ``log.py``, deletion to
``retention.py``, compaction to ``cleaner.py``.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
_DAY_MS = 24 * 3600 * 1000

# The offset index stores positions as u32 and Kafka caps segments at a signed int.
_MAX_SEGMENT_BYTES = 2**31 - 1
_INT_MAX = 2**31 - 1
_LONG_MAX = 2**63 - 1
# Settings Kafka declares as INT (the others are LONG): bounded to 2**31-1, as there.
_INT_SETTINGS = frozenset({"segment_bytes", "segment_index_bytes", "index_interval_bytes", "max_message_bytes"})


# The values of message.timestamp.type, as Kafka names them.
TIMESTAMP_TYPES = ("CreateTime", "LogAppendTime")


class InvalidConfigError(ValueError):
    """A config key is unknown or its value is out of range."""


@dataclass(frozen=True)
class LogConfig:
    """Settings of one partition log (normally shared by all partitions of a topic).

    ``None`` for retention and flush settings means "no limit" / "never".
    """

    segment_bytes: int = field(default=1 * GiB, metadata={"key": "segment.bytes"})
    segment_ms: int = field(default=7 * _DAY_MS, metadata={"key": "segment.ms"})
    segment_index_bytes: int = field(default=10 * MiB, metadata={"key": "segment.index.bytes"})
    index_interval_bytes: int = field(default=4096, metadata={"key": "index.interval.bytes"})
    retention_ms: int | None = field(default=7 * _DAY_MS, metadata={"key": "retention.ms"})
    retention_bytes: int | None = field(default=None, metadata={"key": "retention.bytes"})
    flush_messages: int | None = field(default=None, metadata={"key": "flush.messages"})
    flush_ms: int | None = field(default=None, metadata={"key": "flush.ms"})
    max_message_bytes: int = field(default=1 * MiB + 12, metadata={"key": "max.message.bytes"})
    cleanup_policy: str = field(default="delete", metadata={"key": "cleanup.policy"})
    # CreateTime keeps the producer's timestamps; LogAppendTime stamps every record with the
    # broker's clock as it appends (the broker's append, in broker.py, rewrites the batch).
    message_timestamp_type: str = field(default="CreateTime", metadata={"key": "message.timestamp.type"})
    # Compaction (cleaner.py): clean when this share of the sealed bytes was written since
    # the last clean; drop a tombstone once its timestamp is older than delete.retention.ms.
    min_cleanable_dirty_ratio: float = field(default=0.5, metadata={"key": "min.cleanable.dirty.ratio"})
    delete_retention_ms: int = field(default=_DAY_MS, metadata={"key": "delete.retention.ms"})
    file_delete_delay_ms: int = field(default=60_000, metadata={"key": "file.delete.delay.ms"})
    # How often tick() rewrites the recovery-point checkpoint (Kafka's
    # log.flush.offset.checkpoint.interval.ms); flushes themselves do not.
    checkpoint_interval_ms: int = field(default=60_000, metadata={"key": "checkpoint.interval.ms"})

    def __post_init__(self):
        def positive(name, value, minimum=1):
            # Kafka types each setting as an int (32 bits) or a long (64 bits); so do we.
            maximum = _INT_MAX if name in _INT_SETTINGS else _LONG_MAX
            if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
                raise InvalidConfigError(f"{_KEY_OF[name]} must be an integer in [{minimum}, {maximum}], "
                                         f"got {value!r}")

        positive("segment_bytes", self.segment_bytes, 64)
        if self.segment_bytes > _MAX_SEGMENT_BYTES:
            raise InvalidConfigError(f"segment.bytes must be <= {_MAX_SEGMENT_BYTES}, got {self.segment_bytes}")
        positive("segment_ms", self.segment_ms)
        positive("segment_index_bytes", self.segment_index_bytes, 24)
        positive("index_interval_bytes", self.index_interval_bytes, 0)
        positive("max_message_bytes", self.max_message_bytes, 40)
        positive("file_delete_delay_ms", self.file_delete_delay_ms, 0)
        positive("delete_retention_ms", self.delete_retention_ms, 0)
        ratio = self.min_cleanable_dirty_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio <= 1:
            raise InvalidConfigError(f"min.cleanable.dirty.ratio must be a number in [0, 1], got {ratio!r}")
        positive("checkpoint_interval_ms", self.checkpoint_interval_ms)
        for name in ("retention_ms", "retention_bytes", "flush_messages", "flush_ms"):
            value = getattr(self, name)
            if value is not None:
                positive(name, value, 0)
        if self.message_timestamp_type not in TIMESTAMP_TYPES:
            raise InvalidConfigError(f"message.timestamp.type must be 'CreateTime' or 'LogAppendTime', "
                                     f"got {self.message_timestamp_type!r}")
        policies = set(self.cleanup_policy.split(","))
        if not policies or not policies <= {"delete", "compact"}:
            raise InvalidConfigError(
                f"cleanup.policy must be 'delete', 'compact' or 'delete,compact', got {self.cleanup_policy!r}")

    @property
    def deletes(self) -> bool:
        """True when retention may delete old segments (cleanup.policy contains 'delete')."""
        return "delete" in self.cleanup_policy.split(",")

    @functools.cached_property   # read on every append: computed once (the config never changes)
    def log_append_time(self) -> bool:
        """True when the broker stamps records with its clock (message.timestamp.type=LogAppendTime)."""
        return self.message_timestamp_type == "LogAppendTime"

    @property
    def compacts(self) -> bool:
        """True when the cleaner keeps only the last record per key (cleanup.policy contains 'compact')."""
        return "compact" in self.cleanup_policy.split(",")

    @classmethod
    def from_dict(cls, values: dict, base: "LogConfig | None" = None) -> "LogConfig":
        """Build a config from Kafka-named keys (``{"segment.bytes": 1024}``) over ``base``.

        A value of -1 for a retention or flush key means "no limit", as in Kafka.
        """
        changes = {}
        for key, value in values.items():
            name = _NAME_OF.get(key)
            if name is None:
                raise InvalidConfigError(f"unknown log config key {key!r}; known: {sorted(_NAME_OF)}")
            if value == -1 and name in _NULLABLE:
                value = None
            changes[name] = value
        return dataclasses.replace(base or cls(), **changes)

    def to_dict(self) -> dict:
        """All settings under their Kafka names (None written as -1)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.metadata["key"]] = -1 if value is None else value
        return out


_KEY_OF = {f.name: f.metadata["key"] for f in dataclasses.fields(LogConfig)}
_NAME_OF = {key: name for name, key in _KEY_OF.items()}
_NULLABLE = {"retention_ms", "retention_bytes", "flush_messages", "flush_ms"}
