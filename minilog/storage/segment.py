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
import os
import time
from collections import namedtuple
from typing import Iterator

from clients.record_batch import (HEADER_SIZE, LOG_OVERHEAD, BatchError, BatchHeader, InvalidBatchError,
                                  decode_batch, read_header, validate)

from .index_file import CorruptIndexError
from .offset_index import OffsetIndex
from .time_index import TimeIndex

logger = logging.getLogger("minilog.storage")

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
DELETED_SUFFIX = ".deleted"

# Bytes read at a time when scanning headers or validating a whole segment.
_SCAN_CHUNK = 64 * 1024
_RECOVER_CHUNK = 8 * 1024 * 1024


class SegmentWriteError(OSError):
    """A write to a segment failed (disk full, I/O error); the segment was cut back to its last good size.

    It is an OSError with the original errno, so callers that map OSError to a
    storage error keep working; the message names the file and says nothing of
    the failed batches was kept.
    """


class FileSlice(namedtuple("FileSlice", "fd position length")):
    """A run of whole batches inside an open segment file.

    A server can ``os.sendfile(sock, s.fd, s.position, s.length)`` it without the
    bytes ever becoming Python objects. The fd stays open at least
    ``file.delete.delay.ms`` after the segment is deleted by retention, so a
    slice must be consumed promptly (within one send), not stored.
    """

    __slots__ = ()

    def read(self) -> bytes:
        return os.pread(self.fd, self.length, self.position)


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
        self._bytes_since_index = 0
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
            self.created_ms = read_header(os.pread(self._fd, HEADER_SIZE, 0)).max_timestamp

    def recover(self, max_message_bytes: int | None = None, allow_gaps: bool = False) -> int:
        """Validate every batch, rebuild both indexes, cut the log at the first bad batch.

        Returns the number of bytes truncated. A batch is bad if its header is
        impossible, its CRC does not match, it is cut short, or its base offset
        does not continue the previous batch. With ``allow_gaps`` (compacted
        topics, whose cleaner removes records and keeps the others' offsets) a
        base offset may jump forward but never back.
        """
        self.index.reset()
        self.time_index.reset()
        self.next_offset = self.base_offset
        self.max_timestamp, self.offset_of_max_timestamp = -1, self.base_offset
        self._bytes_since_index = 0
        self.created_ms = None
        pos = 0
        size = self.size
        chunk, chunk_at = b"", 0
        while pos < size:
            need = min(size - pos, HEADER_SIZE)
            if pos + need > chunk_at + len(chunk):
                chunk, chunk_at = os.pread(self._fd, min(_RECOVER_CHUNK, size - pos), pos), pos
            try:
                h = read_header(chunk, pos - chunk_at)
                if pos + LOG_OVERHEAD + h.length > size:
                    break
                if pos + LOG_OVERHEAD + h.length > chunk_at + len(chunk):
                    chunk, chunk_at = os.pread(self._fd, max(_RECOVER_CHUNK, h.size), pos), pos
                validate(chunk, pos - chunk_at)
            except BatchError:
                break
            if h.base_offset != self.next_offset and not (allow_gaps and h.base_offset > self.next_offset):
                break
            self._index_batch(h, pos)
            pos += h.size
        truncated = size - pos
        if truncated:
            os.ftruncate(self._fd, pos)
            self.size = pos
        if self.size and self.created_ms is None:
            self.created_ms = read_header(os.pread(self._fd, HEADER_SIZE, 0)).max_timestamp
        return truncated

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
        for h in headers:
            self._index_batch(h, position)
            position += h.size
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
                h = read_header(chunk, at)
                if h.length < HEADER_SIZE - LOG_OVERHEAD or position + at + h.size > end:
                    raise InvalidBatchError(f"{self.log_path}: bad batch header at position {position + at}")
                yield position + at, h
                at += h.size
            if at == 0:
                raise InvalidBatchError(f"{self.log_path}: partial batch header at position {position}")
            position += at

    def find_batch(self, offset: int) -> tuple[int, BatchHeader] | None:
        """(position, header) of the batch holding ``offset`` (or the first after it), else None."""
        if offset >= self.next_offset:
            return None
        _, position = self.index.lookup(offset)
        for pos, h in self._headers(position, self.size):
            if h.next_offset > offset:
                return pos, h
        return None

    def read(self, offset: int, max_bytes: int) -> FileSlice | None:
        """Whole batches from the one holding ``offset``, at most ``max_bytes`` unless the first is larger."""
        size = self.size  # a snapshot: bytes appended after this call are not returned
        found = self.find_batch(offset)
        if found is None:
            return None
        start, first = found
        limit = start + max_bytes
        if limit >= size:
            return FileSlice(self._fd, start, size - start)
        end = start + first.size
        if end < limit:
            # Jump close to the limit through the index, then walk the last few headers.
            # Batches before that entry end at or before it, so the slice can extend to it.
            _, position = self.index.lookup_position(limit)
            end = max(position, end)
            for pos, h in self._headers(end, size):
                if pos + h.size > limit:
                    break
                end = pos + h.size
        return FileSlice(self._fd, start, end - start)

    def offset_for_timestamp(self, timestamp: int) -> int | None:
        """Offset of the first record whose timestamp is >= ``timestamp``, or None."""
        if self.max_timestamp < timestamp:
            return None
        entry = self.time_index.lookup_before(timestamp)
        start_offset = entry[1] if entry else self.base_offset
        _, position = self.index.lookup(start_offset)
        for pos, h in self._headers(position, self.size):
            if h.max_timestamp >= timestamp:
                try:
                    _, records = decode_batch(os.pread(self._fd, h.size, pos), verify=False)
                except BatchError as exc:
                    # Stored by a broker that did not check bodies: answer at batch level, as the
                    # header promises a record >= timestamp somewhere in it.
                    self._warn_once(pos, f"offset by time answered with the batch's base offset: {exc}")
                    return h.base_offset
                for record in records:
                    if record[1] >= timestamp:
                        return record[0]
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
        return min(self.index.free_slots, self.time_index.free_slots)

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
