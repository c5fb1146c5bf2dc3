"""Kafka's record batch, magic 2: parse, validate, build and decode it, with no I/O.

This is the batch Kafka clients produce and fetch (Kafka's `DefaultRecordBatch`). minilog
stores these bytes as they came, next to its own batches (`clients/record_batch.py`), so the
broker needs the header and its checks on the produce path, and the records only when a
client of the other protocol reads them (`minilog/batch_formats.py`). Layout, big-endian:

    0  base_offset             i64  written by the broker
    8  length                  i32  bytes after this field
    12 partition_leader_epoch  i32  written by the broker (outside the CRC)
    16 magic                   i8   2
    17 crc                     u32  CRC-32C of bytes [21, 12 + length)
    21 attributes              i16  bits 0-2 compression (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd),
                                    bit 3 timestamp type (1: LogAppendTime), bit 4 transactional,
                                    bit 5 control batch
    23 last_offset_delta       i32
    27 base_timestamp          i64  the first record's timestamp
    35 max_timestamp           i64
    43 producer_id             i64  -1 when not idempotent
    51 producer_epoch          i16
    53 base_sequence           i32
    57 record_count            i32
    61 records                 (compressed as one block when attributes say so)

and each record, with zigzag varints:

    length varint, attributes i8, timestamp_delta varlong, offset_delta varint,
    key_length varint (-1: null), key, value_length varint (-1: null), value,
    header_count varint, then per header: key_length varint, key (UTF-8), value_length varint, value

`validate` checks the header and the CRC (the `crc32c` package, a C implementation) without
decoding a record; `decode_batch` decodes records into the tuples `clients/record_batch.py`
uses, `(offset, timestamp, key, value, headers)`, so the two formats convert into each other.
Compression: gzip through zlib; snappy (raw or the xerial framing Java clients write), lz4
(frame) and zstd through the `cramjam` package when it is installed, else
`UnsupportedCompressionError`. The errors are those of `clients/record_batch.py`, so a storage
engine that catches one catches both.
"""

from __future__ import annotations

import struct
import time
import zlib
from collections import namedtuple
from typing import Iterator, Sequence

from crc32c import crc32c

from clients.record_batch import CorruptBatchError, InvalidBatchError, TruncatedBatchError

try:  # snappy, lz4 and zstd are optional: without them such batches are refused, not lost
    import cramjam
except ImportError:  # pragma: no cover - depends on the machine
    cramjam = None

MAGIC = 2
MAGIC_POSITION = 16
_HEADER = struct.Struct(">qiibIhiqqqhii")
HEADER_SIZE = _HEADER.size  # 61
LOG_OVERHEAD = 12
_CRC_START = 21
_MIN_LENGTH = HEADER_SIZE - LOG_OVERHEAD
_MAX_LENGTH = 0x7FFFFFFF - LOG_OVERHEAD
_OFFSET = struct.Struct(">q")
_EPOCH = struct.Struct(">i")
_CRC = struct.Struct(">I")
_ATTRIBUTES = struct.Struct(">h")
_TIMESTAMP = struct.Struct(">q")

NO_COMPRESSION, GZIP, SNAPPY, LZ4, ZSTD = 0, 1, 2, 3, 4
COMPRESSION_NAMES = {NO_COMPRESSION: "none", GZIP: "gzip", SNAPPY: "snappy", LZ4: "lz4", ZSTD: "zstd"}
COMPRESSION_MASK = 0x07
TIMESTAMP_TYPE_MASK = 0x08      # set: LogAppendTime
TRANSACTIONAL_MASK = 0x10
CONTROL_MASK = 0x20
CREATE_TIME, LOG_APPEND_TIME = 0, 1
NO_PRODUCER_ID = -1
NO_SEQUENCE = -1
# What one batch may decompress to: far above any max.message.bytes, far below a zip bomb.
DEFAULT_MAX_DECOMPRESSED = 256 * 1024 * 1024
_XERIAL_MAGIC = b"\x82SNAPPY\x00"


class UnsupportedCompressionError(InvalidBatchError):
    """The batch is compressed with a codec this machine has no package for (Kafka's
    UNSUPPORTED_COMPRESSION_TYPE)."""


class KafkaBatchHeader(namedtuple("KafkaBatchHeader", "base_offset length partition_leader_epoch magic crc "
                                                      "attributes last_offset_delta base_timestamp max_timestamp "
                                                      "producer_id producer_epoch base_sequence record_count")):
    """The fixed 61-byte header of a magic-2 batch, decoded."""

    __slots__ = ()

    @property
    def size(self) -> int:
        return LOG_OVERHEAD + self.length

    @property
    def compression(self) -> int:
        return self.attributes & COMPRESSION_MASK

    @property
    def timestamp_type(self) -> int:
        return LOG_APPEND_TIME if self.attributes & TIMESTAMP_TYPE_MASK else CREATE_TIME

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL_MASK)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL_MASK)

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def last_sequence(self) -> int:
        """The sequence number of the last record (sequences wrap at 2**31 - 1 as Kafka's do)."""
        if self.base_sequence == NO_SEQUENCE:
            return NO_SEQUENCE
        return (self.base_sequence + self.last_offset_delta) % 0x80000000


def read_header(buf, pos: int = 0) -> KafkaBatchHeader:
    """Decode the header at ``buf[pos:]`` without checking it."""
    if len(buf) - pos < HEADER_SIZE:
        raise TruncatedBatchError(
            f"need {HEADER_SIZE} bytes for a Kafka batch header at position {pos}, have {len(buf) - pos}")
    return KafkaBatchHeader._make(_HEADER.unpack_from(buf, pos))


def check_header(h: KafkaBatchHeader, pos: int = 0) -> None:
    """The checks of the header fields alone (no CRC, no records)."""
    if h.magic != MAGIC:
        raise InvalidBatchError(f"batch at position {pos}: magic {h.magic}, only magic {MAGIC} batches are "
                                f"accepted")
    if h.length < _MIN_LENGTH or h.length > _MAX_LENGTH:
        raise InvalidBatchError(f"batch at position {pos}: impossible length {h.length}")
    if h.record_count < 1:
        raise InvalidBatchError(f"batch at position {pos}: record count {h.record_count} < 1")
    if h.last_offset_delta != h.record_count - 1:
        # Producers write dense offset deltas; a mismatch means a broken or hostile batch.
        raise InvalidBatchError(f"batch at position {pos}: {h.record_count} records but last offset delta "
                                f"{h.last_offset_delta}")
    if h.compression not in COMPRESSION_NAMES:
        raise InvalidBatchError(f"batch at position {pos}: unknown compression type {h.compression}")
    if h.compression == NO_COMPRESSION and h.length - _MIN_LENGTH < 7 * h.record_count:
        # An uncompressed record is at least 7 bytes (length, attributes, four varints, header count).
        raise InvalidBatchError(f"batch at position {pos}: {h.record_count} records cannot fit in "
                                f"{h.length - _MIN_LENGTH} bytes")
    if h.max_timestamp < h.base_timestamp and h.timestamp_type == CREATE_TIME:
        raise InvalidBatchError(f"batch at position {pos}: max timestamp {h.max_timestamp} < base timestamp "
                                f"{h.base_timestamp}")


def validate(buf, pos: int = 0, check_crc: bool = True) -> KafkaBatchHeader:
    """Check the batch at ``buf[pos:]`` (header fields, length, CRC-32C) and return its header.

    Raises TruncatedBatchError, InvalidBatchError or CorruptBatchError (a CRC mismatch:
    Kafka's CORRUPT_MESSAGE); the records are not decoded.
    """
    h = read_header(buf, pos)
    if h.magic != MAGIC or h.length < _MIN_LENGTH or h.length > _MAX_LENGTH:
        check_header(h, pos)   # raises, naming the field
    end = pos + LOG_OVERHEAD + h.length
    if end > len(buf):
        raise TruncatedBatchError(f"batch at position {pos} needs {h.size} bytes, buffer holds {len(buf) - pos}")
    if check_crc:
        # Before the other fields: a damaged field under the CRC is CORRUPT_MESSAGE, as in Kafka.
        with memoryview(buf) as mv:
            crc = crc32c(mv[pos + _CRC_START:end])
        if crc != h.crc:
            raise CorruptBatchError(f"batch at position {pos} (base offset {h.base_offset}): crc32c {crc:#010x} "
                                    f"!= stored {h.crc:#010x}")
    check_header(h, pos)
    return h


def iter_batches(buf, validate_crc: bool = True) -> Iterator[tuple[KafkaBatchHeader, memoryview]]:
    """Walk concatenated batches, yielding (header, memoryview of the whole batch); a partial
    batch at the end (a fetch's byte limit) is ignored, as Kafka clients do."""
    mv = memoryview(buf)
    pos, size = 0, len(mv)
    while size - pos >= HEADER_SIZE:
        h = read_header(mv, pos)
        if pos + h.size > size:
            break
        validate(mv, pos, validate_crc)
        yield h, mv[pos:pos + h.size]
        pos += h.size


def set_base_offset(buf, offset: int, pos: int = 0) -> None:
    _OFFSET.pack_into(buf, pos, offset)


def set_partition_leader_epoch(buf, epoch: int, pos: int = 0) -> None:
    _EPOCH.pack_into(buf, pos + 12, epoch)


def set_log_append_time(buf, timestamp: int, pos: int = 0) -> None:
    """Make the batch at ``buf[pos:]`` LogAppendTime at `timestamp` (its records then read with
    that timestamp), and recompute the CRC, as Kafka's broker does for such topics."""
    h = read_header(buf, pos)
    _ATTRIBUTES.pack_into(buf, pos + 21, h.attributes | TIMESTAMP_TYPE_MASK)
    _TIMESTAMP.pack_into(buf, pos + 35, timestamp)
    with memoryview(buf) as mv:
        _CRC.pack_into(buf, pos + 17, crc32c(mv[pos + _CRC_START:pos + h.size]))


# ---- varints --------------------------------------------------------------------------
def _write_varint(out: bytearray, n: int) -> None:
    v = (n << 1) ^ (n >> 63)
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)


def _read_varint(buf, pos: int, end: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= end:
            raise InvalidBatchError("a record's varint runs past its end")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise InvalidBatchError("a record's varint is longer than 10 bytes")


def _read_bytes(buf, pos: int, end: int) -> tuple[bytes | None, int]:
    n, pos = _read_varint(buf, pos, end)
    if n < 0:
        if n != -1:
            raise InvalidBatchError(f"a record field has length {n}")
        return None, pos
    if pos + n > end:
        raise InvalidBatchError(f"a record field of {n} bytes runs past its record")
    return bytes(buf[pos:pos + n]), pos + n


# ---- compression ----------------------------------------------------------------------
def _need_cramjam(codec: int):
    if cramjam is None:
        raise UnsupportedCompressionError(f"{COMPRESSION_NAMES[codec]} batches need the cramjam package, which "
                                          f"this server does not have")
    return cramjam


def decompress(codec: int, data, limit: int = DEFAULT_MAX_DECOMPRESSED) -> bytes:
    """The records block of a batch compressed with `codec`, at most `limit` bytes."""
    try:
        if codec == GZIP:
            d = zlib.decompressobj(47)  # 32 + 15: gzip or zlib header, as clients differ
            out = d.decompress(bytes(data), limit)
            if d.unconsumed_tail:
                raise InvalidBatchError(f"batch decompresses to more than {limit} bytes")
            return out
        cj = _need_cramjam(codec)
        if codec == SNAPPY:
            data = bytes(data)
            if data.startswith(_XERIAL_MAGIC):
                return _xerial_decompress(cj, data, limit)
            out = bytes(cj.snappy.decompress_raw(data))
        elif codec == LZ4:
            out = bytes(cj.lz4.decompress(bytes(data)))
        elif codec == ZSTD:
            out = bytes(cj.zstd.decompress(bytes(data)))
        else:
            raise InvalidBatchError(f"unknown compression type {codec}")
    except (zlib.error, ValueError, OSError) as exc:
        if isinstance(exc, InvalidBatchError):
            raise
        raise InvalidBatchError(f"{COMPRESSION_NAMES.get(codec, codec)} records do not decompress: {exc}") from None
    except Exception as exc:  # cramjam raises its own DecompressionError
        raise InvalidBatchError(f"{COMPRESSION_NAMES.get(codec, codec)} records do not decompress: {exc}") from None
    if len(out) > limit:
        raise InvalidBatchError(f"batch decompresses to more than {limit} bytes")
    return out


def _xerial_decompress(cj, data: bytes, limit: int) -> bytes:
    """Java's snappy-java stream: 16-byte header, then [i32 length][raw snappy block] chunks."""
    pos, out, total = 16, [], 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise InvalidBatchError("truncated xerial snappy chunk")
        (n,) = struct.unpack_from(">i", data, pos)
        pos += 4
        if n < 0 or pos + n > len(data):
            raise InvalidBatchError("bad xerial snappy chunk length")
        chunk = bytes(cj.snappy.decompress_raw(data[pos:pos + n]))
        total += len(chunk)
        if total > limit:
            raise InvalidBatchError(f"batch decompresses to more than {limit} bytes")
        out.append(chunk)
        pos += n
    return b"".join(out)


def compress(codec: int, data: bytes) -> bytes:
    if codec == NO_COMPRESSION:
        return data
    if codec == GZIP:
        c = zlib.compressobj(6, zlib.DEFLATED, 31)
        return c.compress(data) + c.flush()
    cj = _need_cramjam(codec)
    if codec == SNAPPY:
        return bytes(cj.snappy.compress_raw(data))
    if codec == LZ4:
        return bytes(cj.lz4.compress(data))
    if codec == ZSTD:
        return bytes(cj.zstd.compress(data))
    raise ValueError(f"unknown compression type {codec}")


# ---- decoding -------------------------------------------------------------------------
def decode_batch(buf, pos: int = 0, verify: bool = True,
                 max_decompressed: int = DEFAULT_MAX_DECOMPRESSED) -> tuple[KafkaBatchHeader, list[tuple]]:
    """The header and records `(offset, timestamp, key, value, headers)` of the batch at ``buf[pos:]``.

    Offsets and timestamps are absolute; a LogAppendTime batch's records all carry its
    max_timestamp; headers is None or a tuple of (str, bytes | None).
    """
    h = validate(buf, pos, verify)
    with memoryview(buf) as mv:
        body = mv[pos + HEADER_SIZE:pos + h.size]
        if h.compression != NO_COMPRESSION:
            body = memoryview(decompress(h.compression, body, max_decompressed))
        records = _decode_records(body, h, pos)
    return h, records


def _decode_records(body, h: KafkaBatchHeader, at: int) -> list[tuple]:
    out = []
    pos, end = 0, len(body)
    base_offset, base_ts = h.base_offset, h.base_timestamp
    append_time = h.max_timestamp if h.timestamp_type == LOG_APPEND_TIME else None
    last_delta = -1
    for _ in range(h.record_count):
        length, pos = _read_varint(body, pos, end)
        rec_end = pos + length
        if length < 6 or rec_end > end:
            raise InvalidBatchError(f"batch at position {at}: a record of length {length} runs past the batch")
        pos += 1  # record attributes: unused by Kafka
        ts_delta, pos = _read_varint(body, pos, rec_end)
        offset_delta, pos = _read_varint(body, pos, rec_end)
        if offset_delta <= last_delta or offset_delta > h.last_offset_delta:
            raise InvalidBatchError(f"batch at position {at}: record offset delta {offset_delta} out of order")
        last_delta = offset_delta
        key, pos = _read_bytes(body, pos, rec_end)
        value, pos = _read_bytes(body, pos, rec_end)
        count, pos = _read_varint(body, pos, rec_end)
        if count < 0 or count > length:
            raise InvalidBatchError(f"batch at position {at}: a record has {count} headers")
        headers = None
        if count:
            items = []
            for _ in range(count):
                hk, pos = _read_bytes(body, pos, rec_end)
                if hk is None:
                    raise InvalidBatchError(f"batch at position {at}: a header has a null key")
                try:
                    hk = hk.decode()
                except UnicodeDecodeError:
                    raise InvalidBatchError(f"batch at position {at}: a header key is not UTF-8") from None
                hv, pos = _read_bytes(body, pos, rec_end)
                items.append((hk, hv))
            headers = tuple(items)
        if pos != rec_end:
            raise InvalidBatchError(f"batch at position {at}: a record's length says {length} bytes, its fields "
                                    f"take {length + pos - rec_end}")
        ts = append_time if append_time is not None else base_ts + ts_delta
        out.append((base_offset + offset_delta, ts, key, value, headers))
    if pos != end:
        raise InvalidBatchError(f"batch at position {at}: {end - pos} bytes after the last record")
    return out


def validate_records(buf, pos: int = 0, max_decompressed: int = DEFAULT_MAX_DECOMPRESSED) -> KafkaBatchHeader:
    """Check that the records of the (CRC-valid) batch at ``buf[pos:]`` keep its header's promises,
    without building them: `record_count` records with offset deltas 0, 1, 2..., no timestamp
    after max_timestamp (CreateTime), every length inside its record and nothing after the last.
    Compressed batches are decompressed (at most `max_decompressed` bytes) to be walked.

    The broker runs this before it appends, so that offsets, the time index and every reader
    (and the conversion for the other protocol's readers) can trust the header. Records that
    share one layout (what a producer of same-size values writes) are checked a run at a time
    by `_stride_run` at a few ns each; the others by the exact walk, `_walk_exact`, about
    0.5-0.8 us each. Both accept exactly the same batches."""
    h = read_header(buf, pos)
    with memoryview(buf) as mv:
        body = mv[pos + HEADER_SIZE:pos + h.size]
        if h.compression != NO_COMPRESSION:
            data = decompress(h.compression, body, max_decompressed)
        elif len(body) >= _COPY_BELOW * h.record_count:
            data = body   # large records: few of them to walk, and a copy would cost more than the walk
        else:
            data = bytes(body)   # indexing bytes is faster than indexing a memoryview
        try:
            latest = h.max_timestamp - h.base_timestamp if h.timestamp_type == CREATE_TIME else None
            where = f"batch at position {pos}"
            p = _walk_records(data, h.record_count, latest, where)
            end = len(data)
            if p != end:
                raise InvalidBatchError(f"{where}: {end - p} bytes after the last of {h.record_count} records")
        finally:
            body.release()
    return h


# Average record size from which validate_records walks the frame in place instead of a copy.
_COPY_BELOW = 1024
# After a stride run that covered fewer records than this, walk more records exactly before
# trying again (up to _MAX_EXACT_STRETCH), so that batches of varied records pay almost
# nothing for the attempts.
_SHORT_RUN = 8
_PROBE = 32
_MAX_EXACT_STRETCH = 256


def _walk_records(data, count: int, latest: int | None, where: str) -> int:
    """validate_records' walk; returns where the last record ends. Alternates exact walks and
    stride runs: after each exact stretch, the last record walked is the template of a run."""
    i = p = 0
    stretch = 1
    while i < count:
        n = min(stretch, count - i)
        p, last = _walk_exact(data, p, i, n, count, latest, where)
        i += n
        if i == count:
            break
        stride = p - last
        if data[p:p + 2] != data[last:last + 2]:
            k = 0   # the next record's length differs from the last one's: no run to try
        else:
            # A short probe first: when the records differ, a failed attempt costs a few us.
            k = _stride_run(data, last, p, i, min(_PROBE, count - i), latest)
        p += k * stride
        i += k
        if k == _PROBE and i < count:
            k2 = _stride_run(data, p - stride, p, i, count - i, latest)
            p += k2 * stride
            i += k2
        stretch = 1 if k >= _SHORT_RUN else min(stretch * 2, _MAX_EXACT_STRETCH)
    return p


def _stride_run(data, t: int, p: int, i: int, most: int, latest: int | None) -> int:
    """How many records from record `i` at `p` on are laid out as the (checked) template record
    at `t` and keep the header's promises; the caller skips that many.

    Same layout means: the same size, the same bytes in every varint but the timestamp and
    offset deltas (lengths of the record, key, value, header count and headers), and those two
    deltas of the same varint size. Such a record parses as the template does, so the exact
    walk would accept it if its offset delta is `i` (the canonical varint, compared with an
    expected column) and its timestamp delta is at most `latest`. Each check is one column,
    ``data[p + r::stride]``, compared in C; the first record that fails any of them ends the
    run (an int of the column's bytes gives its index: the highest set bit)."""
    stride = p - t
    layout = _layout(data, t, stride)
    if layout is None:
        return 0
    fixed, ts_at, ts_size, off_at, off_size = layout
    if _varint_size(i << 1) != off_size:
        return 0
    k = min(most, (1 << (7 * off_size - 1)) - i, (len(data) - p) // stride)
    if k <= 0:
        return 0
    k = _alike_columns(data, t, p, stride, fixed, k)
    if k == 0:
        return 0
    for b, want in enumerate(_offset_varint_columns(i, k, off_size)):
        # The columns were made for the k before this loop; an earlier byte's difference may
        # have shortened the run since, and columns of unequal length do not compare
        # (_first_difference would go negative and move the walk backwards).
        want = want[:k]
        col = bytes(data[p + off_at + b:p + off_at + b + (k - 1) * stride + 1:stride])
        if col != want:
            k = _first_difference(col, want, k)
            if k == 0:
                return 0
    tables = _timestamp_tables(ts_size, latest)
    if tables is None:
        return 0
    bad = 0
    cols = [bytes(data[p + ts_at + b:p + ts_at + b + (k - 1) * stride + 1:stride]) for b in range(ts_size)]
    if ts_size == 1:
        bad = int.from_bytes(cols[0].translate(tables[0]), "big")
    else:
        lo, hi = cols
        not_lo, hi_over, hi_at, lo_over = tables
        bad = (int.from_bytes(lo.translate(not_lo), "big") | int.from_bytes(hi.translate(hi_over), "big")
               | (int.from_bytes(hi.translate(hi_at), "big") & int.from_bytes(lo.translate(lo_over), "big")))
    if bad:
        k = k - 1 - (bad.bit_length() - 1) // 8
    return k


def _alike_columns(data, t: int, p: int, stride: int, columns, k: int) -> int:
    """How many of the `k` records from `p` on, `stride` bytes apart, hold the template record's
    (at `t`) byte at every offset of `columns`: each column is one extended slice compared in C."""
    for r in columns:
        col = bytes(data[p + r:p + r + (k - 1) * stride + 1:stride])
        want = bytes(data[t + r:t + r + 1]) * k
        if col != want:
            k = _first_difference(col, want, k)
            if k == 0:
                return 0
    return k


def _first_difference(col, want, k: int) -> int:
    """The index of the first byte where two k-byte columns differ (both must be k bytes long:
    the XOR lines them up at their last byte)."""
    x = int.from_bytes(col, "big") ^ int.from_bytes(want, "big")
    return k - 1 - (x.bit_length() - 1) // 8


def _varint_size(u: int) -> int:
    n = 1
    while u >= 0x80:
        u >>= 7
        n += 1
    return n


_MAX_FIXED_COLUMNS = 32


def _layout(data, t: int, stride: int):
    """(offsets of the fixed varint bytes, timestamp delta at, its size, offset delta at, its
    size) of the checked record at `t`, relative to `t`; None when it has too many headers to
    be worth a run."""
    q = t
    while data[q] >= 0x80:
        q += 1
    q += 1
    fixed = list(range(q - t))          # the record's length
    ts_at = q + 1 - t                   # after the attributes byte
    q = t + ts_at
    while data[q] >= 0x80:
        q += 1
    q += 1
    off_at = q - t
    ts_size = off_at - ts_at
    while data[q] >= 0x80:
        q += 1
    q += 1
    off_size = q - t - off_at
    end = t + stride
    for _ in range(2):                  # key, value
        a = q
        n, q = _read_varint(data, q, end)
        fixed.extend(range(a - t, q - t))
        q += max(n, 0)
    a = q
    headers, q = _read_varint(data, q, end)
    fixed.extend(range(a - t, q - t))
    if 2 * headers + len(fixed) > _MAX_FIXED_COLUMNS:
        return None
    for _ in range(headers):
        for _ in range(2):              # header key, header value
            a = q
            n, q = _read_varint(data, q, end)
            fixed.extend(range(a - t, q - t))
            q += max(n, 0)
    return fixed, ts_at, ts_size, off_at, off_size


_EVEN_BYTES = bytes(range(0, 128, 2))


def _offset_varint_columns(i: int, k: int, size: int) -> list[bytes]:
    """The bytes of the zigzag varints of offset deltas i..i+k-1 (all of `size` bytes), one
    column per byte position: byte b of 2*d is bits 7b.. of 2*d, a continuation bit on all
    but the last."""
    cols = []
    for b in range(size):
        flag = 0x80 if b < size - 1 else 0
        if b == 0:
            # 2*d & 0x7F: 0, 2, ..., 126, repeating every 64 deltas
            pattern = bytes(x | flag for x in _EVEN_BYTES) if flag else _EVEN_BYTES
            start = i % 64
            cols.append((pattern * ((start + k + 63) // 64))[start:start + k])
        else:
            block = 1 << (7 * b - 1)   # (2*d >> 7b) & 0x7F is constant over blocks of this many deltas
            first, last = i // block, (i + k - 1) // block
            col = b"".join(bytes(((v & 0x7F) | flag,)) * block for v in range(first, last + 1))
            start = i - first * block
            cols.append(col[start:start + k])
    return cols


_timestamp_table_cache: dict = {}


def _timestamp_tables(size: int, latest: int | None):
    """translate() tables that map the bytes of a column of timestamp delta varints to 0 (fine)
    or 1 (not a varint of that size, or maybe newer than `latest`: the exact walk decides).
    A delta is fine when its zigzag form z <= 2*latest + 1 (then z/2 <= latest, or it is
    negative). One table for 1-byte deltas; four for 2-byte ones (lo, hi bytes): not a
    continuation byte, hi byte above the limit's, hi byte at the limit's, lo bits above the limit's.
    None for longer deltas (over 8 s apart): the exact walk takes them."""
    if size > 2:
        return None
    limit = 0x3FFF if latest is None else min(2 * latest + 1, 0x3FFF)
    if size == 1:
        limit = min(limit, 0x7F)
    key = (size, limit)
    tables = _timestamp_table_cache.get(key)
    if tables is None:
        if size == 1:
            tables = (bytes(0 if b <= limit else 1 for b in range(256)),)
        else:
            lim_hi, lim_lo = limit >> 7, limit & 0x7F
            tables = (bytes(0 if b >= 0x80 else 1 for b in range(256)),
                      bytes(0 if b <= lim_hi else 1 for b in range(256)),
                      bytes(1 if b == lim_hi else 0 for b in range(256)),
                      bytes(1 if b & 0x7F > lim_lo else 0 for b in range(256)))
        _timestamp_table_cache[key] = tables
    return tables


def _walk_exact(data, p: int, first: int, n: int, count: int, latest: int | None, where: str) -> tuple[int, int]:
    """Walk records first..first+n-1 from `p`, checking each field; returns (where the last
    ends, where it starts). One-byte varints (deltas, short lengths, header counts) and the
    two-byte ones (record and value lengths up to 8 KiB, offset deltas up to 8191) are read
    inline: a call per varint costs 40% more."""
    varint = _read_varint
    end = len(data)
    start = p
    try:
        for i in range(first, first + n):
            start = p
            v = data[p]
            if v < 0x80:
                length = (v >> 1) ^ -(v & 1)
                p += 1
            elif data[p + 1] < 0x80:
                u = (v & 0x7F) | (data[p + 1] << 7)
                length = (u >> 1) ^ -(u & 1)
                p += 2
            else:
                length, p = varint(data, p, end)
            stop = p + length
            if length < 6 or stop > end:
                raise InvalidBatchError(f"{where}: record {i} of length {length} runs past the batch")
            v = data[p + 1]     # after the attributes byte: the timestamp delta
            if v < 0x80:
                ts = (v >> 1) ^ -(v & 1)
                p += 2
            else:
                ts, p = varint(data, p + 1, stop)
            if latest is not None and ts > latest:
                raise InvalidBatchError(f"{where}: record {i} is newer than the batch's max timestamp")
            v = data[p]
            if v < 0x80:
                if v != i << 1:
                    raise InvalidBatchError(f"{where}: offset deltas must be 0..{count - 1} in order")
                p += 1
            elif data[p + 1] < 0x80:
                if (v & 0x7F) | (data[p + 1] << 7) != i << 1:
                    raise InvalidBatchError(f"{where}: offset deltas must be 0..{count - 1} in order")
                p += 2
            else:
                delta, p = varint(data, p, stop)
                if delta != i:
                    raise InvalidBatchError(f"{where}: offset deltas must be 0..{count - 1} in order")
            v = data[p]          # key length
            if v == 1:
                p += 1
            else:
                n_, p = varint(data, p, stop)
                if n_ < -1:
                    raise InvalidBatchError(f"{where}: record {i} has a key of length {n_}")
                p += max(n_, 0)
            v = data[p]          # value length
            if v == 1:
                p += 1
            elif v >= 0x80 and data[p + 1] < 0x80:
                u = (v & 0x7F) | (data[p + 1] << 7)
                p += 2 + (u >> 1)   # u is even: a length >= 64, never negative
                if u & 1:
                    raise InvalidBatchError(f"{where}: record {i} has a value of negative length")
            else:
                n_, p = varint(data, p, stop)
                if n_ < -1:
                    raise InvalidBatchError(f"{where}: record {i} has a value of length {n_}")
                p += max(n_, 0)
            v = data[p]          # header count
            if v == 0:
                p += 1
            else:
                headers, p = varint(data, p, stop)
                if headers < 0:
                    raise InvalidBatchError(f"{where}: record {i} has {headers} headers")
                for _ in range(headers):
                    n_, p = varint(data, p, stop)
                    if n_ < 0:
                        raise InvalidBatchError(f"{where}: record {i} has a header key of length {n_}")
                    n_, p = varint(data, p + n_, stop)
                    if n_ < -1:
                        raise InvalidBatchError(f"{where}: record {i} has a header value of length {n_}")
                    p += max(n_, 0)
            if p != stop:
                raise InvalidBatchError(f"{where}: record {i}'s fields do not fill its length {length}")
    except IndexError:
        raise InvalidBatchError(f"{where}: the records end before the header's {count}") from None
    return p, start


def decode_batches(buf) -> list[tuple]:
    """All records of the whole batches in ``buf`` (a fetch's record set), in offset order."""
    out: list[tuple] = []
    for _, mv in iter_batches(buf):
        out.extend(decode_batch(mv)[1])
    return out


# ---- building -------------------------------------------------------------------------
def encode_records(records: Sequence[tuple], base_timestamp: int, offset_deltas: Sequence[int] | None = None) -> bytes:
    """The records block for `(key, value, timestamp, headers)` tuples (timestamps absolute)."""
    out = bytearray()
    rec = bytearray()
    for i, (key, value, ts, headers) in enumerate(records):
        rec.clear()
        rec.append(0)
        _write_varint(rec, ts - base_timestamp)
        _write_varint(rec, i if offset_deltas is None else offset_deltas[i])
        for field in (key, value):
            if field is None:
                _write_varint(rec, -1)
            else:
                _write_varint(rec, len(field))
                rec += field
        headers = headers or ()
        _write_varint(rec, len(headers))
        for hk, hv in headers:
            hk = hk.encode() if isinstance(hk, str) else bytes(hk)
            _write_varint(rec, len(hk))
            rec += hk
            if hv is None:
                _write_varint(rec, -1)
            else:
                _write_varint(rec, len(hv))
                rec += hv
        _write_varint(out, len(rec))
        out += rec
    return bytes(out)


def build_batch(records: Sequence[tuple], *, base_offset: int = 0, timestamp: int | None = None,
                compression: int = NO_COMPRESSION, producer_id: int = NO_PRODUCER_ID, producer_epoch: int = -1,
                base_sequence: int = NO_SEQUENCE, partition_leader_epoch: int = -1,
                timestamp_type: int = CREATE_TIME, offset_deltas: Sequence[int] | None = None) -> bytes:
    """One magic-2 batch of `(key, value, timestamp, headers)` records, as a Kafka producer
    builds it (None timestamps take `timestamp`, default now). `offset_deltas` keeps the gaps
    of a compacted batch; by default they are 0..n-1."""
    if not records:
        raise ValueError("a batch holds at least one record")
    default_ts = int(time.time() * 1000) if timestamp is None else timestamp
    records = [(k, v, default_ts if ts is None else ts, hd) for k, v, ts, hd in records]
    base_ts = records[0][2]
    max_ts = max(r[2] for r in records)
    last_delta = len(records) - 1 if offset_deltas is None else offset_deltas[-1]
    body = compress(compression, encode_records(records, base_ts, offset_deltas))
    attributes = compression | (TIMESTAMP_TYPE_MASK if timestamp_type == LOG_APPEND_TIME else 0)
    length = HEADER_SIZE - LOG_OVERHEAD + len(body)
    buf = bytearray(_HEADER.pack(base_offset, length, partition_leader_epoch, MAGIC, 0, attributes, last_delta,
                                 base_ts, max_ts, producer_id, producer_epoch, base_sequence, len(records)))
    buf += body
    _CRC.pack_into(buf, 17, crc32c(memoryview(buf)[_CRC_START:]))
    return bytes(buf)
