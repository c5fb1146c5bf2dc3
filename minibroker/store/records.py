"""The journal's on-disk format: segment headers and length + CRC32 + type + msgpack records.

A segment file starts with a 16-byte header, then records back to back:

    segment header: magic b"MBJRNL01" (8) | next message id when the segment was created (u64 BE)
    record:         payload length N (u32 BE) | CRC32 of type byte + payload (u32 BE) | type (u8) | payload (N bytes, one msgpack array)

Record payloads (msgpack arrays):

    PUBLISH  [msg_id, queues, exchange, routing_key, properties_bin, published_at_ms, deliveries, body]
    SETTLE   [queue, reason, [msg_id, ...]]
    DELIVERY [queue, [msg_id, delivery_count, msg_id, delivery_count, ...]]

The body is the last element of PUBLISH, so its bytes are the last len(body) bytes of the
record: the body can be read back with one `os.pread` and no unpacking. `properties_bin` is the
message's property map packed on its own, so recovery can share one dict among messages with
equal properties. `deliveries` is `{queue: delivery_count}` and is empty in a fresh publish;
compaction fills it when it copies a message that was already delivered.

Segments are preallocated (journal.py, `MessageJournal._preallocate`), so a segment that was
not closed cleanly ends in zeros after its last record. A zero header cannot be a record (type 0
is unknown), so `iter_records` stops there; `nonzero_end` tells such an unused tail (nothing to
report) from a torn record (non-zero bytes past the last whole record).

This module knows bytes only; what the records mean is `journal.py`'s business.
"""

import os
import struct
import zlib

SEGMENT_MAGIC = b"MBJRNL01"
SEGMENT_HEADER = struct.Struct(">8sQ")
RECORD_HEADER = struct.Struct(">IIB")
HEADER_SIZE = RECORD_HEADER.size  # 9

PUBLISH = 1
SETTLE = 2
DELIVERY = 3
RECORD_TYPES = (PUBLISH, SETTLE, DELIVERY)

# A record claiming to be longer than this is garbage (a torn or flipped length field), not
# a record: refusing it stops recovery from trying to read gigabytes.
MAX_PAYLOAD = 256 * 1024 * 1024

_TYPE_CRC = {t: zlib.crc32(bytes([t])) for t in RECORD_TYPES}


def encode_record(rtype: int, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, _TYPE_CRC[rtype])
    return RECORD_HEADER.pack(len(payload), crc, rtype) + payload


def encode_segment_header(next_msg_id: int) -> bytes:
    return SEGMENT_HEADER.pack(SEGMENT_MAGIC, next_msg_id)


def decode_segment_header(data: bytes) -> int | None:
    """The next-message-id of a segment header, or None when the header is missing or wrong."""
    if len(data) < SEGMENT_HEADER.size:
        return None
    magic, next_id = SEGMENT_HEADER.unpack_from(data)
    return next_id if magic == SEGMENT_MAGIC else None


def iter_records(fd: int, start: int, end: int, chunk: int = 1 << 20):
    """Yield (offset, rtype, payload) for the whole, valid records of fd between start and end.

    Stops at the first record that is cut short, has an unknown type, an absurd length or a
    wrong CRC; the generator's return value (StopIteration.value) is the offset where the
    valid records end. Reads `chunk` bytes at a time with os.pread, so memory stays bounded
    whatever the segment size.
    """
    pos = start
    buf = b""
    buf_start = start
    while True:
        rel = pos - buf_start
        if len(buf) - rel < HEADER_SIZE:
            if buf_start + len(buf) >= end:
                return pos
            buf = buf[rel:] + os.pread(fd, min(chunk, end - buf_start - len(buf)), buf_start + len(buf))
            buf_start = pos
            if len(buf) < HEADER_SIZE:
                return pos
            continue
        length, crc, rtype = RECORD_HEADER.unpack_from(buf, rel)
        if rtype not in _TYPE_CRC or length > MAX_PAYLOAD:
            return pos
        total = HEADER_SIZE + length
        if len(buf) - rel < total:
            if pos + total > end:
                return pos
            want = max(chunk, total)
            buf = buf[rel:] + os.pread(fd, min(want, end - buf_start - len(buf)), buf_start + len(buf))
            buf_start = pos
            if len(buf) < total:
                return pos
            continue
        payload = buf[rel + HEADER_SIZE:rel + total]
        if zlib.crc32(payload, _TYPE_CRC[rtype]) != crc:
            return pos
        yield pos, rtype, payload
        pos += total


RESYNC_WINDOW = 4 << 20   # bytes searched past a damaged record for the next whole one


def record_at(fd: int, pos: int, end: int) -> bool:
    """Whether a whole record with a right CRC starts at `pos` (and ends by `end`)."""
    header = os.pread(fd, HEADER_SIZE, pos)
    if len(header) < HEADER_SIZE:
        return False
    length, crc, rtype = RECORD_HEADER.unpack(header)
    if rtype not in _TYPE_CRC or length > MAX_PAYLOAD or pos + HEADER_SIZE + length > end:
        return False
    payload = os.pread(fd, length, pos + HEADER_SIZE)
    return len(payload) == length and zlib.crc32(payload, _TYPE_CRC[rtype]) == crc


def next_record(fd: int, bad: int, end: int) -> int | None:
    """Where the next whole record starts after a damaged one at `bad`, or None (a torn tail).

    A bit flipped in a payload leaves the record's length intact, so the next record is right
    after it: that is tried first. Otherwise each later offset (within `RESYNC_WINDOW`) whose
    type byte is a known type is tried; a CRC-32 match by chance is about one in four billion.
    """
    header = os.pread(fd, HEADER_SIZE, bad)
    if len(header) == HEADER_SIZE:
        length = RECORD_HEADER.unpack(header)[0]
        after = bad + HEADER_SIZE + length
        if length <= MAX_PAYLOAD and after < end and record_at(fd, after, end):
            return after
    stop = min(end, bad + RESYNC_WINDOW)
    data = os.pread(fd, stop - bad, bad)
    candidates = sorted(i for t in RECORD_TYPES for i in _find_all(data, bytes([t]), 9) if i - 8 > 0)
    for i in candidates:
        if record_at(fd, bad + i - 8, end):
            return bad + i - 8
    return None


def _find_all(data: bytes, needle: bytes, start: int):
    i = data.find(needle, start)
    while i != -1:
        yield i
        i = data.find(needle, i + 1)


def nonzero_end(fd: int, start: int, end: int, chunk: int = 1 << 20) -> int:
    """The offset just past the last non-zero byte of fd in [start, end); `start` if all are zero."""
    last = start
    pos = start
    while pos < end:
        # Skip what the file system knows to hold no data (preallocated, never written).
        try:
            pos = os.lseek(fd, pos, os.SEEK_DATA)
            stop = min(end, os.lseek(fd, pos, os.SEEK_HOLE))
        except OSError:      # ENXIO: no data at all past pos; or no SEEK_DATA here: read it all
            if pos != start or not hasattr(os, "SEEK_DATA"):
                break
            stop = end
        while pos < stop:
            data = os.pread(fd, min(chunk, stop - pos), pos)
            if not data:
                return last
            stripped = len(data.rstrip(b"\0"))
            if stripped:
                last = pos + stripped
            pos += len(data)
    return last
