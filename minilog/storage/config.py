"""LogConfig: every tunable of a partition log, with its default, in one place.

Keys use Kafka's topic-config names (``segment.bytes``, ``retention.ms`` ...) so
operators can carry their habits over; :meth:`LogConfig.from_dict` accepts those
names and :meth:`LogConfig.to_dict` writes them back (that is what the topic
config JSON of ``log_manager.py`` holds). How a value is applied is left to the
modules that use it: rolling to ``log.py``, flushing to ``log.py``, deletion to
``retention.py``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
_DAY_MS = 24 * 3600 * 1000

# The offset index stores positions as u32 and Kafka caps segments at a signed int.
_MAX_SEGMENT_BYTES = 2**31 - 1


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
    file_delete_delay_ms: int = field(default=60_000, metadata={"key": "file.delete.delay.ms"})
    # How often tick() rewrites the recovery-point checkpoint (Kafka's
    # log.flush.offset.checkpoint.interval.ms); flushes themselves do not.
    checkpoint_interval_ms: int = field(default=60_000, metadata={"key": "checkpoint.interval.ms"})

    def __post_init__(self):
        def positive(name, value, minimum=1):
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise InvalidConfigError(f"{_KEY_OF[name]} must be an integer >= {minimum}, got {value!r}")

        positive("segment_bytes", self.segment_bytes, 64)
        if self.segment_bytes > _MAX_SEGMENT_BYTES:
            raise InvalidConfigError(f"segment.bytes must be <= {_MAX_SEGMENT_BYTES}, got {self.segment_bytes}")
        positive("segment_ms", self.segment_ms)
        positive("segment_index_bytes", self.segment_index_bytes, 24)
        positive("index_interval_bytes", self.index_interval_bytes, 0)
        positive("max_message_bytes", self.max_message_bytes, 40)
        positive("file_delete_delay_ms", self.file_delete_delay_ms, 0)
        positive("checkpoint_interval_ms", self.checkpoint_interval_ms)
        for name in ("retention_ms", "retention_bytes", "flush_messages", "flush_ms"):
            value = getattr(self, name)
            if value is not None:
                positive(name, value, 0)
        policies = set(self.cleanup_policy.split(","))
        if not policies or not policies <= {"delete", "compact"}:
            raise InvalidConfigError(
                f"cleanup.policy must be 'delete', 'compact' or 'delete,compact', got {self.cleanup_policy!r}")

    @property
    def deletes(self) -> bool:
        """True when retention may delete old segments (cleanup.policy contains 'delete')."""
        return "delete" in self.cleanup_policy.split(",")

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
