"""minilog's storage engine: a partition's log as segment files, with no network in it.

Public API (what the server uses):

* :class:`LogManager` (``log_manager.py``): the data directory of
  ``<topic>-<partition>`` logs, topic configs, periodic ``tick``.
* :class:`PartitionLog` (``log.py``): append, read by offset (as file slices
  or bytes) or by time, flush (whole, or split: prepare_flush / FlushPlan.sync /
  complete_flush), offsets.
* :class:`LogConfig` (``config.py``): settings under Kafka's names.
* :class:`FileSlice` (``segment.py``): (fd, position, length) for os.sendfile.
* compaction of ``cleanup.policy=compact`` logs: ``cleaner.py`` (run by ``LogManager.tick``).

The record batch format itself lives in ``clients/record_batch.py``.
"""

from .config import InvalidConfigError, LogConfig
from .log import AppendInfo, LogClosedError, OffsetLostError, OffsetOutOfRangeError, PartitionLog, RecordTooLargeError
from .log_manager import LogManager, UnknownTopicOrPartitionError
from .retention import apply_retention
from .segment import FileSlice, LogSegment, SegmentWriteError

__all__ = [
    "AppendInfo",
    "FileSlice",
    "InvalidConfigError",
    "LogClosedError",
    "LogConfig",
    "LogManager",
    "LogSegment",
    "OffsetLostError",
    "OffsetOutOfRangeError",
    "PartitionLog",
    "RecordTooLargeError",
    "SegmentWriteError",
    "UnknownTopicOrPartitionError",
    "apply_retention",
]
