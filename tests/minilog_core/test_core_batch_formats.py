"""One log, two formats: Kafka batches and minilog batches in the same partition, each read
back in the reader's format with offsets, keys, values, headers and timestamps intact.
In-process, on the core (`LogBroker`); the msgpack client's view is in tests/minilog_server."""

import shutil
import struct
import zlib

import pytest
from crc32c import crc32c

from clients import kafka_batch as kb
from clients import record_batch as rb
from clients.protocol.errors import BrokerError, ErrorCode
from minilog.batch_formats import KAFKA, MINILOG
from minilog.storage import FileSlice

KAFKA_RECORDS = [(b"k1", b"v1", 1_000, [("h", b"x"), ("n", None)]), (None, b"v2", 1_005, None)]
MINILOG_RECORDS = [(b"k3", b"v3", 2_000, [("h", b"y")]), (b"k4", None, 2_001, None)]


def expected(records, first_offset):
    return [(first_offset + i, ts, k, v, tuple(h) if h else None) for i, (k, v, ts, h) in enumerate(records)]


def fetch(broker, fmt, offset=0, topic="t"):
    rows, _ = broker.read([(topic, 0, offset, 1 << 20)], 1 << 20, 1, fmt)
    (row,) = rows
    assert row[2] is None, row[2]
    return row[5]


def records_in(data, fmt):
    data = data.read() if isinstance(data, FileSlice) else data
    out = []
    for h, view in rb.iter_batches(data):
        assert (h.magic == kb.MAGIC) == (fmt == KAFKA), "a batch of the other format reached the reader"
        out.extend(rb.decode_batch(view)[1])
    return [(o, ts, k, v, tuple(hd) if hd else None) for o, ts, k, v, hd in out]


async def test_each_format_reads_back_untouched_through_its_own_protocol(broker):
    assert broker.produce([["k", 0, kb.build_batch(KAFKA_RECORDS)]], fmt=KAFKA) == [["k", 0, 0, None]]
    assert broker.produce([["m", 0, rb.build_batch(MINILOG_RECORDS)]]) == [["m", 0, 0, None]]
    # Only its own format in each log: the stored slice goes out as it is (sendfile).
    assert isinstance(fetch(broker, KAFKA, topic="k"), FileSlice)
    assert isinstance(fetch(broker, MINILOG, topic="m"), FileSlice)
    assert records_in(fetch(broker, KAFKA, topic="k"), KAFKA) == expected(KAFKA_RECORDS, 0)
    assert broker.conversions == 0


async def test_a_log_of_one_format_is_never_converted_even_after_a_restart(open_broker):
    broker = open_broker()
    for _ in range(3):
        broker.produce([["k", 0, kb.build_batch(KAFKA_RECORDS)]], fmt=KAFKA)
        broker.produce([["m", 0, rb.build_batch(MINILOG_RECORDS)]])
    broker.close()
    again = open_broker()
    for topic, fmt in (("k", KAFKA), ("m", MINILOG)):
        assert isinstance(fetch(again, fmt, topic=topic), FileSlice)
        assert not isinstance(fetch(again, KAFKA if fmt == MINILOG else MINILOG, topic=topic), FileSlice)
    assert again.conversions == 2


async def test_a_mixed_log_reads_in_either_format(broker):
    broker.produce([["t", 0, kb.build_batch(KAFKA_RECORDS)]], fmt=KAFKA)
    broker.produce([["t", 0, rb.build_batch(MINILOG_RECORDS)]])
    broker.produce([["t", 0, kb.build_batch(KAFKA_RECORDS, compression=kb.GZIP)]], fmt=KAFKA)
    want = expected(KAFKA_RECORDS, 0) + expected(MINILOG_RECORDS, 2) + expected(KAFKA_RECORDS, 4)
    assert records_in(fetch(broker, MINILOG), MINILOG) == want
    assert records_in(fetch(broker, KAFKA), KAFKA) == want
    # A fetch from the middle starts with the batch holding the offset, as Kafka's does.
    assert records_in(fetch(broker, KAFKA, offset=3), KAFKA)[0][0] == 2
    # Kafka's own reader agrees on the converted bytes.
    from kafka.record.memory_records import MemoryRecords
    theirs = MemoryRecords(bytes(fetch(broker, KAFKA)))
    got = []
    while (batch := theirs.next_batch()) is not None:
        got.extend((r.offset, r.timestamp, r.key, r.value, tuple(r.headers) or None) for r in batch)
    assert got == want


async def test_both_formats_survive_a_crash_recovery(open_broker, tmp_path):
    broker = open_broker()
    broker.produce([["t", 0, kb.build_batch(KAFKA_RECORDS)]], fmt=KAFKA)
    broker.produce([["t", 0, rb.build_batch(MINILOG_RECORDS)]])
    # A copy taken while the broker runs has no clean-shutdown marker: every batch is re-validated.
    shutil.copytree(tmp_path / "minilog", tmp_path / "crashed")
    again = open_broker(tmp_path / "crashed")
    assert again.partition_offsets("t", 0) == (0, 4)
    want = expected(KAFKA_RECORDS, 0) + expected(MINILOG_RECORDS, 2)
    assert records_in(fetch(again, MINILOG), MINILOG) == want
    assert records_in(fetch(again, KAFKA), KAFKA) == want
    assert again.produce([["t", 0, kb.build_batch(KAFKA_RECORDS)]], fmt=KAFKA) == [["t", 0, 4, None]]


async def test_bad_kafka_batches_fail_alone_and_store_nothing(broker):
    good = kb.build_batch(KAFKA_RECORDS)
    flipped = bytearray(good)
    flipped[-1] ^= 1
    transactional = bytearray(kb.build_batch(KAFKA_RECORDS, producer_id=1, producer_epoch=0, base_sequence=0))
    transactional[22] |= kb.TRANSACTIONAL_MASK
    recrc(transactional)
    rows = broker.produce([["t", 0, bytes(flipped)], ["t", 0, good + good], ["t", 0, good[:30]],
                           ["t", 0, rb.build_batch(MINILOG_RECORDS)], ["t", 0, bytes(transactional)],
                           ["t", 0, good]], fmt=KAFKA)
    assert [r[3] and r[3][0] for r in rows] == [ErrorCode.CORRUPT_MESSAGE, ErrorCode.INVALID_RECORD,
                                                ErrorCode.CORRUPT_MESSAGE, ErrorCode.CORRUPT_MESSAGE,
                                                ErrorCode.INVALID_RECORD, None]
    assert rows[-1][2] == 0


async def test_without_cramjam_snappy_batches_are_refused(broker, monkeypatch):
    snappy = _snappy_batch()
    monkeypatch.setattr(kb, "cramjam", None)
    rows = broker.produce([["t", 0, kb.build_batch(KAFKA_RECORDS, compression=kb.GZIP)],
                           ["t", 0, snappy]], fmt=KAFKA)
    assert rows[0][3] is None and rows[1][3][0] == ErrorCode.UNSUPPORTED_COMPRESSION_TYPE


def recrc(buf: bytearray) -> None:
    struct.pack_into(">I", buf, 17, crc32c(bytes(buf[21:])))


def _snappy_batch():
    """A snappy batch built while cramjam is still importable here (the test then hides it)."""
    import cramjam
    body = bytes(cramjam.snappy.compress_raw(kb.encode_records([(None, b"s", 1, None)], 1)))
    buf = bytearray(kb.build_batch([(None, b"s", 1, None)]))[:kb.HEADER_SIZE] + body
    struct.pack_into(">i", buf, 8, len(buf) - 12)
    struct.pack_into(">h", buf, 21, kb.SNAPPY)
    recrc(buf)
    return bytes(buf)


async def test_a_log_append_time_topic_never_re_signs_a_damaged_batch(broker):
    """Stamping a LogAppendTime batch rewrites its header and CRC: a batch damaged on the way
    must be refused first (either format), never stored with a fresh CRC; a bad setting is refused."""
    broker.create_topic("stamped", 1, {"message.timestamp.type": "LogAppendTime"})
    for value in (5, "logappendtime", ["LogAppendTime"]):
        with pytest.raises(BrokerError) as refused:
            broker.create_topic("badly", 1, {"message.timestamp.type": value})
        assert refused.value.code == ErrorCode.BAD_REQUEST
    kafka_flipped = bytearray(kb.build_batch(KAFKA_RECORDS))
    kafka_flipped[-1] ^= 1
    native_flipped = bytearray(rb.build_batch(MINILOG_RECORDS))
    native_flipped[-1] ^= 1
    lying = bytearray(rb.build_batch(MINILOG_RECORDS))
    struct.pack_into(">i", lying, 19, 2**31 - 1)   # the header's record count, re-signed below
    struct.pack_into(">I", lying, 13, zlib.crc32(bytes(lying[17:])))
    rows = broker.produce([["stamped", 0, bytes(kafka_flipped)]], fmt=KAFKA)
    assert rows[0][3][0] == ErrorCode.CORRUPT_MESSAGE
    rows = broker.produce([["stamped", 0, bytes(native_flipped)], ["stamped", 0, bytes(lying)],
                           ["stamped", 0, rb.build_batch(MINILOG_RECORDS) + bytes(native_flipped)]])
    assert all(r[3] is not None for r in rows), rows
    assert broker.partition_offsets("stamped", 0) == (0, 0)   # nothing of them was kept
    rows = broker.produce([["stamped", 0, kb.build_batch(KAFKA_RECORDS)]], fmt=KAFKA)
    assert rows[0][3] is None and len(rows[0]) == 5 and rows[0][4] > 1_700_000_000_000
