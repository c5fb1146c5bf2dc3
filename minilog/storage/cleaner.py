"""Cleaner: log compaction for ``cleanup.policy=compact`` logs (keep the last record per key).

What it does, per partition log (``clean``):

1. flush the log and checkpoint the recovery point, so every sealed segment is
   below the recovery point: recovery never re-validates (and never cuts) a
   segment the cleaner may have rewritten, and a rewrite is never undone;
2. read every sealed segment (never the active one) and note, per key, the
   offset of its last record;
3. rewrite each sealed segment keeping a record only if it is its key's last
   one (records without a key are kept: there is nothing to compact them by),
   and dropping tombstones (value None) whose timestamp is older than
   ``delete.retention.ms`` (until then a consumer that is behind still sees the
   delete). A segment with nothing to drop is left alone; a segment left with
   no record is deleted like a retention victim.

Offsets never change: a kept record keeps its offset, so a compacted log has
gaps. The batch header promises dense offsets inside a batch (``next_offset =
base_offset + record_count``), so a source batch is rebuilt as one batch per
run of consecutive kept offsets, each with its original base offset. Gaps
therefore only occur between batches, which the read path already handles
(``LogSegment.find_batch`` returns the first batch ending after the wanted
offset, ``PartitionLog.read`` moves to the next segment when a segment has
nothing at or after it) and which recovery accepts for compacted logs
(``LogSegment.recover(allow_gaps=True)``).

Swap protocol (``_swap_in``), crash-safe because the ``.log`` file is the truth
and indexes can always be rebuilt from it:

a. the new segment (log and both indexes) is written, sealed and fsynced in
   the scratch directory ``<partition>/.cleaner/``;
b. the old segment's two index files are unlinked and the directory fsynced;
c. the new ``.log`` is renamed over the old one (``os.replace``, atomic): this
   is the commit point;
d. the new index files are renamed into place and the directory fsynced.

A crash before (c) leaves the old log (its indexes, if gone, are rebuilt at the
next start, and ``recovery.py`` removes the scratch directory); a crash after
(c) leaves the new log with its complete new indexes, or without one or both
(rebuilt). Never a mix of old and new records.

When: ``LogManager.tick`` calls :func:`clean_if_dirty`, which cleans when the
sealed bytes written since the last clean (from the offset in
``cleaner-offset-checkpoint``) are at least ``min.cleanable.dirty.ratio`` of all
sealed bytes. Every clean rereads all sealed segments (no incremental offset
map) and runs on the caller's thread: simple, and bounded by the topic's size.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass

from clients.record_batch import InvalidBatchError, build_batch, decode_batch, iter_batches, read_header

from .checkpoint import fsync_dir, read_offset_checkpoint, write_offset_checkpoint
from .segment import INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX, LogSegment, segment_file_name

logger = logging.getLogger("minilog.storage")

CLEANER_DIR = ".cleaner"
CLEANER_CHECKPOINT_FILE = "cleaner-offset-checkpoint"
_READ_CHUNK = 8 * 1024 * 1024
# Rebuilt batches are appended to the new segment this many bytes at a time.
_WRITE_CHUNK = 1024 * 1024


@dataclass
class CleanStats:
    records_read: int = 0       # in the segments rewritten or deleted (others are left alone)
    records_kept: int = 0
    segments_rewritten: int = 0
    segments_deleted: int = 0


def first_dirty_offset(log) -> int:
    """Where the records not yet seen by a clean start."""
    cleaned = read_offset_checkpoint(os.path.join(log.directory, CLEANER_CHECKPOINT_FILE))
    return max(cleaned or 0, log.log_start_offset)


def dirty_ratio(log) -> float:
    """Share of the sealed segments' bytes written since the last clean (0 when nothing is sealed)."""
    sealed = log.segments[:-1]
    total = sum(s.size for s in sealed)
    if not total:
        return 0.0
    first_dirty = first_dirty_offset(log)
    return sum(s.size for s in sealed if s.base_offset >= first_dirty) / total


def clean_if_dirty(log, now_ms: int) -> CleanStats | None:
    """Clean ``log`` if it is compacted and dirty enough; returns what was done, or None."""
    cfg = log.config
    if not cfg.compacts:
        return None
    ratio = dirty_ratio(log)
    if ratio == 0 or ratio < cfg.min_cleanable_dirty_ratio:
        return None
    return clean(log, now_ms)


def _segment_records(segment: LogSegment):
    """(batch header, records) of every batch of a sealed segment, CRC-checked, read in chunks."""
    pos, size = 0, segment.size
    while pos < size:
        chunk = os.pread(segment.fd, min(_READ_CHUNK, size - pos), pos)
        first = read_header(chunk)
        if first.size > len(chunk):  # one batch larger than a chunk
            chunk = os.pread(segment.fd, first.size, pos)
        consumed = 0
        for h, view in iter_batches(chunk):
            yield h, decode_batch(view, verify=False)[1]
            consumed += h.size
        if not consumed:  # a header announcing more bytes than the file holds
            raise InvalidBatchError(f"{segment.log_path}: batch at position {pos} runs past the end")
        pos += consumed


def _keeps(record: tuple, latest: dict, horizon_ms: int) -> bool:
    offset, timestamp, key, value, _headers = record
    return key is None or (latest[key] == offset and (value is not None or timestamp >= horizon_ms))


def _rebuildable(record: tuple) -> bool:
    """True if the record can be compacted and written again: bytes-or-nil key and value.

    The broker refuses other types at produce (``validate_records``), but a log written by an
    older broker may hold, say, a map as a key: unhashable, and not a valid record to rebuild.
    """
    _offset, _ts, key, value, _headers = record
    return (key is None or key.__class__ is bytes) and (value is None or value.__class__ is bytes)


def _drops_anything(segment: LogSegment, latest: dict, horizon_ms: int) -> bool:
    """True if cleaning would remove a record of ``segment`` (a decode-only pass: no rewrite of clean segments).

    A segment holding a record that cannot be rebuilt is left as it is (and logged).
    """
    drops = False
    for _h, records in _segment_records(segment):
        for r in records:
            if not _rebuildable(r):
                logger.warning("%s: offset %d has a key or value that is not bytes; segment %d is left "
                               "uncompacted", segment.directory, r[0], segment.base_offset)
                return False
            drops = drops or not _keeps(r, latest, horizon_ms)
    return drops


def _kept_batches(segment: LogSegment, latest: dict, horizon_ms: int, stats: CleanStats):
    """The rebuilt batches of ``segment`` (bytes each), one per run of consecutive kept offsets."""
    for h, records in _segment_records(segment):
        run: list[tuple] = []
        for rec in records:
            offset, timestamp, key, value, headers = rec
            stats.records_read += 1
            keep = _keeps(rec, latest, horizon_ms)
            if keep and run and run[-1][0] + 1 != offset:
                yield _batch(run, h.attributes)
                run = []
            if keep:
                run.append((offset, timestamp, key, value, headers))
                stats.records_kept += 1
        if run:
            yield _batch(run, h.attributes)


def _batch(run: list[tuple], attributes: int) -> bytes:
    return build_batch([(key, value, ts, headers) for _, ts, key, value, headers in run],
                       base_offset=run[0][0], attributes=attributes)


def _write_segment(scratch: str, old: LogSegment, batches, config) -> bool:
    """Write ``batches`` as a sealed, fsynced segment named like ``old`` in ``scratch``; False if none."""
    new = LogSegment(scratch, old.base_offset, config.segment_index_bytes, config.index_interval_bytes,
                     active=True)
    try:
        new.open_indexes(expect_existing=False)
        pending, headers = bytearray(), []
        for data in batches:
            headers.append(read_header(data))
            pending += data
            if len(pending) >= _WRITE_CHUNK:
                new.append(memoryview(pending), headers)
                pending, headers = bytearray(), []
        if pending:
            new.append(memoryview(pending), headers)
        wrote = new.size > 0
        new.seal()
        new.flush(indexes=True)
    finally:
        new.close()
    return wrote


def _swap_in(directory: str, scratch: str, base_offset: int) -> None:
    """Steps (b)-(d) of the swap protocol in the module docstring."""
    for suffix in (INDEX_SUFFIX, TIME_INDEX_SUFFIX):
        try:
            os.unlink(os.path.join(directory, segment_file_name(base_offset, suffix)))
        except FileNotFoundError:
            pass
    fsync_dir(directory)
    for suffix in (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX):  # the .log first: the commit point
        name = segment_file_name(base_offset, suffix)
        os.replace(os.path.join(scratch, name), os.path.join(directory, name))
    fsync_dir(directory)


def clean(log, now_ms: int) -> CleanStats:
    """Compact every sealed segment of ``log`` (see the module docstring); returns what was done."""
    stats = CleanStats()
    sealed = log.segments[:-1]
    if not sealed:
        return stats
    cleaned_up_to = log.active_segment.base_offset
    log.flush(now_ms)
    log.write_recovery_checkpoint()

    latest: dict[bytes, int] = {}
    for segment in sealed:
        for _h, records in _segment_records(segment):
            for offset, _ts, key, _value, _headers in records:
                if key.__class__ is bytes:  # None: kept; anything else: its segment is not rewritten
                    latest[key] = offset
    horizon = now_ms - log.config.delete_retention_ms

    scratch = os.path.join(log.directory, CLEANER_DIR)
    shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(scratch)
    try:
        for segment in sealed:
            if not _drops_anything(segment, latest, horizon):
                continue  # leave the file alone (e.g. cleaned before and nothing new supersedes it)
            # Streamed: the rebuilt segment is never whole in memory.
            if not _write_segment(scratch, segment, _kept_batches(segment, latest, horizon, stats), log.config):
                shutil.rmtree(scratch)
                os.makedirs(scratch)
                log.replace_segment(segment, None, now_ms)
                stats.segments_deleted += 1
                continue
            fsync_dir(scratch)
            _swap_in(log.directory, scratch, segment.base_offset)
            new = LogSegment(log.directory, segment.base_offset, log.config.segment_index_bytes,
                             log.config.index_interval_bytes, active=False)
            new.open_indexes()
            new.load_from_indexes()
            log.replace_segment(segment, new, now_ms)
            stats.segments_rewritten += 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    write_offset_checkpoint(os.path.join(log.directory, CLEANER_CHECKPOINT_FILE), cleaned_up_to)
    logger.info("%s: compacted %d sealed segment(s): rewrote %d keeping %d of %d records, deleted %d",
                log.directory, len(sealed), stats.segments_rewritten, stats.records_kept, stats.records_read,
                stats.segments_deleted)
    return stats
