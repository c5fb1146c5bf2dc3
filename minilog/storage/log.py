"""PartitionLog: one partition's log, a list of segments behind one append/read API.

This module holds what spans segments: validating incoming batches and
assigning their offsets, rolling the active segment (size, age, full index),
routing reads by offset or time to the right segment (bisect over base
offsets), the flush policy and the durable ("flushed") offset, and deleting the
oldest segments when retention asks. Opening a directory and repairing it after
a crash is ``recovery.py``; which segments retention deletes is
``retention.py``; per-segment file work is ``segment.py``.

The engine is synchronous and not thread-safe: one owner (the server's event
loop) calls it.
"""

from __future__ import annotations

import bisect
import logging
import os
import time
from collections import namedtuple

from clients.record_batch import (HEADER_SIZE, LOG_OVERHEAD, BatchHeader, InvalidBatchError, TruncatedBatchError,
                                  set_base_offset, validate, validate_records)

from .checkpoint import (LOG_START_OFFSET_FILE, RECOVERY_POINT_FILE, fsync_dir, write_offset_checkpoint)
from .config import LogConfig
from .index_file import CorruptIndexError
from .segment import MAX_RELATIVE_OFFSET, FileSlice, LogSegment

logger = logging.getLogger("minilog.storage")

CLEAN_SHUTDOWN_FILE = ".clean-shutdown"
# Page-cache drop ranges start on this boundary (see PartitionLog.prepare_flush).
_DROP_ALIGN = 2 * 1024 * 1024
# An append up to this size stays in memory as the log's tail (PartitionLog._tail): the fetch
# it wakes is answered from there, without a segment lookup or a pread. Bounded so that
# thousands of partitions hold little; a larger append is read from the page cache.
TAIL_MAX_BYTES = 16 * 1024


class OffsetOutOfRangeError(Exception):
    """The offset is below the log start offset or above the log end offset."""

    def __init__(self, offset: int, log_start_offset: int, log_end_offset: int):
        super().__init__(f"offset {offset} is outside [{log_start_offset}, {log_end_offset}]")
        self.offset = offset
        self.log_start_offset = log_start_offset
        self.log_end_offset = log_end_offset


class OffsetLostError(Exception):
    """The offset lies in a range recovery found damaged on disk and took out of the log."""

    def __init__(self, offset: int, first_offset: int, end_offset: int):
        super().__init__(f"offsets {first_offset}..{end_offset - 1} were lost to data damaged on disk; "
                         f"the log continues at {end_offset}")
        self.offset = offset
        self.first_offset = first_offset
        self.end_offset = end_offset


class RecordTooLargeError(InvalidBatchError):
    """A batch is larger than max.message.bytes."""


class LogClosedError(Exception):
    """The log was closed."""


AppendInfo = namedtuple("AppendInfo", "base_offset last_offset record_count max_timestamp")
# The append path builds each batch's header with its base offset, its tail slice and its
# AppendInfo through tuple.__new__: BatchHeader._replace costs three times as much, and a
# namedtuple's own __new__ is a Python function (a frame per call).
_new_tuple = tuple.__new__


class FlushPlan(namedtuple("FlushPlan", "end_offset files drops", defaults=((),))):
    """The fsyncs that make every offset below ``end_offset`` durable (from :meth:`PartitionLog.prepare_flush`).

    ``files`` holds file descriptors only: :meth:`sync` calls nothing but
    ``os.fsync``, so it may run on another thread while the owner keeps
    appending (the index maps are written through shared pages, which the fsync
    of their fd makes durable). The owner then calls
    :meth:`PartitionLog.complete_flush` with ``end_offset``.

    ``drops`` holds ``(fd, position, length)`` ranges of segment files written
    before the plan was made and now further behind the log end than
    :attr:`PartitionLog.drop_behind_bytes`: once the fsync has made their pages
    clean, :meth:`sync` tells the kernel to drop them from the page cache
    (``POSIX_FADV_DONTNEED``), so the next appends get those pages back instead
    of pages the machine has to provide fresh (see "Page cache behind the log
    end" in docs/minilog-storage.md).
    """

    __slots__ = ()

    def sync(self) -> None:
        for fd in self.files:
            os.fsync(fd)
        for fd, position, length in self.drops:
            try:
                os.posix_fadvise(fd, position, length, os.POSIX_FADV_DONTNEED)
            except OSError:   # advice only: the data is durable whether or not its pages go
                pass


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class PartitionLog:
    """Open with :meth:`open`; append with :meth:`append`; read with :meth:`read`."""

    def __init__(self, directory: str, config: LogConfig, segments: list[LogSegment], log_start_offset: int,
                 recovery_point: int, lost_ranges: list | None = None):
        self.directory = directory
        self.config = config
        self._segments = segments
        self._bases = [s.base_offset for s in segments]
        self._log_start_offset = log_start_offset
        self._flushed_offset = recovery_point
        self._checkpointed_recovery_point = recovery_point
        self._unflushed_messages = 0
        # Page cache behind the log end: None keeps every written page cached (as Kafka does).
        # A number N: once N bytes were appended since the last flush, a flush is asked for,
        # and each flush drops from the cache what lies more than N bytes behind the log end
        # (FlushPlan.drops). A server sets it for every log (LogManager.set_drop_behind).
        self.drop_behind_bytes: int | None = None
        self._bytes_since_flush = 0
        now = _now_ms()
        self._last_flush_ms = now
        self._last_checkpoint_ms = now
        self._pending_deletes: list[tuple[int, LogSegment]] = []
        self._closed = False
        # [(first, end)] offset ranges recovery took out as damaged (recovery.py): a read of them
        # raises OffsetLostError, and a read before one stops at it, so consumers are told.
        self._lost: list[tuple[int, int]] = list(lost_ranges or ())
        self._write_failing = False  # in a failure episode of appends (disk full): logged once
        # The last append if it was small (TAIL_MAX_BYTES): a FileSlice of it whose `data` holds
        # its bytes as written (offsets set), and its first offset. A read from that offset that
        # takes it whole (the fetch the append woke) is answered with it. Only the last append:
        # a reader further behind reads the file, and sees whatever happened to it since. A roll,
        # deleted or replaced segments, close and a failed append drop it.
        self._tail: FileSlice | None = None
        self._tail_offset = -1
        # Who runs the flushes that flush.messages and flush.ms make due. None: flush()
        # inline. A server sets a callable(log) that runs prepare_flush / FlushPlan.sync /
        # complete_flush off its event loop (minilog/group_commit.py), so an append or a
        # tick never waits for an fsync.
        self.flush_requester = None

    @classmethod
    def open(cls, directory: str, config: LogConfig | None = None) -> "PartitionLog":
        """Open (creating if needed) the partition log in ``directory``, recovering it if it crashed."""
        from .recovery import LogLoader  # recovery builds segments that this class then owns
        config = config or LogConfig()
        loaded = LogLoader(directory, config).load()
        return cls(directory, config, loaded.segments, loaded.log_start_offset, loaded.recovery_point,
                   loaded.lost_ranges)

    # -- state ------------------------------------------------------------

    @property
    def active_segment(self) -> LogSegment:
        return self._segments[-1]

    @property
    def segments(self) -> list[LogSegment]:
        """The segments, oldest first (a copy; the last one is active)."""
        return list(self._segments)

    @property
    def log_start_offset(self) -> int:
        return self._log_start_offset

    @property
    def log_end_offset(self) -> int:
        """Offset the next appended record will get."""
        return self._segments[-1].next_offset

    @property
    def high_watermark(self) -> int:
        """Readable up to here (exclusive). A single replica: everything appended is readable."""
        return self._segments[-1].next_offset

    @property
    def flushed_offset(self) -> int:
        """Every offset below this one has been fsynced."""
        return self._flushed_offset

    @property
    def lost_ranges(self) -> list[tuple[int, int]]:
        """``[(first, end)]``: offset ranges lost to damaged data on disk (see recovery.py)."""
        return list(self._lost)

    def is_flushed(self, offset: int) -> bool:
        """True once the record at ``offset`` is on disk (fsynced)."""
        return offset < self._flushed_offset

    @property
    def size_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    # -- appending ----------------------------------------------------------

    def append(self, batches, now_ms: int | None = None) -> AppendInfo:
        """Validate, assign offsets to and append one or more concatenated batches.

        ``batches`` may be bytes (copied once into a bytearray to write the
        offsets) or a bytearray/memoryview (offsets written in place). Either all
        batches are appended or, on an InvalidBatchError/CorruptBatchError/
        RecordTooLargeError, none.
        """
        if self._closed:
            raise LogClosedError(self.directory)
        if isinstance(batches, bytes):
            batches = bytearray(batches)
        data = memoryview(batches)
        if data.readonly:
            raise TypeError("append needs a writable buffer (bytearray) or bytes to copy")
        size = len(data)
        headers: list[BatchHeader] = []
        max_bytes = self.config.max_message_bytes
        pos = 0
        count = 0
        max_timestamp = -1
        while pos < size:
            if size - pos < HEADER_SIZE:
                raise TruncatedBatchError(f"{size - pos} trailing bytes after the last batch at {pos}")
            h = validate(data, pos)
            batch_size = LOG_OVERHEAD + h.length
            if batch_size > max_bytes:
                raise RecordTooLargeError(f"batch of {batch_size} bytes exceeds max.message.bytes={max_bytes}")
            # The header drives offsets, indexes and every consumer's decoding: it must match the body.
            validate_records(data, pos, h)
            headers.append(h)
            count += h.record_count
            if h.max_timestamp > max_timestamp:
                max_timestamp = h.max_timestamp
            pos += batch_size
        if not headers:
            raise InvalidBatchError("nothing to append: empty buffer")

        now = time.time_ns() // 1_000_000 if now_ms is None else now_ms   # _now_ms(), inline
        segment = self._segments[-1]
        if self._should_roll(segment, size, segment.next_offset + count, len(headers), now):
            try:
                segment = self.roll(now)
            except OSError as exc:
                self._write_failed(exc)
                raise
        first_offset = segment.next_offset
        if len(headers) == 1:   # the usual produce entry: one batch
            h = headers[0]
            set_base_offset(data, first_offset, 0)
            headers[0] = _new_tuple(BatchHeader, (first_offset, *h[1:]))   # h with its base offset set
            offset = first_offset + count
        else:
            offset = first_offset
            pos = 0
            for i, h in enumerate(headers):
                set_base_offset(data, offset, pos)
                headers[i] = _new_tuple(BatchHeader, (offset, *h[1:]))
                offset += h.record_count
                pos += LOG_OVERHEAD + h.length
        self._tail = None
        try:
            segment.append(data, headers)
        except OSError as exc:
            self._write_failed(exc)
            raise
        if size <= TAIL_MAX_BYTES:
            self._tail = _new_tuple(FileSlice, (segment.fd, segment.size - size, size, offset, data.tobytes()))
            self._tail_offset = first_offset
        if self._write_failing:
            self._write_failing = False
            logger.warning("%s: writes succeed again (offset %d)", self.directory, first_offset)

        cfg = self.config
        self._unflushed_messages += count
        self._bytes_since_flush += size
        if ((cfg.flush_messages is not None and self._unflushed_messages >= cfg.flush_messages)
                or (cfg.flush_ms is not None and now - self._last_flush_ms >= cfg.flush_ms)
                or (self.drop_behind_bytes is not None and self._bytes_since_flush >= self.drop_behind_bytes)):
            self._flush_due(now)
        return _new_tuple(AppendInfo, (first_offset, offset - 1, count, max_timestamp))

    def _write_failed(self, exc: OSError) -> None:
        """One ERROR line per failure episode (a disk stays full for a while; every produce would log)."""
        if not self._write_failing:
            self._write_failing = True
            logger.error("%s: write failed: %s; appends to this log fail with that error until one succeeds "
                         "(logged once)", self.directory, exc)

    def _should_roll(self, segment: LogSegment, size: int, next_offset: int, batches: int, now: int) -> bool:
        segment_size = segment.size
        if segment_size == 0:
            return False
        cfg = self.config
        created_ms = segment.created_ms
        return (segment_size + size > cfg.segment_bytes
                or (created_ms is not None and now - created_ms >= cfg.segment_ms)
                or next_offset - 1 - segment.base_offset > MAX_RELATIVE_OFFSET
                or segment.index_room() <= batches)

    def roll(self, now_ms: int | None = None) -> LogSegment:
        """Seal the active segment and start a new one at the log end offset."""
        old = self._segments[-1]
        if old.size == 0:
            return old
        self._tail = None
        old.seal()
        new = LogSegment(self.directory, old.next_offset, self.config.segment_index_bytes,
                         self.config.index_interval_bytes, active=True)
        new.open_indexes()
        self._segments.append(new)
        self._bases.append(new.base_offset)
        logger.debug("%s: rolled new segment at offset %d", self.directory, new.base_offset)
        return new

    # -- flushing -----------------------------------------------------------
    #
    # A flush is three steps so its slow part can run on another thread while the
    # engine itself stays single-threaded: prepare_flush (owner's thread) notes the
    # log end and what to fsync, FlushPlan.sync (any thread) only calls fsync, and
    # complete_flush (owner's thread) moves the flushed offset. flush() does all
    # three in a row.

    def prepare_flush(self) -> "FlushPlan":
        """What to fsync so that every offset below the current log end is durable."""
        if self._closed:
            raise LogClosedError(self.directory)
        end = self.log_end_offset
        files = []
        drops = []
        keep = self.drop_behind_bytes
        if end > self._flushed_offset:
            for segment in reversed(self._segments):
                if segment.next_offset <= self._flushed_offset and segment.base_offset < self._flushed_offset:
                    break
                files.append(segment.fd)
                if not segment.active:
                    # Sealed segments also need their indexes durable: recovery trusts them.
                    files.extend(segment.index_fds())
                if keep is not None:
                    # What lies more than drop_behind_bytes behind the log end leaves the page
                    # cache once this plan's fsync has written it (FlushPlan.sync).
                    drop_to = segment.size - keep
                    if drop_to > segment.dropped_to:
                        # The kernel drops only the pages (folios, up to 2 MiB) wholly inside a
                        # range: start each range back at an aligned point before the last one's
                        # end, so what straddled that end goes now. All of it is written already.
                        start = segment.dropped_to - segment.dropped_to % _DROP_ALIGN
                        drops.append((segment.fd, start, drop_to - start))
                        segment.dropped_to = drop_to
                    keep = max(0, keep - segment.size)
        return FlushPlan(end, files, drops)

    def complete_flush(self, end_offset: int) -> int:
        """Record that a :meth:`prepare_flush` plan ending at ``end_offset`` was synced; only moves forward."""
        if end_offset > self._flushed_offset:
            self._flushed_offset = end_offset
        return self._flushed_offset

    def flush(self, now_ms: int | None = None) -> int:
        """fsync everything appended, on the caller's thread; returns the new flushed offset."""
        plan = self.prepare_flush()
        plan.sync()
        self._flush_started(now_ms)
        return self.complete_flush(plan.end_offset)

    def _flush_started(self, now_ms: int | None) -> None:
        # The flush.messages / flush.ms clocks restart when a flush starts, not when it
        # ends, so an offloaded flush that is still running is not asked for again.
        self._unflushed_messages = 0
        self._bytes_since_flush = 0
        self._last_flush_ms = _now_ms() if now_ms is None else now_ms

    def _flush_due(self, now: int) -> None:
        """Run (or hand to :attr:`flush_requester`) the flush that flush.messages / flush.ms ask for."""
        self._flush_started(now)
        if self.flush_requester is None:
            self.flush(now)
        else:
            self.flush_requester(self)

    def write_recovery_checkpoint(self) -> None:
        """Record the flushed offset so the next open only scans what came after it."""
        if self._flushed_offset != self._checkpointed_recovery_point:
            write_offset_checkpoint(os.path.join(self.directory, RECOVERY_POINT_FILE), self._flushed_offset)
            self._checkpointed_recovery_point = self._flushed_offset
        self._last_checkpoint_ms = _now_ms()

    def tick(self, now_ms: int | None = None) -> None:
        """Time-driven work: flush.ms, segment.ms, the recovery checkpoint, delayed file deletion."""
        now = _now_ms() if now_ms is None else now_ms
        cfg = self.config
        if cfg.flush_ms is not None and now - self._last_flush_ms >= cfg.flush_ms:
            if self.log_end_offset > self._flushed_offset:
                self._flush_due(now)
            else:
                self._last_flush_ms = now
        active = self._segments[-1]
        if active.created_ms is not None and now - active.created_ms >= cfg.segment_ms:
            self.roll(now)
        if now - self._last_checkpoint_ms >= cfg.checkpoint_interval_ms:
            self.write_recovery_checkpoint()
        self.delete_pending_files(now)

    # -- reading ------------------------------------------------------------

    def _check_offset(self, offset: int) -> None:
        if offset < self._log_start_offset or offset > self.log_end_offset:
            raise OffsetOutOfRangeError(offset, self._log_start_offset, self.log_end_offset)

    def _segment_for(self, offset: int) -> int:
        return bisect.bisect_right(self._bases, offset) - 1

    def read(self, offset: int, max_bytes: int = 1024 * 1024) -> FileSlice | None:
        """Whole batches from the one holding ``offset`` as a file slice; None at the log end.

        Returns at most ``max_bytes`` except that the first batch is always
        returned whole. Only one segment is read per call (the next fetch
        continues in the next segment). The consumer skips the records of the
        first batch that precede ``offset``.
        """
        tail = self._tail
        if tail is not None and offset == self._tail_offset and tail.length <= max_bytes:
            # The fetch the last append woke: what the segment read below returns (the batch at
            # `offset` to the end of the file), from memory.
            return tail
        if self._closed:
            raise LogClosedError(self.directory)
        self._check_offset(offset)
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        stop = None
        if self._lost:
            for first, end in self._lost:
                if offset < first:
                    stop = first  # the reply ends before the gap; the next fetch is told about it
                    break
                if offset < end:
                    raise OffsetLostError(offset, first, end)
        i = max(self._segment_for(offset), 0)
        segments = self._segments
        while i < len(segments):
            found = self._repairing_index(segments[i], segments[i].read, offset, max_bytes, stop)
            if found is not None:
                return found
            i += 1  # offset lies in a gap or past this segment's end: the next one starts it
        return None

    def _repairing_index(self, segment: LogSegment, method, *args):
        """Call ``method(*args)`` of ``segment``; if an index entry turns out wrong, rebuild the indexes once."""
        try:
            return method(*args)
        except CorruptIndexError as exc:
            logger.error("%s: %s; rebuilding the indexes of segment %d from its log", self.directory, exc,
                         segment.base_offset)
            segment.rebuild_indexes()
            return method(*args)

    def read_bytes(self, offset: int, max_bytes: int = 1024 * 1024) -> bytes:
        """Like :meth:`read` but returns the bytes (b"" at the log end)."""
        found = self.read(offset, max_bytes)
        return found.read() if found is not None else b""

    def offset_for_timestamp(self, timestamp: int) -> int | None:
        """First offset whose record timestamp is >= ``timestamp``; None if every record is older."""
        found = self.record_for_timestamp(timestamp)
        return None if found is None else found[0]

    def record_for_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record whose timestamp is >= ``timestamp``; None if
        every record is older. The timestamp is -1 when the record is not known: a found offset
        below the log start answers the log start, and a batch that does not decode its base."""
        for segment in self._segments:
            if segment.max_timestamp >= timestamp:
                found = self._repairing_index(segment, segment.record_for_timestamp, timestamp)
                if found is not None:
                    if found[0] < self._log_start_offset:
                        return self._log_start_offset, -1
                    return found
        return None

    # -- deleting -------------------------------------------------------------

    def delete_oldest_segments(self, count: int, reason: str, now_ms: int | None = None) -> int:
        """Delete the ``count`` oldest segments (never the active one); returns how many were deleted.

        The log start offset moves to the first remaining segment and is
        checkpointed before any file is renamed, so a crash in between cannot
        bring the deleted records back. Files are renamed to ``*.deleted`` now and
        unlinked after file.delete.delay.ms (see :meth:`delete_pending_files`).
        """
        count = min(count, len(self._segments) - 1)
        if count <= 0:
            return 0
        now = _now_ms() if now_ms is None else now_ms
        self._tail = None
        doomed = self._segments[:count]
        new_start = max(self._segments[count].base_offset, self._log_start_offset)
        write_offset_checkpoint(os.path.join(self.directory, LOG_START_OFFSET_FILE), new_start)
        self._log_start_offset = new_start
        del self._segments[:count]
        del self._bases[:count]
        self._lost = [r for r in self._lost if r[1] > new_start]
        for segment in doomed:
            segment.mark_deleted()
            self._pending_deletes.append((now + self.config.file_delete_delay_ms, segment))
        fsync_dir(self.directory)
        logger.info("%s: deleted %d segment(s) (%s); log start offset now %d", self.directory, count, reason,
                    new_start)
        return count

    def replace_segment(self, old: LogSegment, new: LogSegment | None, now_ms: int | None = None) -> None:
        """Put the cleaner's rewrite of sealed segment ``old`` in its place (None: drop ``old``, it kept nothing).

        The files are already swapped on disk (``cleaner.py`` documents the
        protocol); this swaps the in-memory segment. The log start offset does
        not move: compaction removes records, not a prefix of the log. ``old``
        keeps its fd open for file.delete.delay.ms so that slices already handed
        to readers stay valid.
        """
        i = self._segments.index(old)
        if i == len(self._segments) - 1:
            raise ValueError("the active segment is never replaced")
        self._tail = None
        now = _now_ms() if now_ms is None else now_ms
        if new is None:
            del self._segments[i]
            del self._bases[i]
            old.mark_deleted()
            fsync_dir(self.directory)
        else:
            self._segments[i] = new
            old.mark_replaced()
        self._pending_deletes.append((now + self.config.file_delete_delay_ms, old))

    def delete_pending_files(self, now_ms: int | None = None) -> None:
        """Close and unlink deleted segments whose delay has passed (all of them if now_ms is None)."""
        keep = []
        for due, segment in self._pending_deletes:
            if now_ms is None or due <= now_ms:
                segment.delete_files()
            else:
                keep.append((due, segment))
        self._pending_deletes = keep

    # -- closing ------------------------------------------------------------

    def close(self) -> None:
        """Flush, checkpoint and close; the next open skips recovery."""
        if self._closed:
            return
        self._tail = None
        self._segments[-1].seal()
        self.flush()
        for segment in self._segments:
            segment.flush(indexes=True)
        self.write_recovery_checkpoint()
        self.delete_pending_files()
        for segment in self._segments:
            segment.close()
        with open(os.path.join(self.directory, CLEAN_SHUTDOWN_FILE), "wb") as f:
            os.fsync(f.fileno())
        fsync_dir(self.directory)
        self._closed = True

    def __enter__(self) -> "PartitionLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"PartitionLog({self.directory!r}, start={self._log_start_offset}, end={self.log_end_offset}, "
                f"segments={len(self._segments)})")
