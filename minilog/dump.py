"""Read minilog's files offline and say what they hold and whether they are sound: `minilog dump`.

The counterpart of kafka-dump-log, for operators and for people learning the on-disk format
(docs/minilog-storage.md). Given a segment (`.log`), an offset index (`.index`), a time index
(`.timeindex`), a partition directory or a whole data directory, it prints

- per batch: base and last offset, record count, position, size, first and max timestamp, the
  stored CRC and whether the bytes match it (`--records` adds every record);
- per index entry: what it maps, checked against the segment beside it (the batch at that
  position must start at that offset; a time entry must name a batch with that max timestamp);
- per partition directory: the offset ranges recovery took out of the log as damaged
  (`lost-offsets.json`: gaps a fetch of which gets CORRUPT_MESSAGE) and the damaged bytes it kept
  in `quarantine/`; and in a segment, every gap between batches, with its cause when it is known
  (a recorded lost range; otherwise compaction, which also leaves gaps).

It only reads (files are opened read-only and never mapped writable), and it never trusts a
length it has not bounded by the file size: a truncated or corrupt file is reported, line by
line, and the exit status is 1 when anything was wrong, 2 when the path is unusable.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import zlib

from clients import kafka_batch
from clients.record_batch import (HEADER_SIZE, LOG_OVERHEAD, MAGIC, BatchHeader, TruncatedBatchError, decode_batch,
                                  read_header)

from .storage.offset_index import OffsetIndex
from .storage.recovery import LOST_OFFSETS_FILE
from .storage.segment import INDEX_SUFFIX, LOG_SUFFIX, QUARANTINE_DIR, TIME_INDEX_SUFFIX
from .storage.time_index import TimeIndex

_CRC_START = 17                 # the CRC covers the batch from the attributes field on
_MIN_LENGTH = HEADER_SIZE - LOG_OVERHEAD + 1
_SHOWN_BYTES = 60               # a key or value longer than this is shown cut, with its length


class Report:
    """Collects the lines to print (or the objects for --json) and counts problems."""

    def __init__(self, as_json: bool, out):
        self.as_json = as_json
        self.out = out
        self.problems = 0
        self.files: list[dict] = []

    def file(self, path: str, kind: str) -> dict:
        entry = {"file": path, "kind": kind, "items": [], "problems": []}
        self.files.append(entry)
        if not self.as_json:
            print(f"Dumping {path} ({kind})", file=self.out)
        return entry

    def item(self, entry: dict, obj: dict, line: str) -> None:
        entry["items"].append(obj)
        if not self.as_json:
            print(line, file=self.out)

    def problem(self, entry: dict, text: str) -> None:
        self.problems += 1
        entry["problems"].append(text)
        if not self.as_json:
            print(f"  PROBLEM: {text}", file=self.out)

    def finish(self) -> int:
        if self.as_json:
            json.dump({"files": self.files, "problems": self.problems}, self.out, indent=1)
            print(file=self.out)
        elif self.problems:
            print(f"{self.problems} problem(s) found", file=self.out)
        return 1 if self.problems else 0


def _base_offset_of(path: str) -> int | None:
    stem = os.path.basename(path).split(".", 1)[0]
    return int(stem) if stem.isdigit() else None


def _show(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        try:
            text = bytes(value).decode()
        except UnicodeDecodeError:
            text = bytes(value).hex()
        return text if len(text) <= _SHOWN_BYTES else f"{text[:_SHOWN_BYTES]}... ({len(value)} B)"
    return str(value)


# ---- segments ---------------------------------------------------------------------------------

def scan_batches(data: bytes):
    """Walk the batches of a segment's bytes, never trusting a length beyond the data.

    Yields (position, header or None, problem or None). A batch whose CRC does not match is
    yielded with the problem and the walk goes on (its length is still sound); a batch whose
    header is impossible or that runs past the end stops the walk, as recovery would cut there.
    """
    pos, n = 0, len(data)
    while pos < n:
        if n - pos < HEADER_SIZE:
            if not any(data[pos:]):
                yield pos, None, f"{n - pos} zero bytes after the last batch (preallocated or torn tail)"
            else:
                yield pos, None, f"truncated batch header at position {pos}: {n - pos} of {HEADER_SIZE} bytes"
            return
        try:
            h = read_header(data, pos)
        except TruncatedBatchError:  # a Kafka batch's longer header cut short
            yield pos, None, f"truncated batch header at position {pos}: {n - pos} bytes"
            return
        if h.length == 0 and not any(data[pos:pos + HEADER_SIZE]):
            yield pos, None, f"{n - pos} bytes of zeros from position {pos} (preallocated or torn tail)"
            return
        if h.length < _MIN_LENGTH or h.magic not in (MAGIC, kafka_batch.MAGIC) or h.record_count < 1:
            yield pos, None, (f"no valid batch at position {pos} (length {h.length}, magic {h.magic}, "
                              f"record count {h.record_count}); {n - pos} bytes from here are unreadable")
            return
        end = pos + LOG_OVERHEAD + h.length
        if end > n:
            yield pos, h, f"truncated batch at position {pos}: needs {h.size} bytes, the file holds {n - pos}"
            return
        if h.magic == kafka_batch.MAGIC:   # a Kafka client's batch: CRC-32C from its attributes on
            crc = kafka_batch.crc32c(memoryview(data)[pos + 21:end])
        else:
            crc = zlib.crc32(memoryview(data)[pos + _CRC_START:end])
        yield pos, h, None if crc == h.crc else f"crc mismatch at position {pos}: stored {h.crc:#010x}, computed {crc:#010x}"
        pos = end


def dump_segment(report: Report, path: str, records: bool, lost=None) -> dict[int, BatchHeader]:
    """Report every batch of a `.log` file; returns {position: header} of its valid batches.

    `lost` is the partition's recorded lost ranges (`read_lost_ranges`; None: read them from the
    file's directory); a gap between two batches is reported with the ranges that explain it.
    """
    entry = report.file(path, "segment")
    if lost is None:
        lost = read_lost_ranges(os.path.dirname(path) or ".")[0]
    with open(path, "rb") as f:
        data = f.read()
    base = _base_offset_of(path)
    valid: dict[int, BatchHeader] = {}
    expected = base
    for pos, h, problem in scan_batches(data):
        if h is None or pos + h.size > len(data):
            report.problem(entry, problem)
            continue
        crc_ok = problem is None
        obj = {"base_offset": h.base_offset, "last_offset": h.last_offset, "count": h.record_count,
               "position": pos, "size": h.size, "first_timestamp": h.first_timestamp,
               "max_timestamp": h.max_timestamp, "crc": h.crc, "crc_valid": crc_ok}
        report.item(entry, obj, (
            f"baseOffset: {h.base_offset} lastOffset: {h.last_offset} count: {h.record_count} position: {pos} "
            f"size: {h.size} firstTimestamp: {h.first_timestamp} maxTimestamp: {h.max_timestamp} "
            f"crc: {h.crc:#010x} crcValid: {str(crc_ok).lower()}"))
        if problem is not None:
            report.problem(entry, problem)
            continue
        if expected is not None and h.base_offset < expected:
            report.problem(entry, f"batch at position {pos} starts at offset {h.base_offset}, "
                                  f"before the end of the previous one ({expected})")
        elif expected is not None and h.base_offset > expected:
            _report_gap(report, entry, expected, h.base_offset, lost)
        expected = h.next_offset
        valid[pos] = h
        if records:
            try:
                _, recs = decode_batch(data, pos, verify=False)
            except ValueError as exc:
                report.problem(entry, f"records of the batch at position {pos} do not decode: {exc}")
                continue
            rows = []
            for offset, ts, key, value, headers in recs:
                row = {"offset": offset, "timestamp": ts, "key": _show(key), "value": _show(value),
                       "headers": [[k, _show(v)] for k, v in headers] if headers else []}
                rows.append(row)
                if not report.as_json:
                    hdrs = " headers: " + ",".join(f"{k}={v}" for k, v in row["headers"]) if headers else ""
                    print(f"| offset: {offset} timestamp: {ts} key: {row['key']} value: {row['value']}{hdrs}",
                          file=report.out)
            obj["records"] = rows
    return valid


def _report_gap(report: Report, entry: dict, first: int, end: int, lost) -> None:
    """A gap of offsets [first, end) before a batch: lost to damage (recorded), or left by compaction."""
    known = [(a, b) for a, b in lost if a < end and b > first]
    if known:
        ranges = ", ".join(f"{max(a, first)}..{min(b, end) - 1}" for a, b in known)
        why = f"lost to damaged data ({LOST_OFFSETS_FILE}: {ranges})"
    else:
        why = f"not in {LOST_OFFSETS_FILE}: records removed by compaction (or a first segment's start)"
    # Beside the batches ("items"), not among them: a JSON reader summing batches sees only batches.
    entry.setdefault("gaps", []).append({"first_offset": first, "last_offset": end - 1, "lost": bool(known)})
    if not report.as_json:
        print(f"gap: offsets {first}..{end - 1} ({end - first}) are not in this segment: {why}", file=report.out)


def read_lost_ranges(directory: str) -> tuple[list[tuple[int, int]], str | None]:
    """The partition's recorded lost ranges, [first, end) each, and a problem text if the file is unusable.

    Read here rather than through recovery's `read_lost_offsets`, which logs and forgets a bad
    file: an offline tool reports it instead.
    """
    path = os.path.join(directory, LOST_OFFSETS_FILE)
    if not os.path.exists(path):
        return [], None
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
        ranges = []
        for pair in doc["lost"]:
            first, end = pair
            if type(first) is not int or type(end) is not int or not 0 <= first < end:
                raise ValueError(f"not a range [first, end): {pair!r}")
            ranges.append((first, end))
        return sorted(ranges), None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [], f"unreadable ({exc}): the offset ranges lost before are no longer known"


def dump_lost_offsets(report: Report, directory: str) -> list[tuple[int, int]]:
    """Report a partition's lost ranges and quarantined bytes; returns the ranges."""
    path = os.path.join(directory, LOST_OFFSETS_FILE)
    quarantine = os.path.join(directory, QUARANTINE_DIR)
    if not os.path.exists(path) and not os.path.isdir(quarantine):
        return []
    entry = report.file(path, "lost offsets")
    ranges, problem = read_lost_ranges(directory)
    if problem is not None:
        report.problem(entry, f"{LOST_OFFSETS_FILE} is {problem}")
    for first, end in ranges:
        report.item(entry, {"first_offset": first, "last_offset": end - 1, "count": end - first},
                    f"lost: offsets {first}..{end - 1} ({end - first}): taken out as damaged at recovery; "
                    f"a fetch of them gets CORRUPT_MESSAGE")
    if os.path.isdir(quarantine):
        for name in sorted(os.listdir(quarantine)):
            size = os.path.getsize(os.path.join(quarantine, name))
            report.item(entry, {"quarantined": os.path.join(QUARANTINE_DIR, name), "bytes": size},
                        f"quarantined: {QUARANTINE_DIR}/{name} ({size} damaged bytes taken out of a segment)")
    return ranges


# ---- indexes ----------------------------------------------------------------------------------

def _read_entries(report: Report, entry: dict, path: str, layout: struct.Struct) -> list[tuple]:
    with open(path, "rb") as f:
        data = f.read()
    usable = len(data) - len(data) % layout.size
    if usable != len(data):
        report.problem(entry, f"size {len(data)} is not a multiple of the {layout.size}-byte entry; "
                              f"the last {len(data) - usable} bytes are ignored")
    entries = []
    for i in range(usable // layout.size):
        raw = data[i * layout.size:(i + 1) * layout.size]
        if i > 0 and not any(raw):
            break   # the preallocated tail of an active segment's index
        entries.append(layout.unpack(raw))
    return entries


def _segment_batches(log_path: str) -> dict[int, BatchHeader] | None:
    if not os.path.exists(log_path):
        return None
    with open(log_path, "rb") as f:
        data = f.read()
    return {pos: h for pos, h, problem in scan_batches(data) if h is not None and problem is None}


def dump_offset_index(report: Report, path: str, batches: dict[int, BatchHeader] | None) -> None:
    entry = report.file(path, "offset index")
    base = _base_offset_of(path) or 0
    last = (-1, -1)
    for rel, position in _read_entries(report, entry, path, OffsetIndex.ENTRY):
        offset = base + rel
        report.item(entry, {"offset": offset, "position": position}, f"offset: {offset} position: {position}")
        if (rel, position) <= last or rel <= last[0] or position <= last[1]:
            report.problem(entry, f"entry (offset {offset}, position {position}) does not follow the previous one")
        last = (rel, position)
        if batches is None:
            continue
        h = batches.get(position)
        if h is None:
            report.problem(entry, f"index offset {offset} points at position {position}, where no valid batch starts")
        elif h.base_offset != offset:
            report.problem(entry, f"index offset {offset}, log offset {h.base_offset} at position {position}")
    if batches is None:
        report.problem(entry, "no .log file beside it: entries not checked against the log")


def dump_time_index(report: Report, path: str, batches: dict[int, BatchHeader] | None) -> None:
    entry = report.file(path, "time index")
    base = _base_offset_of(path) or 0
    by_offset = {h.base_offset: h for h in (batches or {}).values()}
    last_ts = None
    for ts, rel in _read_entries(report, entry, path, TimeIndex.ENTRY):
        offset = base + rel
        report.item(entry, {"timestamp": ts, "offset": offset}, f"timestamp: {ts} offset: {offset}")
        if last_ts is not None and ts <= last_ts:
            report.problem(entry, f"timestamp {ts} at offset {offset} does not grow")
        last_ts = ts
        if batches is None:
            continue
        h = by_offset.get(offset)
        if h is None:
            report.problem(entry, f"time index offset {offset} is not the first offset of any valid batch")
        elif h.max_timestamp != ts:
            report.problem(entry, f"time index timestamp {ts} for offset {offset}, batch max timestamp {h.max_timestamp}")
    if batches is None:
        report.problem(entry, "no .log file beside it: entries not checked against the log")


# ---- directories ------------------------------------------------------------------------------

def _sibling(path: str, suffix: str) -> str:
    return path[: -len(os.path.splitext(path)[1])] + suffix


def dump_path(report: Report, path: str, records: bool, indexes: bool = True) -> None:
    if os.path.isdir(path):
        names = sorted(os.listdir(path))
        logs = [n for n in names if n.endswith(LOG_SUFFIX)]
        lost = dump_lost_offsets(report, path)
        for name in logs:
            log_path = os.path.join(path, name)
            batches = dump_segment(report, log_path, records, lost)
            if indexes:
                for suffix, fn in ((INDEX_SUFFIX, dump_offset_index), (TIME_INDEX_SUFFIX, dump_time_index)):
                    sibling = _sibling(log_path, suffix)
                    if os.path.exists(sibling):
                        fn(report, sibling, batches)
        for name in names:
            sub = os.path.join(path, name)
            if os.path.isdir(sub) and name != QUARANTINE_DIR:   # damaged bytes: listed above, not parsed
                dump_path(report, sub, records, indexes)
        return
    if path.endswith(LOG_SUFFIX):
        dump_segment(report, path, records)
    elif path.endswith(TIME_INDEX_SUFFIX):
        dump_time_index(report, path, _segment_batches(_sibling(path, LOG_SUFFIX)))
    elif path.endswith(INDEX_SUFFIX):
        dump_offset_index(report, path, _segment_batches(_sibling(path, LOG_SUFFIX)))
    else:
        raise ValueError(f"{path}: not a .log, .index or .timeindex file, nor a directory")


def main(argv=None, out=None) -> int:
    out = out or sys.stdout
    parser = argparse.ArgumentParser(
        prog="minilog dump", description="Print the batches and index entries of minilog files, checking each "
                                         "(offline: no server needed; nothing is written).")
    parser.add_argument("paths", nargs="+", metavar="SEGMENT|INDEX|DIR",
                        help="a .log, .index or .timeindex file, a partition directory or a data directory")
    parser.add_argument("--records", action="store_true", help="print every record of every batch")
    parser.add_argument("--no-indexes", action="store_true", help="in directories, dump only the .log files")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    args = parser.parse_args(argv)
    report = Report(args.json, out)
    for path in args.paths:
        if not os.path.exists(path):
            print(f"minilog dump: {path}: no such file or directory", file=sys.stderr)
            return 2
        try:
            dump_path(report, path, args.records, not args.no_indexes)
        except (ValueError, OSError) as exc:
            print(f"minilog dump: {exc}", file=sys.stderr)
            return 2
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
