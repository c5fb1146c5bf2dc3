"""Retention: which old segments of a partition log to delete, by age and by size.

Holds the policy only; :meth:`PartitionLog.delete_oldest_segments` (``log.py``)
does the deleting, moves the log start offset and checkpoints it. Both rules
delete a prefix of the log (oldest first) and never the active segment, as in
Kafka:

* time: a segment goes when its newest record (its max timestamp) is older
  than ``retention.ms``;
* size: the oldest segments go while the partition is larger than
  ``retention.bytes`` by at least their size.

Only logs whose ``cleanup.policy`` contains ``delete`` are touched. Compaction
(``cleanup.policy=compact``: keep the last record per key) is a later issue; its
Cleaner will sit beside this module and rewrite sealed segments rather than
delete them.
"""

from __future__ import annotations

from .log import PartitionLog


def expired_by_time(log: PartitionLog, now_ms: int) -> int:
    """Number of oldest segments whose records are all older than retention.ms."""
    retention_ms = log.config.retention_ms
    if retention_ms is None:
        return 0
    count = 0
    for segment in log.segments[:-1]:
        if now_ms - segment.max_timestamp <= retention_ms:
            break
        count += 1
    return count


def expired_by_size(log: PartitionLog) -> int:
    """Number of oldest segments to drop so the log is no larger than retention.bytes."""
    retention_bytes = log.config.retention_bytes
    if retention_bytes is None:
        return 0
    excess = log.size_bytes - retention_bytes
    count = 0
    for segment in log.segments[:-1]:
        if excess < segment.size:
            break
        excess -= segment.size
        count += 1
    return count


def apply_retention(log: PartitionLog, now_ms: int) -> int:
    """Delete what retention allows; returns the number of segments deleted."""
    if not log.config.deletes:
        return 0
    deleted = 0
    by_time = expired_by_time(log, now_ms)
    if by_time:
        deleted += log.delete_oldest_segments(by_time, f"older than retention.ms={log.config.retention_ms}", now_ms)
    by_size = expired_by_size(log)
    if by_size:
        deleted += log.delete_oldest_segments(by_size, f"over retention.bytes={log.config.retention_bytes}", now_ms)
    return deleted
