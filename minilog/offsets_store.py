"""Committed consumer-group offsets, kept durably in the log itself (`__consumer_offsets`).

As in Kafka, a commit is a record appended to an internal topic, `__consumer_offsets`
(one partition here: one broker, no need to spread the groups; `cleanup.policy=compact`).
Each record is

    key   = msgpack [group_id, topic, partition]
    value = msgpack {"offset": int, "metadata": str, "timestamp": ms}   (nil: the commit was deleted)

`OffsetsStore` keeps the latest value per key in a dict for reads. On start `load()` replays
the topic from its start and keeps the last record per key (what log compaction would keep),
so a restart rebuilds exactly the committed offsets. Retention never deletes commits; the
storage engine's cleaner (`minilog/storage/cleaner.py`) compacts the topic's sealed segments
to the last record per key, leaving offset gaps the replay skips over (it continues from each
record's offset + 1, never by counting).

This module knows the record layout and the replay; whether a commit is allowed (generation,
member) is the group coordinator's (`minilog/group_coordinator.py`), and durability (waiting
for the fsync) is the core's (`minilog/broker.py` with `minilog/group_commit.py`).
"""

from __future__ import annotations

import logging
import time

import msgpack

from clients.record_batch import build_batch, decode_batch, iter_batches

log = logging.getLogger("minilog.offsets_store")

OFFSETS_TOPIC = "__consumer_offsets"
# As Kafka: compacted, never deleted by age or size. Its own max.message.bytes so a small
# server-wide default cannot refuse a commit of many partitions; flush policy stays the
# server's (commits wait for the group-commit fsync anyway). segment.bytes is Kafka's
# offsets.topic.segment.bytes: only sealed segments are compacted, so it bounds what piles up.
DEFAULT_OFFSETS_SEGMENT_BYTES = 64 * 1024 * 1024
OFFSETS_TOPIC_CONFIG = {"cleanup.policy": "compact", "retention.ms": -1, "retention.bytes": -1,
                        "segment.bytes": DEFAULT_OFFSETS_SEGMENT_BYTES, "max.message.bytes": 16 * 1024 * 1024}
_REPLAY_CHUNK = 4 * 1024 * 1024


class CommittedOffset(tuple):
    """(offset, metadata, timestamp) of one committed position."""

    __slots__ = ()

    def __new__(cls, offset: int, metadata: str, timestamp: int):
        return tuple.__new__(cls, (offset, metadata, timestamp))

    offset = property(lambda self: self[0])
    metadata = property(lambda self: self[1])
    timestamp = property(lambda self: self[2])


class OffsetsStore:
    def __init__(self, log_manager, segment_bytes: int = DEFAULT_OFFSETS_SEGMENT_BYTES):
        self._logs = log_manager
        self._config = dict(OFFSETS_TOPIC_CONFIG, **{"segment.bytes": segment_bytes})
        self._log = None
        # group_id -> {(topic, partition): CommittedOffset}
        self._offsets: dict[str, dict[tuple[str, int], CommittedOffset]] = {}

    @property
    def log(self):
        return self._log

    def load(self) -> int:
        """Open (creating) the offsets topic and replay it; returns the records read."""
        self._log = self._logs.create_log(OFFSETS_TOPIC, 0, self._config)
        plog = self._log
        offset = plog.log_start_offset
        end = plog.log_end_offset
        count = 0
        while offset < end:
            data = plog.read_bytes(offset, _REPLAY_CHUNK)
            if not data:
                break
            for _h, view in iter_batches(data, validate_crc=False):
                _, records = decode_batch(view, verify=False)
                for rec_offset, _ts, key, value, _headers in records:
                    if rec_offset < offset:
                        continue
                    self._apply(key, value)
                    count += 1
                    offset = rec_offset + 1
        log.info("replayed %d offset commits of %d groups", count, len(self._offsets))
        return count

    def _apply(self, key: bytes, value: bytes | None) -> None:
        try:
            group, topic, partition = msgpack.unpackb(key)
            if value is None:
                group_offsets = self._offsets.get(group)
                if group_offsets is not None:
                    group_offsets.pop((topic, partition), None)
                    if not group_offsets:
                        del self._offsets[group]
                return
            v = msgpack.unpackb(value)
            self._offsets.setdefault(group, {})[(topic, partition)] = CommittedOffset(
                v["offset"], v.get("metadata") or "", v.get("timestamp", 0))
        except Exception as exc:  # one bad record must not stop the others from loading
            log.error("skipping unreadable offset commit record: %s", exc)

    def commit(self, group_id: str, offsets) -> int:
        """Append commits `[(topic, partition, offset, metadata)]` as one batch; returns the offset
        the offsets log must be flushed to for them to be durable. Raises OSError from storage."""
        now = time.time_ns() // 1_000_000
        records = []
        for topic, partition, offset, metadata in offsets:
            key = msgpack.packb([group_id, topic, partition])
            value = msgpack.packb({"offset": offset, "metadata": metadata or "", "timestamp": now})
            records.append((key, value, now, None))
        info = self._log.append(build_batch(records, timestamp=now))
        group_offsets = self._offsets.setdefault(group_id, {})
        for topic, partition, offset, metadata in offsets:
            group_offsets[(topic, partition)] = CommittedOffset(offset, metadata or "", now)
        return info.last_offset + 1

    def delete_topic(self, topic: str) -> int | None:
        """Forget every group's commits on `topic` (tombstones); returns the offset to flush to, if any."""
        records = []
        now = time.time_ns() // 1_000_000
        for group, group_offsets in list(self._offsets.items()):
            for (t, p) in [k for k in group_offsets if k[0] == topic]:
                records.append((msgpack.packb([group, t, p]), None, now, None))
                del group_offsets[(t, p)]
            if not group_offsets:
                del self._offsets[group]
        if not records:
            return None
        return self._log.append(build_batch(records, timestamp=now)).last_offset + 1

    def delete_group(self, group_id: str) -> int | None:
        """Forget every commit of `group_id` (tombstones); returns the offset to flush to, if any."""
        group_offsets = self._offsets.pop(group_id, None)
        if not group_offsets:
            return None
        now = time.time_ns() // 1_000_000
        records = [(msgpack.packb([group_id, t, p]), None, now, None) for (t, p) in group_offsets]
        return self._log.append(build_batch(records, timestamp=now)).last_offset + 1

    def fetch(self, group_id: str, topic: str, partition: int) -> CommittedOffset | None:
        group_offsets = self._offsets.get(group_id)
        return None if group_offsets is None else group_offsets.get((topic, partition))

    def group_offsets(self, group_id: str) -> dict[tuple[str, int], CommittedOffset]:
        return dict(self._offsets.get(group_id, {}))

    def groups(self) -> list[str]:
        return sorted(self._offsets)
