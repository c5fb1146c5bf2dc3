"""LogSegment: one ``.log`` file of whole batches plus its two indexes.

A segment is named by the offset of its first batch, as 20 zero-padded digits:
``00000000000000000000.log`` with ``.index`` (offset -> position, see
``offset_index.py``) and ``.timeindex`` (timestamp -> offset, see
``time_index.py``). This module holds the per-segment mechanics: appending
already-validated batches with os.write, finding the batch that holds an
offset (index lookup, then a forward scan of batch headers), slicing reads at
batch boundaries, searching by time, and rebuilding the indexes while
validating every batch (used by recovery). Choosing the segment, assigning
offsets, rolling and flush policy belong to ``log.py``; deciding what to
recover to ``recovery.py``.
"""

from __future__ import annotations

import logging
import mmap
import os
import time
from collections import namedtuple
from typing import Iterator

from clients.record_batch import (HEADER_SIZE, LOG_OVERHEAD, MAGIC, MAX_HEADER_SIZE, BatchError, BatchHeader,
                                  InvalidBatchError, TruncatedBatchError, decode_batch, read_header, validate)

from .index_file import CorruptIndexError
from .offset_index import OffsetIndex
from .time_index import TimeIndex

logger = logging.getLogger("minilog.storage")

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
DELETED_SUFFIX = ".deleted"
REPAIR_SUFFIX = ".repair"       # a segment being rewritten without damaged bytes (recovery)
QUARANTINE_DIR = "quarantine"   # damaged bytes taken out of segments, kept for inspection
# Offsets inside a segment are stored as u32 relative to its base.
MAX_RELATIVE_OFFSET = 0xFFFFFFFF
_MAGIC_AT = 12                  # position of the magic byte in a batch
# A Kafka client's batch (clients/kafka_batch.py) is stored as it came: magic 2 at byte 16.
_KAFKA_MAGIC, _KAFKA_MAGIC_AT = 2, 16
_MIN_LENGTH = HEADER_SIZE - LOG_OVERHEAD + 1

# Bytes read at a time when scanning headers or validating a whole segment.
_SCAN_CHUNK = 64 * 1024
# How far past a read of dropped bytes the kernel is asked to read them back (LogSegment._slice).
DROPPED_READ_AHEAD = 16 * 1024 * 1024
# Batches appended most recently, remembered by base offset (LogSegment._recent): a consumer
# keeping up with a live partition fetches from a batch boundary a few batches behind the end,
# which the offset index (an entry per index.interval.bytes) would leave to a scan of up to
# 4 KiB of headers read back from the file -- ~30 for 100-byte records, ~20 us a fetch.
_RECENT_BATCHES = 256
_RECOVER_CHUNK = 8 * 1024 * 1024


class SegmentWriteError(OSError):
    """A write to a segment failed (disk full, I/O error); the segment was cut back to its last good size.

    It is an OSError with the original errno, so callers that map OSError to a
    storage error keep working; the message names the file and says nothing of
    the failed batches was kept.
    """


class LostRange(namedtuple("LostRange", "first_offset end_offset position length")):
    """Damaged bytes recovery took out of a segment: offsets ``[first_offset, end_offset)`` are lost.

    ``end_offset`` is None for a torn tail (what follows is not known to the segment); position
    and length are in the file as it was before the repair.
    """

    __slots__ = ()


SegmentRepair = namedtuple("SegmentRepair", "cut_bytes lost tail")
SegmentRepair.__doc__ = """What LogSegment.recover did: bytes cut off the end, LostRanges taken out of the middle
(the file was rewritten without them), and the torn tail's LostRange (or None)."""


class FileSlice(namedtuple("FileSlice", "fd position length next_offset data", defaults=(None, None))):
    """A run of whole batches inside an open segment file.

    ``next_offset`` is the offset after its last batch, where the next read goes on (None when
    not known); the msgpack door's fetch sessions keep it as the session's position.

    ``data``, when not None, is those same bytes already in memory: the log's last small append
    (``PartitionLog.append`` keeps it as its tail), so the fetch that append wakes is answered
    without a read of the file. :meth:`read` returns it; ``fd`` and ``position`` stay valid.

    A server can ``os.sendfile(sock, s.fd, s.position, s.length)`` it without the
    bytes ever becoming Python objects. The fd stays open at least
    ``file.delete.delay.ms`` after the segment is deleted by retention, so a
    slice must be consumed promptly (within one send), not stored.
    """

    __slots__ = ()

    def read(self) -> bytes:
        data = self.data
        return os.pread(self.fd, self.length, self.position) if data is None else data


def segment_file_name(base_offset: int, suffix: str) -> str:
    return f"{base_offset:020d}{suffix}"


class LogSegment:
    def __init__(self, directory: str, base_offset: int, max_index_bytes: int, index_interval_bytes: int,
                 active: bool):
        self.directory = directory
        self.base_offset = base_offset
        self.index_interval_bytes = index_interval_bytes
        self.log_path = os.path.join(directory, segment_file_name(base_offset, LOG_SUFFIX))
        self._fd = os.open(self.log_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self.size = os.fstat(self._fd).st_size
        self.next_offset = base_offset
        self.max_timestamp = -1
        self.offset_of_max_timestamp = base_offset
        self.created_ms: int | None = None  # when the first batch arrived; drives segment.ms
        # Bytes from the start already handed to a flush to drop from the page cache (log.FlushPlan).
        self.dropped_to = 0
        self._bytes_since_index = 0
        self._recent: dict[int, tuple[int, BatchHeader]] = {}   # base offset -> (position, header)
        self.index: OffsetIndex | None = None
        self.time_index: TimeIndex | None = None
        self._max_index_bytes = max_index_bytes
        self.active = active
        self._warned: set[int] = set()

    # -- opening ----------------------------------------------------------

    def open_indexes(self, expect_existing: bool = True) -> None:
        """Map both index files; raises CorruptIndexError if one is unusable or missing (caller rebuilds)."""
        self.close_indexes()
        missing = [suffix for suffix in (INDEX_SUFFIX, TIME_INDEX_SUFFIX) if not os.path.exists(self._path(suffix))]
        self.index = OffsetIndex(self._path(INDEX_SUFFIX), self.base_offset, self._max_index_bytes, self.active)
        self.time_index = TimeIndex(self._path(TIME_INDEX_SUFFIX), self.base_offset, self._max_index_bytes,
                                    self.active)
        if missing and self.size and expect_existing:
            raise CorruptIndexError(f"{self.log_path}: missing {' and '.join(missing)} file")

    def discard_indexes(self) -> None:
        """Delete both index files and open empty ones (before a rebuild)."""
        self.close_indexes()
        for suffix in (INDEX_SUFFIX, TIME_INDEX_SUFFIX):
            try:
                os.unlink(self._path(suffix))
            except FileNotFoundError:
                pass
        self.open_indexes(expect_existing=False)

    def close_indexes(self) -> None:
        for idx in (self.index, self.time_index):
            if idx is not None:
                idx.close()
        self.index = self.time_index = None

    def load_from_indexes(self) -> None:
        """Find next offset and newest timestamp from the indexes and a short tail scan.

        Trusts the log bytes (they were flushed, or shut down cleanly): only the
        headers after the last index entry are read. Raises CorruptIndexError or
        BatchError when the indexes or those headers do not fit the log.
        """
        self.index.sanity_check(self.size)
        offset, position = self.index.last_entry
        next_offset = self.base_offset
        last = self.time_index.last_entry
        max_ts, offset_of_max = last if last else (-1, self.base_offset)
        first = True
        for pos, h in self._headers(position, self.size):
            # With no index entry, "offset" is only the segment's base; a compacted segment's
            # first batch may start after it (its first records were cleaned away).
            if first and h.base_offset != offset and not (self.index.entries == 0 and h.base_offset > offset):
                raise InvalidBatchError(f"{self.log_path}: index says offset {offset} at position {position}, "
                                        f"found batch {h.base_offset}")
            elif pos - position >= self.index_interval_bytes:
                raise CorruptIndexError(f"{self.log_path}: index has no entry for the batch at position {pos}")
            first = False
            if h.max_timestamp > max_ts:
                max_ts, offset_of_max = h.max_timestamp, h.base_offset
            next_offset = h.next_offset
            self._bytes_since_index = pos + h.size - position
        if first and self.size > position:
            raise InvalidBatchError(f"{self.log_path}: no batch header at position {position}")
        self.time_index.sanity_check(next_offset)
        self.next_offset = next_offset
        self.max_timestamp, self.offset_of_max_timestamp = max_ts, offset_of_max
        if self.size:
            self.created_ms = read_header(os.pread(self._fd, MAX_HEADER_SIZE, 0)).max_timestamp

    def recover(self, allow_gaps: bool = False, known_gaps: dict | None = None,
                before_rewrite=None) -> "SegmentRepair":
        """Validate every batch, rebuild both indexes, and take damaged bytes out of the file.

        A batch is good if its header is possible, its CRC matches, it lies wholly in the file and
        its base offset continues the previous batch (or, with ``allow_gaps`` — compacted logs —
        does not go back; ``known_gaps`` maps the first offset of each range already recorded as
        lost to the offset after it, which may follow too). At a bad batch the scan looks for the
        next good one (``_resync``):

        - found: the bytes in between are damaged data in the middle of the log, not a torn tail
          (something valid was written after them). Their offsets are reported as lost
          (``SegmentRepair.lost``) and the file is rewritten without them, every good batch kept;
        - not found: the rest of the file is a torn tail and is cut off (``cut_bytes``).

        ``before_rewrite(lost)`` runs before the file changes, so that the caller records the lost
        offsets first: a crash in between must not make the next start take a recorded gap for
        damage. Removed bytes that are not all zeros are kept in ``quarantine/`` for inspection.
        """
        self.index.reset()
        self.time_index.reset()
        self._recent.clear()   # the file may be cut or rewritten below
        self.next_offset = self.base_offset
        self.max_timestamp, self.offset_of_max_timestamp = -1, self.base_offset
        self._bytes_since_index = 0
        self.created_ms = None
        size = self.size
        if size == 0:
            return SegmentRepair(0, [], None)
        known_gaps = known_gaps or {}
        lost: list[LostRange] = []
        keep: list[tuple[int, int]] = []  # byte runs of good batches, in file order
        tail = None
        removed = 0
        mm = mmap.mmap(self._fd, size, access=mmap.ACCESS_READ)
        try:
            pos = run_start = 0
            while pos < size:
                h = self._batch_at(mm, pos, size, self.next_offset, allow_gaps, known_gaps)
                if h is not None:
                    self._index_batch(h, pos - removed)
                    pos += h.size
                    continue
                keep.append((run_start, pos))
                found = self._resync(mm, pos, size, self.next_offset, allow_gaps, known_gaps)
                if found is None:
                    tail = LostRange(self.next_offset, None, pos, size - pos)
                    break
                q, hq = found
                lost.append(LostRange(self.next_offset, hq.base_offset, pos, q - pos))
                removed += q - pos
                self._index_batch(hq, q - removed)
                run_start = q
                pos = q + hq.size
            else:
                keep.append((run_start, size))
            damaged = lost + ([tail] if tail is not None else [])
            if damaged:
                self._quarantine(mm, damaged)
            if lost:
                if before_rewrite is not None:
                    before_rewrite(lost)
                self._rewrite(mm, keep)
        finally:
            mm.close()
        cut = 0
        if tail is not None:
            cut = tail.length
            if not lost:
                os.ftruncate(self._fd, tail.position)
            self.size = tail.position - removed
        if self.size and self.created_ms is None:
            self.created_ms = read_header(os.pread(self._fd, MAX_HEADER_SIZE, 0)).max_timestamp
        return SegmentRepair(cut, lost, tail)

    def _batch_at(self, mm, pos: int, size: int, expected: int, allow_gaps: bool, known_gaps: dict,
                  check_crc: bool = True) -> BatchHeader | None:
        """The header of the batch at ``pos`` if it is good and continues ``expected``; else None."""
        if size - pos < HEADER_SIZE:
            return None
        try:
            h = read_header(mm, pos)
        except BatchError:   # a Kafka batch's longer header cut short, or an impossible one
            return None
        if (h.magic not in (MAGIC, _KAFKA_MAGIC) or h.length < _MIN_LENGTH or pos + LOG_OVERHEAD + h.length > size
                or h.record_count < 1 or h.max_timestamp < h.first_timestamp):
            return None
        if h.base_offset != expected and not ((allow_gaps and h.base_offset > expected)
                                              or known_gaps.get(expected) == h.base_offset):
            return None
        if h.next_offset - 1 - self.base_offset > MAX_RELATIVE_OFFSET:
            return None  # offsets a segment's indexes cannot hold: never a batch we wrote
        if check_crc:
            try:
                validate(mm, pos)
            except BatchError:
                return None
        return h

    def _resync(self, mm, start: int, size: int, expected: int, allow_gaps: bool,
                known_gaps: dict) -> tuple[int, BatchHeader] | None:
        """(position, header) of the first good batch after the bad one at ``start``, or None.

        Candidates are the positions whose magic byte is right (``mmap.find``, C speed); each must
        pass every check of ``_batch_at`` with a base offset at or after ``expected``, CRC
        included, and be followed by the end of the file or by a plausible header that continues
        it. A value that happens to contain a whole valid batch would have to pass all of that.
        """
        # Candidates of both formats, in file order: our magic at byte 12, Kafka's at byte 16.
        finds = [[bytes([MAGIC]), _MAGIC_AT, start + 1 + _MAGIC_AT],
                 [bytes([_KAFKA_MAGIC]), _KAFKA_MAGIC_AT, start + 1 + _KAFKA_MAGIC_AT]]
        while True:
            for f in finds:
                if f[2] >= 0:
                    f[2] = mm.find(f[0], f[2])
            live = [f for f in finds if f[2] >= 0]
            if not live:
                return None
            f = min(live, key=lambda f: f[2] - f[1])
            p = f[2] - f[1]
            h = self._batch_at(mm, p, size, expected, True, known_gaps)
            if h is not None:
                end = p + h.size
                if end == size or self._batch_at(mm, end, size, h.next_offset, True, {}, check_crc=False):
                    return p, h
            f[2] += 1

    def _quarantine(self, mm, damaged: list) -> None:
        """Copy the damaged bytes to ``quarantine/<base>-<position>.bad`` (all-zero runs are not kept)."""
        qdir = os.path.join(self.directory, QUARANTINE_DIR)
        for r in damaged:
            data = mm[r.position:r.position + r.length]
            if not data.strip(b"\0"):
                continue
            os.makedirs(qdir, exist_ok=True)
            path = os.path.join(qdir, f"{self.base_offset:020d}-{r.position}.bad")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)

    def _rewrite(self, mm, keep: list[tuple[int, int]]) -> None:
        """Replace the ``.log`` with only the byte runs ``keep`` (temp file, fsync, atomic rename)."""
        tmp = self.log_path + REPAIR_SUFFIX
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for a, b in keep:
                for chunk_at in range(a, b, _RECOVER_CHUNK):
                    view = memoryview(mm)[chunk_at:min(b, chunk_at + _RECOVER_CHUNK)]
                    try:
                        written = 0
                        while written < len(view):
                            written += os.write(fd, view[written:])
                    finally:
                        view.release()
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.log_path)
        dfd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        old, self._fd = self._fd, os.open(self.log_path, os.O_RDWR | os.O_APPEND)
        os.close(old)
        self.size = os.fstat(self._fd).st_size

    # -- appending --------------------------------------------------------

    def _index_batch(self, h: BatchHeader, position: int) -> None:
        """Account one batch at ``position`` in the indexes and in-memory state."""
        if self._bytes_since_index >= self.index_interval_bytes:
            self.index.append(h.base_offset, position)
            if h.max_timestamp > self.max_timestamp:
                self.time_index.maybe_append(h.max_timestamp, h.base_offset)
            else:
                self.time_index.maybe_append(self.max_timestamp, self.offset_of_max_timestamp)
            self._bytes_since_index = 0
        if h.max_timestamp > self.max_timestamp:
            self.max_timestamp, self.offset_of_max_timestamp = h.max_timestamp, h.base_offset
        self._bytes_since_index += h.size
        self.next_offset = h.next_offset

    def append(self, data: memoryview, headers: list[BatchHeader]) -> None:
        """Write validated, offset-assigned batches (``data`` is exactly those batches)."""
        position = self.size
        try:
            written = os.write(self._fd, data)
            while written < len(data):  # regular files rarely write short, but may (e.g. > 2 GiB)
                written += os.write(self._fd, data[written:])
        except OSError as exc:
            raise self._undo_partial_write(exc) from exc
        if self.created_ms is None:
            self.created_ms = time.time_ns() // 1_000_000
        recent = self._recent
        if len(recent) >= _RECENT_BATCHES:
            recent.clear()
        for h in headers:
            if self._bytes_since_index >= self.index_interval_bytes:
                self._index_batch(h, position)
            else:   # _index_batch, inline for the usual batch: no index entry due
                if h.max_timestamp > self.max_timestamp:
                    self.max_timestamp, self.offset_of_max_timestamp = h.max_timestamp, h.base_offset
                self._bytes_since_index += LOG_OVERHEAD + h.length
                self.next_offset = h.base_offset + h.record_count
            recent[h.base_offset] = (position, h)
            position += LOG_OVERHEAD + h.length
        self.size = position

    def _undo_partial_write(self, exc: OSError) -> SegmentWriteError:
        """Cut the file back to ``size`` after a failed write; returns the error to raise.

        A write that fails midway (ENOSPC after some pages) leaves torn bytes
        after the last whole batch. ``size`` was not advanced, but the fd is
        O_APPEND: without the cut, the next batch would land after the garbage
        and recovery would later drop it and everything after it.
        """
        try:
            if os.fstat(self._fd).st_size > self.size:
                os.ftruncate(self._fd, self.size)
            cut = "nothing of it was kept"
        except OSError as cut_exc:  # the segment now ends in garbage; recovery cuts it at the next start
            cut = f"and cutting the torn bytes off failed too ({cut_exc})"
        return SegmentWriteError(exc.errno, f"{self.log_path}: write failed ({exc.strerror or exc}); {cut}")

    # -- reading ----------------------------------------------------------

    def _headers(self, position: int, end: int) -> Iterator[tuple[int, BatchHeader]]:
        """Headers of the batches in [position, end), read in chunks without validation."""
        fd = self._fd
        while position < end:
            chunk = os.pread(fd, min(_SCAN_CHUNK, end - position), position)
            at = 0
            while at + HEADER_SIZE <= len(chunk):
                try:
                    h = read_header(chunk, at)
                except TruncatedBatchError:  # a Kafka batch's longer header crosses the chunk's end
                    break
                if h.length < HEADER_SIZE - LOG_OVERHEAD or position + at + h.size > end:
                    raise InvalidBatchError(f"{self.log_path}: bad batch header at position {position + at}")
                yield position + at, h
                at += h.size
            if at == 0:
                raise InvalidBatchError(f"{self.log_path}: partial batch header at position {position}")
            position += at

    def _headers_from_entry(self, entry: tuple[int, int], end: int) -> Iterator[tuple[int, BatchHeader]]:
        """Headers from an index entry ``(offset, position)`` to ``end``, checking the entry first.

        An entry whose position does not hold the batch of its offset (a damaged index file) raises
        CorruptIndexError, which the log answers by rebuilding the indexes (``rebuild_indexes``).
        """
        entry_offset, position = entry
        first = True
        for pos, h in self._headers(position, end):
            # Without an entry (position 0) the first batch may start after the segment's base:
            # compaction, or a range recovery took out.
            if first and h.base_offset != entry_offset and not (position == 0 and h.base_offset > entry_offset):
                raise CorruptIndexError(f"{self._path(INDEX_SUFFIX)}: entry for offset {entry_offset} points at "
                                        f"position {position}, which holds offset {h.base_offset}")
            first = False
            yield pos, h

    def find_batch(self, offset: int) -> tuple[int, BatchHeader] | None:
        """(position, header) of the batch holding ``offset`` (or the first after it), else None."""
        if offset >= self.next_offset:
            return None
        recent = self._recent.get(offset)
        if recent is not None:
            return recent
        try:
            for pos, h in self._headers_from_entry(self.index.lookup(offset), self.size):
                if h.next_offset > offset:
                    return pos, h
        except InvalidBatchError as exc:  # the entry points into the middle of a batch
            raise CorruptIndexError(f"{self._path(INDEX_SUFFIX)}: lookup of offset {offset}: {exc}") from None
        return None

    def rebuild_indexes(self) -> None:
        """Rebuild both indexes from the log (an entry pointed at the wrong place); the log is not changed."""
        was_active = self.active
        created = self.created_ms
        self._recent.clear()
        self.index.reset()
        self.time_index.reset()
        self.max_timestamp, self.offset_of_max_timestamp = -1, self.base_offset
        self._bytes_since_index = 0
        for pos, h in self._headers(0, self.size):
            self._index_batch(h, pos)
        self.created_ms = created
        if not was_active:
            self.active = True
            self.seal()  # trims the rebuilt files to their entries, as a roll does
        self.flush(indexes=True)

    def read(self, offset: int, max_bytes: int, stop_offset: int | None = None) -> FileSlice | None:
        """Whole batches from the one holding ``offset``, at most ``max_bytes`` unless the first is larger.

        With ``stop_offset``, no batch at or after it is included (a lost range starts there).
        """
        size = self.size  # a snapshot: bytes appended after this call are not returned
        after_end = self.next_offset  # the offset after the batches in [0, size)
        found = self.find_batch(offset)
        if found is None:
            return None
        start, first = found
        if stop_offset is not None and stop_offset < self.next_offset:
            after = self.find_batch(stop_offset)
            if after is not None:
                cut = max(after[0], start + first.size)
                if cut < size:
                    size = cut
                    after_end = first.next_offset if cut == start + first.size else after[1].base_offset
        limit = start + max_bytes
        if limit >= size:
            return self._slice(start, size - start, after_end)
        end = start + first.size
        after_end = first.next_offset
        if end < limit:
            # Jump close to the limit through the index, then walk the last few headers.
            # Batches before that entry end at or before it, so the slice can extend to it.
            entry = self.index.lookup_position(limit)
            if entry[1] > end:
                headers = self._headers_from_entry(entry, size)
                end = min(entry[1], size)
                # The batch that ends at the entry is not read: the one starting there tells.
                after_end = None if end < size else self.next_offset
            else:
                headers = self._headers(end, size)
            for pos, h in headers:
                if pos + h.size > limit:
                    if after_end is None:
                        after_end = h.base_offset
                    break
                end = pos + h.size
                after_end = h.next_offset
        return self._slice(start, end - start, after_end)

    def _slice(self, start: int, length: int, next_offset: int | None) -> FileSlice:
        if start < self.dropped_to:
            # These bytes left the page cache (drop-behind, log.FlushPlan): a reader this far
            # behind reads on, so ask the kernel for them and what follows in one go. The reads
            # it starts run while this slice is sent, instead of one readahead window at a time.
            try:
                os.posix_fadvise(self._fd, start, min(self.dropped_to, start + length + DROPPED_READ_AHEAD) - start,
                                 os.POSIX_FADV_WILLNEED)
            except OSError:   # advice only
                pass
        return FileSlice(self._fd, start, length, next_offset)

    def offset_for_timestamp(self, timestamp: int) -> int | None:
        """Offset of the first record whose timestamp is >= ``timestamp``, or None."""
        found = self.record_for_timestamp(timestamp)
        return None if found is None else found[0]

    def record_for_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record whose timestamp is >= ``timestamp``, or None;
        the timestamp is -1 when only the batch is known (a body that does not decode)."""
        if self.max_timestamp < timestamp:
            return None
        entry = self.time_index.lookup_before(timestamp)
        start_offset = entry[1] if entry else self.base_offset
        for pos, h in self._headers_from_entry(self.index.lookup(start_offset), self.size):
            if h.max_timestamp >= timestamp:
                try:
                    _, records = decode_batch(os.pread(self._fd, h.size, pos), verify=False)
                except BatchError as exc:
                    # Stored by a broker that did not check bodies: answer at batch level, as the
                    # header promises a record >= timestamp somewhere in it.
                    self._warn_once(pos, f"offset by time answered with the batch's base offset: {exc}")
                    return h.base_offset, -1
                for record in records:
                    if record[1] >= timestamp:
                        return record[0], record[1]
        return None

    def _warn_once(self, position: int, message: str) -> None:
        """Log a problem with the batch at ``position`` once per segment, not once per request."""
        if position not in self._warned:
            self._warned.add(position)
            logger.warning("%s: batch at position %d: %s", self.log_path, position, message)

    # -- lifecycle --------------------------------------------------------

    def seal(self) -> None:
        """Finish the segment when it stops being active: final time entry, trimmed indexes."""
        if self.max_timestamp >= 0 and not self.time_index.is_full:
            self.time_index.maybe_append(self.max_timestamp, self.offset_of_max_timestamp)
        self.index.trim()
        self.time_index.trim()
        self.active = False

    def flush(self, indexes: bool) -> None:
        os.fsync(self._fd)
        if indexes:
            self.index.flush()
            self.time_index.flush()

    def index_fds(self) -> list[int]:
        """File descriptors of both indexes (for an fsync on another thread: see log.FlushPlan)."""
        return [idx.fd for idx in (self.index, self.time_index) if idx is not None]

    def index_room(self) -> int:
        """How many more batches the indexes can surely take."""
        index, time_index = self.index.free_slots, self.time_index.free_slots
        return index if index < time_index else time_index

    @property
    def fd(self) -> int:
        return self._fd

    def _path(self, suffix: str) -> str:
        return os.path.join(self.directory, segment_file_name(self.base_offset, suffix))

    def close(self) -> None:
        self.close_indexes()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def mark_deleted(self) -> None:
        """Rename the files to ``*.deleted`` and drop the indexes; the log fd stays open for readers.

        After this, no new read reaches the segment (the log has dropped it);
        slices already handed out keep working because the fd is open and POSIX
        keeps a renamed or unlinked file's data alive until its last fd closes.
        """
        self.close_indexes()
        for suffix in (INDEX_SUFFIX, TIME_INDEX_SUFFIX):
            try:
                os.unlink(self._path(suffix))
            except FileNotFoundError:
                pass
        deleted = self.log_path + DELETED_SUFFIX
        os.rename(self.log_path, deleted)
        self.log_path = deleted

    def mark_replaced(self) -> None:
        """The cleaner put a new file under this segment's name; keep only the open fd for readers.

        ``delete_files`` will then close the fd without unlinking anything (the
        name belongs to the replacement; the old data goes with its last fd).
        """
        self.close_indexes()
        self.log_path = None

    def delete_files(self) -> None:
        """Close the fd and unlink the (already renamed) log file."""
        self.close()
        if self.log_path is None:
            return
        try:
            os.unlink(self.log_path)
        except FileNotFoundError:
            pass

    def __repr__(self) -> str:
        return (f"LogSegment(base={self.base_offset}, next={self.next_offset}, size={self.size}, "
                f"active={self.active})")
