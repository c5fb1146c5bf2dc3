"""The record batch: the unit a producer sends, a log stores and a consumer fetches.

This module holds the byte format shared by the minilog clients and broker, and
the functions that build, validate and decode it. It leaves everything about
where batches live (segments, indexes, offsets assignment policy) to
``minilog.storage``, and everything about how they travel to ``clients.protocol``.

The broker treats a batch as opaque bytes: it reads the fixed header, checks the
CRC, writes the base offset into the first eight bytes and appends the bytes to
its log. Only clients pack and unpack the records. See ``docs/minilog-storage.md``
("Record batch format") for the byte table; in short (all integers big-endian)::

    0  base_offset      i64  offset of the first record; written by the broker
    8  length           i32  number of bytes after this field (batch size - 12)
    12 magic            i8   format version, always 1
    13 crc              u32  zlib.crc32 of bytes [17, 12 + length)
    17 attributes       i16  reserved (compression etc.); 0 today
    19 record_count     i32  number of records, >= 1; offsets are dense
    23 first_timestamp  i64  ms since epoch of the first record
    31 max_timestamp    i64  largest record timestamp in the batch (ms)
    39 records          one msgpack array of records, each
                        [offset_delta, timestamp_delta, key, value, headers]

The CRC covers everything after itself, so the broker can rewrite the base
offset (and the length/magic are checked structurally) without recomputing it.

A minilog log also holds Kafka clients' batches (magic 2, ``clients/kafka_batch.py``) as they
came. Both formats start with the base offset and the length, so a log is walked the same
way; byte 12 tells them apart (our magic, 1, or the high byte of the Kafka batch's partition
leader epoch, which the broker sets to 0). ``read_header``, ``validate``, ``iter_batches``
and ``decode_batch`` here read both: a Kafka batch's header comes back as a ``BatchHeader``
with magic 2 (``record_count`` = the offsets it spans) and its records as the same tuples.
"""

from __future__ import annotations

import struct
import time
from collections import namedtuple
from itertools import repeat
from typing import Iterable, Iterator, Sequence

import msgpack

# The same CRC-32 as zlib's, computed with SIMD folding: about 15 times faster on a batch (13
# against 191 us per MiB here), and a replaying consumer checks it for every record it reads.
from zlib_ng.zlib_ng import crc32 as _crc32

__all__ = [
    "MAGIC",
    "HEADER_SIZE",
    "LOG_OVERHEAD",
    "BatchHeader",
    "BatchBuilder",
    "BatchError",
    "InvalidBatchError",
    "CorruptBatchError",
    "TruncatedBatchError",
    "build_batch",
    "pack_batch",
    "with_log_append_time",
    "record_size",
    "pack_plain_records",
    "pack_single",
    "RECORD_OVERHEAD",
    "decode_batch",
    "iter_batches",
    "read_header",
    "set_base_offset",
    "validate",
    "check_batch",
    "check_crc",
    "check_structure",
    "validate_records",
]

MAGIC = 1
_HEADER = struct.Struct(">qibIhiqq")
HEADER_SIZE = _HEADER.size  # 39
# Bytes before (and including) the length field: a batch occupies LOG_OVERHEAD + length.
LOG_OVERHEAD = 12
_CRC_START = 17  # first byte covered by the CRC (the attributes field)
_OFFSET = struct.Struct(">q")
_OFFSET_AND_LENGTH = struct.Struct(">qi")
_BEFORE_CRC_END = struct.Struct(">qibI")   # the header up to its CRC, and the rest the CRC covers
_CRC_TAIL = struct.Struct(">hiqq")
# A batch must at least hold its header and an empty msgpack array (1 byte).
_MIN_LENGTH = HEADER_SIZE - LOG_OVERHEAD + 1
_MAX_LENGTH = 0x7FFFFFFF - LOG_OVERHEAD


class BatchError(ValueError):
    """Base class of the errors raised for a malformed batch."""


class InvalidBatchError(BatchError):
    """The batch structure is wrong: bad length, magic, record count or records."""


class TruncatedBatchError(InvalidBatchError):
    """The buffer ends before the batch its header announces."""


class CorruptBatchError(BatchError):
    """The CRC stored in the batch does not match its bytes."""


class BatchHeader(namedtuple("BatchHeader", "base_offset length magic crc attributes "
                                            "record_count first_timestamp max_timestamp")):
    """The fixed 39-byte header of a batch, decoded."""

    __slots__ = ()

    @property
    def size(self) -> int:
        """Bytes the whole batch occupies (header and records)."""
        return LOG_OVERHEAD + self.length

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.record_count - 1

    @property
    def next_offset(self) -> int:
        """Offset of the first record after this batch."""
        return self.base_offset + self.record_count


_new_header = tuple.__new__


def read_header(buf, pos: int = 0) -> BatchHeader:
    """Decode the header at ``buf[pos:]`` without checking it (see :func:`validate`)."""
    if len(buf) - pos < HEADER_SIZE:
        raise TruncatedBatchError(
            f"need {HEADER_SIZE} bytes for a batch header at position {pos}, have {len(buf) - pos}")
    if buf[pos + 12] != MAGIC and buf[pos + _kafka.MAGIC_POSITION] == _kafka.MAGIC:
        return _kafka_header(_kafka.read_header(buf, pos))
    return _new_header(BatchHeader, _HEADER.unpack_from(buf, pos))   # BatchHeader._make, less a call


def is_kafka_batch(buf, pos: int = 0) -> bool:
    """Whether the stored batch at ``buf[pos:]`` is a Kafka (magic 2) batch, not one of ours.

    The format marker is byte 12: our magic (1) there, or the high byte of a Kafka batch's
    partition leader epoch, which the broker sets to 0 when it stores the batch."""
    return buf[pos + 12] != MAGIC and buf[pos + _kafka.MAGIC_POSITION] == _kafka.MAGIC


def _kafka_header(k) -> BatchHeader:
    """A Kafka batch's header in the fields the storage engine reads: `record_count` is the
    offsets the batch spans (last offset delta + 1), `first_timestamp` its base timestamp."""
    return BatchHeader(k.base_offset, k.length, k.magic, k.crc, k.attributes, k.last_offset_delta + 1,
                       k.base_timestamp, k.max_timestamp)


def check_structure(h: BatchHeader, pos: int) -> None:
    """Raise InvalidBatchError for header fields no batch can have (a length, magic, count or
    timestamps out of range): the checks that come before trusting the header's length."""
    if h.magic == _kafka.MAGIC:
        return  # checked by clients.kafka_batch when its header was read
    if h.length < _MIN_LENGTH or h.length > _MAX_LENGTH:
        raise InvalidBatchError(f"batch at position {pos}: impossible length {h.length}")
    if h.magic != MAGIC:
        raise InvalidBatchError(f"batch at position {pos}: unknown magic {h.magic} (expected {MAGIC})")
    if h.record_count < 1:
        raise InvalidBatchError(f"batch at position {pos}: record count {h.record_count} < 1")
    if h.max_timestamp < h.first_timestamp:
        raise InvalidBatchError(
            f"batch at position {pos}: max timestamp {h.max_timestamp} < first {h.first_timestamp}")


def validate(buf, pos: int = 0) -> BatchHeader:
    """Check the batch at ``buf[pos:]`` and return its header.

    Raises TruncatedBatchError if the buffer is shorter than the batch,
    InvalidBatchError for impossible header fields and CorruptBatchError when
    the CRC does not match. The records themselves are not decoded.
    """
    h = read_header(buf, pos)
    check_batch(buf, h, pos)
    return h


def check_batch(buf, h: BatchHeader, pos: int = 0) -> None:
    """`validate` for a batch whose header `h` (at ``buf[pos:]``) was already read: a reader
    that walked the headers to find where its data ends checks each batch without decoding
    its header again."""
    if h.magic == _kafka.MAGIC:
        _kafka.validate(buf, pos)
        return
    check_structure(h, pos)
    check_crc(buf, h, pos)


def check_crc(buf, h: BatchHeader, pos: int = 0) -> None:
    """The rest of `check_batch`, for a reader that ran `check_structure` on `h` itself (to
    tell a header it cannot step over from a bad CRC): the batch is all in `buf` and its CRC
    matches."""
    if h.magic == _kafka.MAGIC:
        _kafka.validate(buf, pos)
        return
    end = pos + LOG_OVERHEAD + h.length
    if end > len(buf):
        raise TruncatedBatchError(
            f"batch at position {pos} needs {h.size} bytes, buffer holds {len(buf) - pos}")
    if buf.__class__ is memoryview:
        crc = _crc32(buf[pos + _CRC_START:end])   # a reader's view of a fetch result: no view of it needed
    else:
        with memoryview(buf) as mv:
            crc = _crc32(mv[pos + _CRC_START:end])
    if crc != h.crc:
        raise CorruptBatchError(
            f"batch at position {pos} (base offset {h.base_offset}): crc {crc:#010x} != stored {h.crc:#010x}")


_NONE_TYPE = type(None)
_BLOB_TYPES = frozenset((bytes, _NONE_TYPE))


def validate_records(buf, pos: int = 0, header: BatchHeader | None = None) -> BatchHeader:
    """Check that the records of the (CRC-valid) batch at ``buf[pos:]`` keep its header's promises.

    A CRC only proves the bytes are the ones the producer sent, not that they make
    sense: a header may claim 2**31-1 records over a body of one. The broker runs
    this before it appends, so that offsets (``base_offset + record_count``), the time
    index (``max_timestamp``) and every consumer's decoding can trust the header:

    - the body is exactly one msgpack array of ``record_count`` records, no bytes after;
    - each record is ``[offset_delta, timestamp_delta, key, value, headers]`` with offset
      deltas 0, 1, 2, ... in order;
    - timestamp deltas are integers and no record is newer than ``max_timestamp``;
    - key and value are ``bin`` or ``nil``; headers ``nil`` or ``[str, bin|nil]`` pairs.

    Raises InvalidBatchError naming what is wrong. The work is done column-wise by
    C-level builtins, not by a Python loop per record: records alike (same-size values, nil
    headers) by stride runs over the bytes (`_rows_alike`, about 0.03 us per record), the
    others on the decoded rows (about 0.2 us per record).
    """
    h = header if header is not None else read_header(buf, pos)
    if h.magic == _kafka.MAGIC:
        _kafka.validate_records(buf, pos)
        return h
    n = h.record_count
    with memoryview(buf) as mv:
        body = mv[pos + HEADER_SIZE:pos + LOG_OVERHEAD + h.length]
        if n >= _MIN_ROWS_FOR_RUNS and _rows_alike(body, n, h.max_timestamp - h.first_timestamp):
            body.release()
            return h
        try:
            rows = msgpack.unpackb(body, use_list=False, raw=False)
        except Exception as exc:  # msgpack raises several unrelated types (ExtraData, ValueError...)
            raise InvalidBatchError(f"batch at position {pos}: records do not decode as one msgpack array: "
                                    f"{exc}") from None
        finally:
            body.release()
    if n <= _FEW_ROWS and rows.__class__ is tuple and len(rows) == n and \
            _few_rows_ok(rows, h.max_timestamp - h.first_timestamp):
        return h
    where = f"batch at position {pos}"
    if rows.__class__ is not tuple:
        raise InvalidBatchError(f"{where}: records must be a msgpack array, got {type(rows).__name__}")
    if len(rows) != n:
        raise InvalidBatchError(f"{where}: header says {n} records, body holds {len(rows)}")
    try:
        # strict: rows of unequal length raise, so five columns mean five fields in every row.
        # A row that is not an array (a bin, str or map of five) cannot pass the column checks
        # below: its "offset delta" or "key" has the wrong type.
        columns = tuple(zip(*rows, strict=True))
    except (TypeError, ValueError):
        columns = ()
    if len(columns) != 5:
        raise InvalidBatchError(f"{where}: each record must be an array "
                                "[offset_delta, timestamp_delta, key, value, headers]")
    offset_deltas, timestamp_deltas, keys, values, headers = columns
    if offset_deltas != tuple(range(n)):
        raise InvalidBatchError(f"{where}: offset deltas must be 0..{n - 1} in order")
    try:
        if sum(timestamp_deltas).__class__ is not int:
            raise TypeError
        newest = max(timestamp_deltas)
    except TypeError:
        raise InvalidBatchError(f"{where}: timestamp deltas must be integers") from None
    if newest > h.max_timestamp - h.first_timestamp:
        raise InvalidBatchError(f"{where}: a record's timestamp {h.first_timestamp + newest} is newer than the "
                                f"header's max timestamp {h.max_timestamp}")
    if (keys.count(None) != n and not set(map(type, keys)) <= _BLOB_TYPES) or \
            not set(map(type, values)) <= _BLOB_TYPES:
        raise InvalidBatchError(f"{where}: record keys and values must be msgpack bin or nil")
    if headers.count(None) != n:
        for hd in headers:
            if hd is None:
                continue
            if hd.__class__ is not tuple or not all(
                    pair.__class__ is tuple and len(pair) == 2 and pair[0].__class__ is str
                    and pair[1].__class__ in _BLOB_TYPES
                    for pair in hd):
                raise InvalidBatchError(f"{where}: record headers must be nil or an array of [str, bin] pairs")
    return h


# A batch of a few records (a producer with linger 0 sends one each) is checked row by row:
# fewer steps than building the columns. It only accepts; anything else gets the column checks.
_FEW_ROWS = 4


def _few_rows_ok(rows: tuple, latest: int) -> bool:
    """True when every row is [i, timestamp delta <= `latest`, bin|nil, bin|nil, nil] with
    i = 0, 1, ... in order (plain ints); False: ask the column checks, which word the error."""
    i = 0
    for r in rows:
        if (r.__class__ is not tuple or len(r) != 5 or r[0].__class__ is not int or r[0] != i
                or r[1].__class__ is not int or r[1] > latest or r[2].__class__ not in _BLOB_TYPES
                or r[3].__class__ not in _BLOB_TYPES or r[4] is not None):
            return False
        i += 1
    return True


# ---- stride runs: validate_records' common case, without building a record -----------------
# A producer of same-size values packs records that differ only in their offset and timestamp
# deltas: across a run every other byte of a record (the array and bin headers, a nil key, the
# nil headers) is the same. `_rows_alike` checks such runs column by column in C, as
# clients/kafka_batch.py does for Kafka batches (`_stride_run`), and accepts a body only when
# that proves every record well formed; anything else (headers, other encodings, varied sizes,
# any error) goes to the full check, which alone words the errors.
_MIN_ROWS_FOR_RUNS = 16
_MAX_TEMPLATES = 8
_UINT_TYPES = {0xCC: 1, 0xCD: 2}        # uint8, uint16 (positive fixints have no type byte)
_BIN_LEN_SIZE = {0xC4: 1, 0xC5: 2, 0xC6: 4}
_ALL_BYTES = bytes(range(256))
_flag_tables: dict = {}


def _flag_table(kind: str, limit: int) -> bytes:
    """translate() table flagging (1) the bytes above `limit` ("above") or equal to it ("at")."""
    table = _flag_tables.get((kind, limit))
    if table is None:
        table = _flag_tables[(kind, limit)] = bytes(
            (b > limit if kind == "above" else b == limit) for b in range(256))
    return table


def _uint_field(body, q: int):
    """(value, where its bytes start, how many, the type byte or None, end) of a non-negative
    msgpack int at `q` in the encodings runs handle (positive fixint, uint8, uint16), or None."""
    b = body[q]
    if b < 0x80:
        return b, q, 1, None, q + 1
    size = _UINT_TYPES.get(b)
    if size is None:
        return None
    return int.from_bytes(body[q + 1:q + 1 + size], "big"), q + 1, size, b, q + 1 + size


def _row_template(body, q: int, index: int, latest: int):
    """Check the record at `q` alone, in the shape runs handle: a 5-array of offset delta
    `index`, a timestamp delta in 0..`latest`, bin or nil key and value, nil headers. Returns
    (its size, the offsets of its fixed bytes, the offset delta's (at, size, type), the
    timestamp delta's (at, size, type)), offsets relative to `q`; None for any other shape."""
    end = len(body)
    if body[q] != 0x95:
        return None
    fixed = [0]
    off = _uint_field(body, q + 1)
    if off is None or off[0] != index:
        return None
    if off[3] is not None:
        fixed.append(1)
    ts = _uint_field(body, off[4])
    if ts is None or ts[0] > latest:
        return None
    if ts[3] is not None:
        fixed.append(off[4] - q)
    r = ts[4]
    for _ in range(2):                      # key, value
        b = body[r]
        if b == 0xC0:
            fixed.append(r - q)
            r += 1
            continue
        size = _BIN_LEN_SIZE.get(b)
        if size is None:
            return None
        fixed.extend(range(r - q, r + 1 + size - q))
        r += 1 + size + int.from_bytes(body[r + 1:r + 1 + size], "big")
    if r >= end or body[r] != 0xC0:        # headers
        return None
    fixed.append(r - q)
    return r + 1 - q, fixed, (off[1] - q, off[2], off[3]), (ts[1] - q, ts[2], ts[3])


def _rows_alike(body, n: int, latest: int) -> bool:
    """True when runs prove the body is one array of exactly `n` records of the template shape
    with offset deltas 0..n-1, timestamp deltas <= `latest` and nothing after; False: ask the
    full check."""
    if n < _MIN_ROWS_FOR_RUNS or latest < 0 or len(body) < 5:
        return False
    b = body[0]
    if b == 0xDC:
        count, q = int.from_bytes(body[1:3], "big"), 3
    elif b == 0xDD:
        count, q = int.from_bytes(body[1:5], "big"), 5
    elif 0x90 <= b <= 0x9F:
        count, q = b & 0x0F, 1
    else:
        return False
    if count != n:
        return False
    i, end = 0, len(body)
    try:
        for _ in range(_MAX_TEMPLATES):
            template = _row_template(body, q, i, latest)
            if template is None:
                return False
            size = template[0]
            q += size
            i += 1
            if i < n:
                k = _row_run(body, q - size, q, i, n, template, latest)
                q += k * size
                i += k
                if k < _MIN_ROWS_FOR_RUNS and i < n:
                    return False   # records that differ: the full check is cheaper than more templates
            if i == n:
                return q == end
    except IndexError:   # a record runs past the body: the full check says how
        return False
    return False


def _row_run(body, t: int, p: int, i: int, n: int, template, latest: int) -> int:
    """How many records from record `i` at `p` on are laid out as the template at `t`, with
    offset deltas i, i+1, ... and timestamp deltas <= `latest`, in the template's encodings."""
    stride, fixed, (off_at, off_size, off_type), (ts_at, ts_size, ts_type) = template
    k = min(n - i, (0x80 if off_type is None else 1 << (8 * off_size)) - i, (len(body) - p) // stride)
    if k <= 0:
        return 0
    k = _kafka._alike_columns(body, t, p, stride, fixed, k)
    if k == 0:
        return 0
    for b in range(off_size):               # the big-endian bytes of i..i+k-1
        block = 1 << (8 * (off_size - 1 - b))    # byte b is constant over blocks of this many
        first, last = i // block, (i + k - 1) // block
        if block == 1:
            want = (_ALL_BYTES * ((i % 256 + k + 255) // 256))[i % 256:i % 256 + k]
        else:
            want = b"".join(bytes((v & 0xFF,)) * block for v in range(first, last + 1))
            want = want[i - first * block:i - first * block + k]
        col = bytes(body[p + off_at + b:p + off_at + b + (k - 1) * stride + 1:stride])
        if col != want:
            k = _kafka._first_difference(col, want, k)
            if k == 0:
                return 0
    cols = [bytes(body[p + ts_at + b:p + ts_at + b + (k - 1) * stride + 1:stride]) for b in range(ts_size)]
    if ts_size == 1:
        bad = int.from_bytes(cols[0].translate(_flag_table("above", min(latest, 0x7F if ts_type is None else 0xFF))),
                             "big")
    else:
        limit = min(latest, 0xFFFF)
        hi, lo = cols
        bad = (int.from_bytes(hi.translate(_flag_table("above", limit >> 8)), "big")
               | (int.from_bytes(hi.translate(_flag_table("at", limit >> 8)), "big")
                  & int.from_bytes(lo.translate(_flag_table("above", limit & 0xFF)), "big")))
    if bad:
        k = k - 1 - (bad.bit_length() - 1) // 8
    return k


def set_base_offset(buf, offset: int, pos: int = 0) -> None:
    """Write ``offset`` as the base offset of the batch at ``buf[pos:]`` (in place)."""
    _OFFSET.pack_into(buf, pos, offset)


def iter_batches(buf, validate_crc: bool = True) -> Iterator[tuple[BatchHeader, memoryview]]:
    """Walk concatenated batches, yielding (header, memoryview of the whole batch).

    A fetch response is a run of whole batches, but a reader may also see a
    partial batch at the end (a byte limit, a crash); that truncated tail is
    silently ignored. A batch that is present but wrong raises.
    """
    mv = memoryview(buf)
    pos, n = 0, len(mv)
    while n - pos >= LOG_OVERHEAD:
        _, length = _OFFSET_AND_LENGTH.unpack_from(mv, pos)
        if pos + LOG_OVERHEAD + length > n:
            return  # the last batch is cut short: a byte limit or a torn write
        if validate_crc:
            h = validate(mv, pos)
        else:
            h = read_header(mv, pos)
            check_structure(h, pos)
        yield h, mv[pos:pos + h.size]
        pos += h.size


def pack_batch(records_payload: bytes, count: int, first_ts: int, max_ts: int,
               base_offset: int = 0, attributes: int = 0) -> bytes:
    """Wrap records that are already packed into a batch: write the header and its checksum.

    ``records_payload`` is the msgpack array of ``[offset_delta, timestamp_delta, key, value,
    headers]`` rows. Producers that pack their rows themselves (to keep per-record work to one
    list append) call this; :func:`build_batch` is the convenient form.

    The payload is copied once, into the batch: the CRC runs over the header's tail and then
    the payload where they lie (the CRC carries on from a previous value), so no
    zero-filled buffer is made and filled first (a producer's batch is up to a megabyte, and
    each copy of it costs about 0.01 µs per record).
    """
    tail = _CRC_TAIL.pack(attributes, count, first_ts, max_ts)
    crc = _crc32(records_payload, _crc32(tail))
    return b"".join((_BEFORE_CRC_END.pack(base_offset, HEADER_SIZE + len(records_payload) - LOG_OVERHEAD, MAGIC, crc),
                     tail, records_payload))


def with_log_append_time(batch: bytes, timestamp: int) -> bytes:
    """The (valid, checked) batch ``batch`` with every record stamped ``timestamp``: for a topic
    whose message.timestamp.type is LogAppendTime. The records' timestamp deltas become 0 and
    the header's first and max timestamps ``timestamp``, so every reader, of either protocol,
    sees the broker's time without knowing the topic's setting. Unlike a Kafka batch (whose
    header alone says LogAppendTime, `kafka_batch.set_log_append_time`), this re-packs the
    records: a cost paid only on such topics."""
    h = read_header(batch)
    rows = msgpack.unpackb(memoryview(batch)[HEADER_SIZE:h.size], use_list=True)
    for row in rows:
        row[1] = 0
    return pack_batch(msgpack.packb(rows, use_bin_type=True), h.record_count, timestamp, timestamp,
                      h.base_offset, h.attributes)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _check_record_types(records: Sequence) -> None:
    for r in records:
        k, v = r[0], r[1]
        if (k is not None and k.__class__ is not bytes) or (v is not None and v.__class__ is not bytes):
            for x in (k, v):
                if x is not None and not isinstance(x, (bytes, bytearray, memoryview)):
                    raise TypeError(f"record key and value must be bytes or None, got {type(x).__name__}")


def build_batch(records: Sequence[tuple], timestamp: int | None = None,
                base_offset: int = 0, attributes: int = 0) -> bytes:
    """Pack ``records`` into one batch.

    Each record is a tuple ``(key, value, timestamp_ms, headers)`` where key and
    value are bytes or None, timestamp_ms is an int or None (None means
    ``timestamp``, which defaults to now) and headers is None or a list of
    ``(str, bytes)`` pairs. The base offset is normally left at 0: the broker
    assigns it.
    """
    n = len(records)
    if n == 0:
        raise ValueError("a batch holds at least one record")
    _check_record_types(records)
    default_ts = _now_ms() if timestamp is None else timestamp
    stamps = [default_ts if r[2] is None else r[2] for r in records]
    first_ts = stamps[0]
    max_ts = max(stamps)
    if max_ts == first_ts and min(stamps) == first_ts:
        rows = [[i, 0, r[0], r[1], r[3]] for i, r in enumerate(records)]
    else:
        rows = [[i, t - first_ts, r[0], r[1], r[3]] for i, (r, t) in enumerate(zip(records, stamps))]
    payload = msgpack.packb(rows, use_bin_type=True)
    if max_ts < first_ts:
        # The header promises max >= first; a record older than the first keeps max = first.
        max_ts = first_ts
    return pack_batch(payload, n, first_ts, max_ts, base_offset, attributes)


# Estimated bytes a record costs in a batch beyond its key and value (msgpack array, ints,
# bin headers): what `BatchBuilder.size` adds per record, compared with batch.size limits.
RECORD_OVERHEAD = 16

_packer = msgpack.Packer(use_bin_type=True, autoreset=True)
_pack_rows = _packer.pack


def record_size(key, value, headers=None) -> int:
    """The estimate `BatchBuilder.size` grows by for one record (headers as (str, bytes) pairs)."""
    size = RECORD_OVERHEAD + (len(value) if value is not None else 0) + (len(key) if key is not None else 0)
    if headers:
        size += sum(len(k) + len(v or b"") + 8 for k, v in headers)
    return size


# ---- plain records: packed by a join, not by msgpack per record --------------------------------
# A record with no key, no headers and the batch's default timestamp (what `produce(topic,
# value)` makes) is a row that differs from its neighbours only in its offset delta, and in its
# value when the values differ in length. msgpack spends ~0.15 us packing each such 5-array
# (mostly its two ints); with the values all one length, every byte around a value is known in
# advance: record i is `head_i + value`, head_i being the previous record's nil headers, the
# 5-array's header, i, the default delta, the nil key and the value's bin header. Those heads
# are made once per shape (default delta, value length) and kept (`_plain_heads`), so packing
# n plain records is one `bytes.join` of 2n parts: ~0.05 us per record.
_PLAIN_SHAPES = 4            # shapes whose heads are kept
_PLAIN_MAX_RECORDS = 16384   # heads kept per shape (~50 bytes each); longer batches use msgpack
_plain_cache: dict = {}      # (default delta, value length) -> [head_0, head_1, ...]
_plain_seen: set = set()     # shapes met once: heads are made on the second batch of a shape


def _plain_heads(dflt: int, length: int, n: int):
    """head_0..head_{n-1} (or more) of plain records of this shape; None while not worth making."""
    shape = (dflt, length)
    heads = _plain_cache.get(shape)
    if heads is not None and len(heads) >= n:
        return heads
    if n > _PLAIN_MAX_RECORDS:
        return None
    if heads is None:
        # A shape met once may never come again (values of varied sizes, each batch alike
        # within itself): msgpack packs its first batch, and heads are made on its second.
        if shape not in _plain_seen:
            if len(_plain_seen) >= 64:
                _plain_seen.clear()
            _plain_seen.add(shape)
            return None
        if len(_plain_cache) >= _PLAIN_SHAPES:
            _plain_cache.clear()
        heads = []
    pack = _packer.pack
    tail = pack(dflt) + b"\xc0" + pack(b"x" * length)[:-length or None]   # default delta, nil key, bin header
    count = max(n, min(2 * len(heads), _PLAIN_MAX_RECORDS))
    heads.extend(b"\xc0\x95" + pack(i) + tail for i in range(len(heads), count))
    heads[0] = b"\x95" + pack(0) + tail   # the first record follows the array header, not a record
    _plain_cache[shape] = heads
    return heads


def _plain_parts(values: list, dflt: int, before: bytes = b""):
    """The parts whose join is `before` and then the msgpack array of plain records `values`
    (see `pack_plain_records`), or None when the values differ in length or the shape's heads
    are not made yet."""
    n = len(values)
    lengths = set(map(len, values))
    if len(lengths) != 1:
        return None
    heads = _plain_heads(dflt, lengths.pop(), n)
    if heads is None:
        return None
    parts = [None] * (2 * n + 1)
    parts[0:2 * n:2] = heads[:n]
    parts[1::2] = values
    parts[0] = before + _packer.pack_array_header(n) + heads[0]
    parts[2 * n] = b"\xc0"
    return parts


def pack_plain_records(values: list, dflt: int) -> bytes:
    """The msgpack array of rows `[i, dflt, None, values[i], None]` (values: bytes): what
    `msgpack.packb([(i, dflt, None, v, None) for i, v in enumerate(values)])` gives, byte for byte."""
    parts = _plain_parts(values, dflt)
    if parts is not None:
        return b"".join(parts)
    n = len(values)
    return _pack_rows(list(zip(range(n), repeat(dflt), repeat(None), values, repeat(None))))


_NO_HEADER = bytes(HEADER_SIZE)


def _pack_plain_batch(values: list, dflt: int, first_ts: int, max_ts: int, base_offset: int = 0):
    """The batch of plain records `values`, as `pack_batch(pack_plain_records(values, dflt), ...)`
    makes it, joined once into a bytearray whose header is then filled in place (no second copy
    of a megabyte); None when `pack_plain_records` would use msgpack."""
    parts = _plain_parts(values, dflt, _NO_HEADER)
    if parts is None:
        return None
    batch = bytearray().join(parts)
    _CRC_TAIL.pack_into(batch, _CRC_START, 0, len(values), first_ts, max_ts)
    with memoryview(batch) as view:
        crc = _crc32(view[_CRC_START:])
    _BEFORE_CRC_END.pack_into(batch, 0, base_offset, len(batch) - LOG_OVERHEAD, MAGIC, crc)
    return batch


# ---- one record alone: a linger-0 producer's common batch ---------------------------------------
_BIN8 = [bytes((0xC4, n)) for n in range(256)]   # msgpack bin headers of values under 256 bytes


def _bin_head(n: int) -> bytes:
    if n < 0x100:
        return _BIN8[n]
    if n < 0x10000:
        return b"\xc5" + n.to_bytes(2, "big")
    return b"\xc6" + n.to_bytes(4, "big")


def pack_single(key, value: bytes, timestamp: int) -> bytes:
    """The batch of one record without headers (`key`: bytes or None; `value`: bytes), stamped
    `timestamp` (ms): byte for byte what a `BatchBuilder` given just that record packs, made by
    one concatenation and one CRC with no rows, builder or msgpack call. A linger-0 producer
    sends most records alone, each its own batch (`Producer._send_single`), and the builder's
    steps cost several times the bytes' work there."""
    n = len(value)
    if key is None:
        body = b"".join((_CRC_TAIL.pack(0, 1, timestamp, timestamp), b"\x91\x95\x00\x00\xc0",
                         _BIN8[n] if n < 0x100 else _bin_head(n), value, b"\xc0"))
    else:
        body = (_CRC_TAIL.pack(0, 1, timestamp, timestamp) + b"\x91\x95\x00\x00" + _bin_head(len(key)) + key
                + _bin_head(len(value)) + value + b"\xc0")
    # The CRC covers everything after itself: the tail of the header and the records.
    return _BEFORE_CRC_END.pack(0, len(body) + _CRC_START - LOG_OVERHEAD, MAGIC, _crc32(body)) + body


class BatchBuilder:
    """The one record-batch builder: records appended as rows, packed once by `pack()`.

    Both log producers (through `clients/log/accumulator.py`'s `OpenBatch`, which adds the
    batch's topic and partition) and aiokafka's `create_batch()` build with it. A row is either
    in the wire layout of a record, a tuple ``(offset_delta, timestamp_delta, key, value,
    headers)``, or, for a *plain* record (no key, no headers, the default timestamp: what a
    ``produce(topic, value)`` loop makes), just the value's ``bytes``, which costs a producer's
    fast path one list append and no tuple. `tuples` counts the tuple rows. Closing a batch is
    `pack()`: one join for a batch of plain records of one length (`pack_plain_records`),
    otherwise one ``msgpack`` pack of the rows, plus the header (:func:`pack_batch`);
    :func:`build_batch` re-checks and re-lays every record, about 0.9 µs each, which is a fast
    producer's whole budget. `record(index)` gives any row as the tuple.

    Timestamps follow the first record: ``first_ts`` is its timestamp (or the time it was
    added), and every record added without a timestamp shares the delta ``dflt`` (the time the
    batch was opened): one clock read per batch, not per record. ``max_ts`` is at least every
    record's timestamp and the opening time, so a producer's fast path may append a plain
    record's value, or a keyed record's row ``(len(rows), dflt, key, value, None)`` (adding 1 to
    ``tuples``), and add ``len(key) + len(value) + 16`` to ``size`` itself: exactly what
    :meth:`append` does for such a record.
    """

    __slots__ = ("rows", "size", "first_ts", "dflt", "max_ts", "tuples")

    def __init__(self):
        self.rows = []
        self.size = 0          # estimated bytes (record_size of each record)
        self.first_ts = None   # set by the first record: its timestamp, or the time it was added
        self.dflt = 0          # timestamp delta of records added without a timestamp
        self.max_ts = None
        self.tuples = 0        # rows that are tuples; the others are plain records' values

    def append(self, key, value, timestamp=None, headers=None, size=None) -> int:
        """Add one record (key, value: bytes or None; timestamp: ms or None); returns its index.

        `headers` must already be a list of (str, bytes) pairs or None; `size`, when the caller
        has computed `record_size` already, saves computing it twice.
        """
        rows = self.rows
        if self.first_ts is None:
            now = time.time_ns() // 1_000_000
            if timestamp is None:
                self.first_ts = self.max_ts = now
            else:
                self.first_ts = int(timestamp)
                self.dflt = now - self.first_ts
                self.max_ts = max(self.first_ts, now)
        index = len(rows)
        if timestamp is None:
            if key is None and headers is None and value.__class__ is bytes:
                rows.append(value)   # a plain record
                self.size += record_size(None, value) if size is None else size
                return index
            delta = self.dflt
        else:
            timestamp = int(timestamp)
            delta = timestamp - self.first_ts
            if timestamp > self.max_ts:
                self.max_ts = timestamp
        rows.append((index, delta, key, value, headers))
        self.tuples += 1
        self.size += record_size(key, value, headers) if size is None else size
        return index

    def record(self, index: int) -> tuple:
        """The row at `index` as a tuple (offset_delta, timestamp_delta, key, value, headers)."""
        r = self.rows[index]
        return r if r.__class__ is tuple else (index, self.dflt, None, r, None)

    def timestamp_of(self, index: int) -> int:
        """The timestamp (ms) the record at `index` carries in the packed batch."""
        r = self.rows[index]
        return self.first_ts + (r[1] if r.__class__ is tuple else self.dflt)

    def pack(self, base_offset: int = 0) -> bytes | bytearray:
        """The record batch of these rows (base offset 0 by default: the broker writes the real
        one): bytes, or a bytearray for a batch of plain records of one length (joined once,
        its header filled in place: `_pack_plain_batch`)."""
        rows = self.rows
        n = len(rows)
        if not n:
            raise ValueError("an empty batch cannot be packed (a record batch holds at least one record)")
        if not self.tuples:
            batch = _pack_plain_batch(rows, self.dflt, self.first_ts, self.max_ts, base_offset)
            if batch is not None:
                return batch
            payload = pack_plain_records(rows, self.dflt)
        elif self.tuples == n:
            payload = _pack_rows(rows)
        else:
            dflt = self.dflt
            payload = _pack_rows([r if r.__class__ is tuple else (i, dflt, None, r, None) for i, r in enumerate(rows)])
        return pack_batch(payload, n, self.first_ts, self.max_ts, base_offset, 0)

    def __len__(self) -> int:
        return len(self.rows)


def decode_batch(buf, pos: int = 0, verify: bool = True) -> tuple[BatchHeader, list[tuple]]:
    """Decode the batch at ``buf[pos:]`` into its header and a list of records.

    Each record is a plain tuple ``(offset, timestamp, key, value, headers)``
    with absolute offset and timestamp; headers is None or a tuple of
    ``(str, bytes)`` tuples. ``verify`` checks the CRC first.
    """
    h = validate(buf, pos) if verify else read_header(buf, pos)
    if h.magic == _kafka.MAGIC:
        return h, _kafka.decode_batch(buf, pos, False)[1]  # validated above when asked
    if not verify:
        check_structure(h, pos)
    with memoryview(buf) as mv:
        body = mv[pos + HEADER_SIZE:pos + h.size]
        try:
            raw = msgpack.unpackb(body, use_list=False, raw=False)
        except Exception as exc:  # msgpack raises several unrelated types
            raise InvalidBatchError(f"batch at position {pos}: records do not decode: {exc}") from exc
        finally:
            body.release()
    if not isinstance(raw, tuple) or len(raw) != h.record_count:
        raise InvalidBatchError(
            f"batch at position {pos}: header says {h.record_count} records, body holds "
            f"{len(raw) if isinstance(raw, tuple) else type(raw).__name__}")
    base, first = h.base_offset, h.first_timestamp
    try:
        records = [(base + od, first + td, k, v, hd) for od, td, k, v, hd in raw]
    except (TypeError, ValueError) as exc:
        raise InvalidBatchError(f"batch at position {pos}: malformed record: {exc}") from exc
    return h, records


def decode_batches(buf) -> Iterable[tuple]:
    """All records of the whole batches in ``buf`` (a fetch response), in offset order."""
    out: list[tuple] = []
    for _, mv in iter_batches(buf):
        out.extend(decode_batch(mv)[1])
    return out


# The storage engine keeps Kafka clients' batches as they came; the functions above read both
# (a stored batch says which it is at byte 12, see is_kafka_batch). Imported last: it uses our errors.
from clients import kafka_batch as _kafka  # noqa: E402
# Bytes that always hold a whole header of either format (ours is HEADER_SIZE; Kafka's,
# clients.kafka_batch.HEADER_SIZE, is longer; a literal, since either module may load first).
MAX_HEADER_SIZE = 61
