"""Kafka's record batch (magic 2) in clients/kafka_batch.py, alone: no server, no socket.

kafka-python's own batch builder and reader are the oracle: batches it builds must parse here,
and batches built here must read back through it.
"""

import zlib

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from clients import kafka_batch as kb
from clients.record_batch import CorruptBatchError, InvalidBatchError, TruncatedBatchError, is_kafka_batch
from clients.record_batch import read_header as read_any_header

kafka_records = pytest.importorskip("kafka.record.default_records", reason="kafka-python is in the test extra")

CODECS = [kb.NO_COMPRESSION, kb.GZIP, kb.SNAPPY, kb.LZ4, kb.ZSTD]
# The codecs kafka-python itself can use here (it needs its own packages for snappy, lz4 and zstd).
_kafka_codec = pytest.importorskip("kafka.codec")
ORACLE_CODECS = [kb.NO_COMPRESSION, kb.GZIP] + [
    c for c, has in ((kb.SNAPPY, _kafka_codec.has_snappy), (kb.LZ4, _kafka_codec.has_lz4),
                     (kb.ZSTD, _kafka_codec.has_zstd)) if has()]
_KAFKA_PYTHON_CODEC = {kb.NO_COMPRESSION: 0, kb.GZIP: 1, kb.SNAPPY: 2, kb.LZ4: 3, kb.ZSTD: 4}

records_st = st.lists(
    st.tuples(st.none() | st.binary(max_size=40), st.none() | st.binary(max_size=200),
              st.integers(0, 2**41),
              st.none() | st.lists(st.tuples(st.text(max_size=10), st.none() | st.binary(max_size=20)),
                                   max_size=3)),
    min_size=1, max_size=20)


def kafka_python_batch(records, codec=0, producer_id=-1, epoch=-1, sequence=-1):
    builder = kafka_records.DefaultRecordBatchBuilder(magic=2, compression_type=_KAFKA_PYTHON_CODEC[codec],
                                                      is_transactional=False, producer_id=producer_id,
                                                      producer_epoch=epoch, base_sequence=sequence,
                                                      batch_size=1 << 20)
    for i, (key, value, ts, headers) in enumerate(records):
        builder.append(i, timestamp=ts, key=key, value=value, headers=headers or [])
    return bytes(builder.build())


def normal(records):
    """Records as decode_batch gives them back: offsets from 0, headers a tuple or None."""
    return [(i, ts, k, v, tuple(h) if h else None) for i, (k, v, ts, h) in enumerate(records)]


@given(records_st, st.sampled_from(CODECS))
def test_batches_built_here_decode_here(records, codec):
    data = kb.build_batch(records, compression=codec, base_offset=0)
    h, decoded = kb.decode_batch(data)
    assert h.record_count == len(records) and h.compression == codec
    assert decoded == normal(records)


@given(records_st, st.sampled_from(ORACLE_CODECS))
def test_batches_built_here_read_back_in_kafka_python(records, codec):
    data = kb.build_batch(records, compression=codec, base_offset=0)
    theirs = kafka_records.DefaultRecordBatch(data)
    assert theirs.validate_crc()
    got = [(r.offset, r.timestamp, r.key, r.value, tuple(r.headers) or None) for r in theirs]
    assert got == normal(records)


@given(records_st, st.sampled_from(ORACLE_CODECS))
def test_batches_kafka_python_builds_parse_here(records, codec):
    data = kafka_python_batch(records, codec, producer_id=7, epoch=1, sequence=40)
    h = kb.validate(data)
    assert (h.producer_id, h.producer_epoch, h.base_sequence) == (7, 1, 40)
    assert h.last_sequence == 40 + len(records) - 1
    assert kb.decode_batch(data)[1] == normal(records)


@given(st.binary(min_size=1, max_size=300), st.integers(0, 10_000))
def test_any_flipped_byte_under_the_crc_is_corrupt_message(value, where):
    data = bytearray(kb.build_batch([(b"k", value, 1000, [("h", b"v")])]))
    at = 21 + where % (len(data) - 21)
    data[at] ^= 0x01
    with pytest.raises(CorruptBatchError):
        kb.validate(data)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash_the_parser(blob):
    try:
        kb.decode_batch(blob, verify=False)
    except InvalidBatchError:
        pass


def test_header_checks_without_decoding():
    good = bytearray(kb.build_batch([(None, b"a", 1, None), (None, b"b", 2, None)]))
    wrong_count = bytearray(good)
    wrong_count[57:61] = (3).to_bytes(4, "big")
    with pytest.raises(InvalidBatchError, match="last offset delta"):
        kb.validate(wrong_count, check_crc=False)
    with pytest.raises(TruncatedBatchError):
        kb.validate(good[:-1])
    old_magic = bytearray(good)
    old_magic[16] = 1
    with pytest.raises(InvalidBatchError, match="magic"):
        kb.validate(old_magic)
    bad_codec = bytearray(good)
    bad_codec[22] |= 0x07
    with pytest.raises(InvalidBatchError, match="compression"):
        kb.validate(bad_codec, check_crc=False)


def test_log_append_time_gives_every_record_the_batch_time():
    data = bytearray(kb.build_batch([(None, b"a", 5, None), (None, b"b", 9, None)]))
    kb.set_log_append_time(data, 123_456)
    h, records = kb.decode_batch(data)   # the CRC was recomputed
    assert h.timestamp_type == kb.LOG_APPEND_TIME
    assert [r[1] for r in records] == [123_456, 123_456]


def test_xerial_snappy_from_java_clients_decodes():
    import cramjam
    payload = kb.encode_records([(b"k", b"v" * 100, 77, None)], 77)
    block = bytes(cramjam.snappy.compress_raw(payload))
    xerial = b"\x82SNAPPY\x00" + (1).to_bytes(4, "big") + (1).to_bytes(4, "big") + len(block).to_bytes(4, "big") + block
    assert kb.decompress(kb.SNAPPY, xerial) == payload


def test_without_cramjam_snappy_is_unsupported_compression(monkeypatch):
    data = kb.build_batch([(None, b"x", 1, None)], compression=kb.SNAPPY)
    monkeypatch.setattr(kb, "cramjam", None)
    with pytest.raises(kb.UnsupportedCompressionError):
        kb.decode_batch(data)


def test_a_gzip_bomb_is_refused():
    bomb = zlib.compressobj(9, zlib.DEFLATED, 31)
    blob = bomb.compress(b"\0" * (4 << 20)) + bomb.flush()
    with pytest.raises(InvalidBatchError, match="more than"):
        kb.decompress(kb.GZIP, blob, limit=1 << 20)


def test_the_stored_format_marker_tells_the_formats_apart():
    from clients.record_batch import build_batch
    ours = build_batch([(None, b"x", 1, None)])
    theirs = bytearray(kb.build_batch([(None, b"x", 1, None)]))   # epoch -1, as producers send it
    kb.set_partition_leader_epoch(theirs, 0)                       # as the broker stores it
    assert not is_kafka_batch(ours) and is_kafka_batch(theirs)
    h = read_any_header(theirs)
    assert h.magic == kb.MAGIC and h.record_count == 1 and h.size == len(theirs)


@given(records_st, st.sampled_from(ORACLE_CODECS))
def test_the_record_walk_accepts_every_well_formed_batch(records, codec):
    assert kb.validate_records(kafka_python_batch(records, codec)).record_count == len(records)


def _recrc(buf):
    buf[17:21] = kb.crc32c(bytes(buf[21:])).to_bytes(4, "big")
    return buf


@pytest.mark.parametrize("lie", ["more records", "fewer records", "newer record", "offset gap", "trailing bytes"])
def test_the_record_walk_refuses_a_header_the_body_does_not_keep(lie):
    records = [(b"k", b"v%d" % i, 1_000 + i, [("h", b"x")]) for i in range(3)]
    if lie == "more records":
        buf = bytearray(kb.build_batch(records))
        buf[23:27] = (3).to_bytes(4, "big")
        buf[57:61] = (4).to_bytes(4, "big")
    elif lie == "fewer records":
        buf = bytearray(kb.build_batch(records))
        buf[23:27] = (1).to_bytes(4, "big")
        buf[57:61] = (2).to_bytes(4, "big")
    elif lie == "newer record":
        buf = bytearray(kb.build_batch(records))
        buf[35:43] = (1_001).to_bytes(8, "big")
    elif lie == "offset gap":
        buf = bytearray(kb.build_batch(records, offset_deltas=[0, 1, 3]))
        buf[23:27] = (2).to_bytes(4, "big")
    else:
        buf = bytearray(kb.build_batch(records)) + b"\0\0"
        buf[8:12] = (len(buf) - 12).to_bytes(4, "big")
    _recrc(buf)
    kb.validate(buf)   # the CRC and header fields are fine: only the walk sees the lie
    with pytest.raises(InvalidBatchError):
        kb.validate_records(buf)


# ---- the stride runs of validate_records against the exact walk ------------------------
def _exact_verdict(buf):
    """What the record-by-record walk alone says of a batch: None (accepted) or the error."""
    h = kb.read_header(buf)
    data = bytes(buf[kb.HEADER_SIZE:h.size])
    latest = h.max_timestamp - h.base_timestamp if h.timestamp_type == kb.CREATE_TIME else None
    try:
        end, _ = kb._walk_exact(data, 0, 0, h.record_count, h.record_count, latest, "batch at position 0")
        if end != len(data):
            raise InvalidBatchError("trailing bytes")
    except InvalidBatchError as exc:
        return exc
    return None


def _verdict(buf):
    try:
        kb.validate_records(buf)
    except InvalidBatchError as exc:
        return exc
    return None


# Runs of records alike (what stride runs skip), each with its own value size, key, headers and
# time step, so that batches cross the varint sizes of offset deltas (64) and timestamps (64 ms).
runs_st = st.lists(st.tuples(st.integers(1, 90), st.sampled_from([0, 1, 63, 64, 100, 9000]),
                             st.sampled_from([None, b"k", b"key-" * 40]),
                             st.sampled_from([None, [("h", b"v")], [("a", None), ("b", b"x" * 70)]]),
                             st.sampled_from([0, 1, 3, 40])),
                   min_size=1, max_size=4)
mutations_st = st.lists(st.tuples(st.integers(0, 2**31), st.integers(1, 255)), max_size=3)


def _alike_runs_batch(runs, timestamp_type=kb.CREATE_TIME):
    records, ts = [], 10_000
    for n, size, key, headers, step in runs:
        for _ in range(n):
            records.append((key, b"v" * size, ts, headers))
            ts += step
    return bytearray(kb.build_batch(records, timestamp_type=timestamp_type))


@given(runs_st, mutations_st, st.none() | st.integers(0, 300), st.sampled_from([kb.CREATE_TIME, kb.LOG_APPEND_TIME]))
# Record 76's two-byte offset delta with its low byte wrong: the run from record 65 is cut short
# by the low-byte column, and the high-byte column must then be compared over the shorter run
# (it once was not, and the run's count went negative, moving the walk back into record 63).
@example(runs=[(78, 0, None, None, 40)], mutations=[(44852614, 1)], max_ts=None, ts_type=kb.CREATE_TIME)
def test_stride_runs_accept_and_refuse_exactly_what_the_exact_walk_does(runs, mutations, max_ts, ts_type):
    buf = _alike_runs_batch(runs, ts_type)
    body = len(buf) - kb.HEADER_SIZE
    for where, flip in mutations:
        buf[kb.HEADER_SIZE + where % body] ^= flip
    if max_ts is not None:   # a max timestamp some records may pass
        buf[35:43] = (kb.read_header(buf).base_timestamp + max_ts).to_bytes(8, "big")
    expected, got = _exact_verdict(buf), _verdict(buf)
    assert (got is None) == (expected is None), (expected, got)
    if expected is not None:
        assert str(got) == str(expected)


def test_stride_runs_in_a_batch_of_ten_thousand_records_catch_one_bad_record():
    """Offset deltas of 1, 2 and 3 bytes and timestamp deltas of 1, 2 and 3 bytes in one batch."""
    records = [(None, b"x" * 100, 1_000 + i * 2, None) for i in range(10_000)]
    good = bytearray(kb.build_batch(records))
    assert kb.validate_records(good).record_count == 10_000 and _exact_verdict(good) is None
    # record 9000's offset delta (a 3-byte varint after length (2), attributes, timestamp (3)) said 9001
    wrong = kb.build_batch(records[:9000] + [(None, b"x" * 100, 19_000, None)] + records[9001:],
                           offset_deltas=list(range(9000)) + [9001] + list(range(9001, 10_000)))
    with pytest.raises(InvalidBatchError, match="offset deltas"):
        kb.validate_records(wrong)
    # records newer than the header's max timestamp inside runs of 1- and 2-byte timestamp deltas
    for spread in (0, 100):
        records = [(None, b"x" * 100, 1_000 + (i and spread + i % 30), None) for i in range(10_000)]
        late = bytearray(kb.build_batch(records))
        late[35:43] = (1_000 + spread + 28).to_bytes(8, "big")
        with pytest.raises(InvalidBatchError, match="record 29 is newer"):
            kb.validate_records(late)
