"""LogLoader: open a partition directory and bring it back to a consistent log.

Holds the start-up procedure (documented step by step in
``docs/minilog-storage.md``, "Recovery"):

1. remove leftovers of interrupted work: ``*.deleted`` segments whose delete
   was pending, ``*.tmp`` checkpoint files, index files without a ``.log``,
   the cleaner's scratch directory (``cleaner.py``);
2. read the recovery-point and log-start checkpoints and whether the last
   close was clean (``.clean-shutdown``, removed now so a crash re-triggers
   recovery);
3. open every segment; a missing or unreadable index is rebuilt from its log;
4. after an unclean shutdown, validate batch by batch every segment from the
   one holding the recovery point onwards: the first bad or partial batch and
   everything after it (including later segments) is cut off, and the indexes
   are rebuilt — which also discards preallocated index entries beyond the log.
   A segment of that range that does not continue the one before it (that one
   lost pages, or all of them) is cut off with everything after it too;
5. fsync what was repaired and move the recovery point to the log end.

Corruption is repaired, never raised: a broken log must not stop a broker.
Appending and reading are ``log.py``'s; per-segment validation is
``segment.py``'s ``LogSegment.recover``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from dataclasses import dataclass

from clients.record_batch import BatchError

from .checkpoint import (LOG_START_OFFSET_FILE, RECOVERY_POINT_FILE, TEMP_SUFFIX, fsync_dir, read_json,
                         read_offset_checkpoint, write_json, write_offset_checkpoint)
from .cleaner import CLEANER_DIR
from .config import LogConfig
from .index_file import CorruptIndexError
from .log import CLEAN_SHUTDOWN_FILE
from .segment import (DELETED_SUFFIX, INDEX_SUFFIX, LOG_SUFFIX, QUARANTINE_DIR, REPAIR_SUFFIX, TIME_INDEX_SUFFIX,
                      LogSegment)

logger = logging.getLogger("minilog.storage")

LOST_OFFSETS_FILE = "lost-offsets.json"

_SEGMENT_FILE = re.compile(r"^(\d{20})(\.log|\.index|\.timeindex)$")


@dataclass
class LoadedLog:
    segments: list[LogSegment]
    log_start_offset: int
    recovery_point: int
    truncated_bytes: int
    recovered_segments: int
    lost_ranges: list  # [(first_offset, end_offset)]: offsets recovery found damaged, sorted


def read_lost_offsets(directory: str) -> list[tuple[int, int]]:
    """The offset ranges recorded as lost to damaged data (``lost-offsets.json``), sorted."""
    path = os.path.join(directory, LOST_OFFSETS_FILE)
    if not os.path.exists(path):
        return []
    try:
        doc = read_json(path)
        return merge_lost_ranges([(int(a), int(b)) for a, b in doc["lost"]], 0)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.error("%s: unreadable %s (%s): the offset ranges lost before are no longer known",
                     directory, LOST_OFFSETS_FILE, exc)
        return []


def write_lost_offsets(directory: str, ranges) -> None:
    write_json(os.path.join(directory, LOST_OFFSETS_FILE),
               {"version": 0, "lost": [list(r) for r in merge_lost_ranges(ranges, 0)]})


def merge_lost_ranges(ranges, log_start: int) -> list[tuple[int, int]]:
    """Sorted, non-overlapping ``[first, end)`` ranges, without those wholly below ``log_start``."""
    out: list[tuple[int, int]] = []
    for a, b in sorted((a, b) for a, b in ranges if b > a and b > log_start):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


class LogLoader:
    def __init__(self, directory: str, config: LogConfig):
        self.directory = directory
        self.config = config

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def _remove(self, name: str, why: str) -> None:
        logger.info("%s: removing %s (%s)", self.directory, name, why)
        try:
            os.unlink(self._path(name))
        except FileNotFoundError:
            pass

    def _segment_bases(self) -> list[int]:
        logs, indexes = set(), []
        cleaning = self._path(CLEANER_DIR)
        if os.path.isdir(cleaning):
            # A clean interrupted before its swap: the segments it was rewriting are untouched.
            logger.info("%s: removing %s (unfinished compaction)", self.directory, CLEANER_DIR)
            shutil.rmtree(cleaning, ignore_errors=True)
        for name in os.listdir(self.directory):
            if name.endswith(DELETED_SUFFIX):
                self._remove(name, "segment deleted before the last shutdown")
                continue
            if name.endswith(TEMP_SUFFIX):
                self._remove(name, "unfinished checkpoint write")
                continue
            if name.endswith(REPAIR_SUFFIX):
                self._remove(name, "unfinished segment repair (the segment itself is untouched)")
                continue
            m = _SEGMENT_FILE.match(name)
            if m is None:
                continue
            if m.group(2) == LOG_SUFFIX:
                logs.add(int(m.group(1)))
            else:
                indexes.append((int(m.group(1)), name))
        for base, name in indexes:
            if base not in logs:
                self._remove(name, "index without a log file")
        return sorted(logs)

    def load(self) -> LoadedLog:
        started = time.monotonic()
        os.makedirs(self.directory, exist_ok=True)
        bases = self._segment_bases()
        recovery_point = read_offset_checkpoint(self._path(RECOVERY_POINT_FILE)) or 0
        log_start = read_offset_checkpoint(self._path(LOG_START_OFFSET_FILE)) or 0
        clean = os.path.exists(self._path(CLEAN_SHUTDOWN_FILE))
        if clean:
            os.unlink(self._path(CLEAN_SHUTDOWN_FILE))
            fsync_dir(self.directory)
        lost = read_lost_offsets(self.directory)

        fresh = not bases
        if fresh:
            bases = [log_start]
        segments: list[LogSegment] = []
        try:
            return self._load_segments(segments, bases, fresh, clean, recovery_point, log_start, lost, started)
        except BaseException:
            # Out of descriptors or space halfway (a wide topic being created): the files opened so
            # far are closed, or each failure would leak a partition's descriptors to the caller.
            for segment in segments:
                try:
                    segment.close()
                except OSError:
                    pass
            raise

    def _load_segments(self, segments: list, bases: list[int], fresh: bool, clean: bool, recovery_point: int,
                       log_start: int, lost: list, started: float) -> LoadedLog:
        recorded = list(lost)
        cfg = self.config
        for i, base in enumerate(bases):
            segments.append(LogSegment(self.directory, base, cfg.segment_index_bytes, cfg.index_interval_bytes,
                                       active=(i == len(bases) - 1)))

        # Unclean: the segment holding the recovery point and all later ones may hold unflushed bytes.
        recover_from = None
        if not clean and not fresh:
            recover_from = bases[0]
            for base in bases:
                if base <= recovery_point:
                    recover_from = base

        def record_before_rewrite(ranges) -> None:
            # The gap must be on record before the bytes leave the segment (see LogSegment.recover).
            write_lost_offsets(self.directory, lost + [(r.first_offset, r.end_offset) for r in ranges])

        truncated = 0
        recovered = 0
        kept: list[LogSegment] = []
        for i, segment in enumerate(segments):
            unflushed = recover_from is not None and segment.base_offset >= recover_from
            needs_recovery = unflushed
            try:
                segment.open_indexes()
            except CorruptIndexError as exc:
                logger.warning("%s: rebuilding index: %s", self.directory, exc)
                segment.discard_indexes()
                needs_recovery = True
            if not needs_recovery:
                try:
                    segment.load_from_indexes()
                except Exception as exc:  # CorruptIndexError, BatchError, or anything a damaged file provokes
                    logger.warning("%s: rebuilding indexes of segment %d: %s", self.directory,
                                   segment.base_offset, exc)
                    needs_recovery = True
            if needs_recovery:
                recovered += 1
                repair = segment.recover(allow_gaps=cfg.compacts, known_gaps=dict(lost),
                                         before_rewrite=record_before_rewrite)
                for r in repair.lost:
                    logger.error("%s: offsets %d..%d are lost: %d damaged bytes at position %d of segment %d "
                                 "(not a torn tail: valid batches follow them) were taken out and kept in %s/; "
                                 "every valid batch was kept, and a fetch of those offsets gets CORRUPT_MESSAGE",
                                 self.directory, r.first_offset, r.end_offset - 1, r.length, r.position,
                                 segment.base_offset, QUARANTINE_DIR)
                    lost.append((r.first_offset, r.end_offset))
                if repair.tail is not None:
                    truncated += repair.cut_bytes
                    later = [s for s in segments[i + 1:] if s.size]
                    if later:
                        logger.error("%s: the last %d bytes of segment %d (from offset %d) are damaged and were "
                                     "cut off; the %d later segment(s) are kept", self.directory,
                                     repair.cut_bytes, segment.base_offset, segment.next_offset, len(later))
                    else:
                        logger.warning("%s: truncated %d bytes of segment %d at offset %d (invalid or partial "
                                       "batch: a torn tail)", self.directory, repair.cut_bytes,
                                       segment.base_offset, segment.next_offset)
            if kept and kept[-1].next_offset != segment.base_offset:
                gap_from = kept[-1].next_offset
                if segment.size == 0 and i < len(segments) - 1:
                    self._drop(segment, "empty segment that does not continue the log")
                    continue
                if segment.base_offset < gap_from:
                    # Two segments claim the same offsets: only the earlier one can be right.
                    truncated += segment.size
                    logger.error("%s: segment %d overlaps offsets up to %d of the segment before it",
                                 self.directory, segment.base_offset, gap_from - 1)
                    self._drop(segment, "overlaps the segment before it")
                    continue
                if cfg.compacts:
                    logger.info("%s: offsets %d..%d are missing between segments (compaction)", self.directory,
                                gap_from, segment.base_offset - 1)
                elif dict(lost).get(gap_from) != segment.base_offset:
                    # A segment lost its tail (or all of it) while a later one survived. The later
                    # records are kept and the hole is never handed out again: its offsets may have
                    # been acknowledged and read.
                    logger.error("%s: offsets %d..%d are lost (missing between segments); the later segments "
                                 "are kept, and a fetch of those offsets gets CORRUPT_MESSAGE", self.directory,
                                 gap_from, segment.base_offset - 1)
                    lost.append((gap_from, segment.base_offset))
            kept.append(segment)

        # A zero-size segment in the middle holds nothing; keeping only the last one empty keeps roll simple.
        final = [s for i, s in enumerate(kept) if s.size or i == len(kept) - 1]
        for segment in kept:
            if segment not in final:
                self._drop(segment, "empty segment in the middle of the log")
        kept = final
        if not fresh and recovery_point > kept[-1].next_offset:
            # Offsets below the recovery point were fsynced, so they may have been acknowledged:
            # the disk lost them (damage, not a torn tail). Never give them to new records.
            end = kept[-1].next_offset
            logger.error("%s: offsets %d..%d were flushed before the last shutdown and are gone; the log "
                         "continues at %d", self.directory, end, recovery_point - 1, recovery_point)
            lost.append((end, recovery_point))
            if kept[-1].size == 0:
                self._drop(kept.pop(), "empty, below the recovery point")
            kept.append(LogSegment(self.directory, recovery_point, cfg.segment_index_bytes,
                                   cfg.index_interval_bytes, active=True))
            segments.append(kept[-1])
            kept[-1].open_indexes(expect_existing=False)
        # A crash between writing the log-start checkpoint and renaming the segments leaves them behind.
        while len(kept) > 1 and kept[0].next_offset <= log_start:
            self._drop(kept.pop(0), "below the checkpointed log start offset")
        for segment in kept[:-1]:
            if segment.active or segment.index.free_slots:
                segment.active = True  # seal() trims whatever preallocation an unclean shutdown left
                segment.seal()
        last = kept[-1]
        if not last.active:
            last.active = True
            last.index.make_writable()
            last.time_index.make_writable()

        log_end = last.next_offset
        log_start = min(max(log_start, kept[0].base_offset), log_end)
        lost = merge_lost_ranges(lost, log_start)
        if lost != recorded:
            write_lost_offsets(self.directory, lost)
        if recovered or recovery_point > log_end:
            for segment in kept:
                if recover_from is not None and segment.base_offset >= recover_from:
                    segment.flush(indexes=True)
            recovery_point = log_end
            write_offset_checkpoint(self._path(RECOVERY_POINT_FILE), recovery_point)
        elif clean:
            recovery_point = log_end  # a clean close flushed everything

        if fresh:
            logger.info("%s: new empty log, first start", self.directory)
            return LoadedLog(kept, log_start, recovery_point, truncated, recovered, lost)
        logger.info("%s: loaded %d segment(s) in %.1f ms after %s shutdown: log start offset %d, log end offset %d, "
                    "recovered %d segment(s), truncated %d bytes%s",
                    self.directory, len(kept), (time.monotonic() - started) * 1000,
                    "a clean" if clean else "an unclean", log_start, log_end, recovered,
                    truncated, f", lost offset ranges {lost}" if lost else "")
        return LoadedLog(kept, log_start, recovery_point, truncated, recovered, lost)

    def _drop(self, segment: LogSegment, why: str) -> None:
        logger.warning("%s: deleting segment %d (%d bytes): %s", self.directory, segment.base_offset,
                       segment.size, why)
        segment.close()
        for suffix in (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX):
            try:
                os.unlink(os.path.join(self.directory, f"{segment.base_offset:020d}{suffix}"))
            except FileNotFoundError:
                pass
