import mmap
import os

import pytest

from clients.record_batch import CorruptBatchError, InvalidBatchError, build_batch, decode_batches, iter_batches
from log_storage_helpers import batch_of
from minilog.storage import LogConfig, OffsetOutOfRangeError, PartitionLog, RecordTooLargeError

SMALL = LogConfig(segment_bytes=1024, index_interval_bytes=64, segment_index_bytes=4096)


def fill(log, batches=60, per_batch=3):
    expected = []
    for i in range(batches):
        values = [b"r%d-%d" % (i, j) * (1 + i % 4) for j in range(1 + (i % per_batch))]
        info = log.append(batch_of(values, timestamp=10_000 + 10 * i))
        assert info.base_offset == len(expected)
        expected.extend(values)
    return expected


def test_append_assigns_dense_offsets_and_reads_back(tmp_path):
    with PartitionLog.open(str(tmp_path / "t-0"), SMALL) as log:
        expected = fill(log)
        assert log.log_end_offset == log.high_watermark == len(expected)
        assert len(log.segments) > 3, "tiny segment.bytes must roll"
        for offset in range(len(expected)):
            records = decode_batches(log.read_bytes(offset, 1))
            assert records[0][0] <= offset < records[-1][0] + 1
            assert [r[3] for r in records if r[0] >= offset][:1] == [expected[offset]]


def test_segment_files_are_named_by_base_offset(tmp_path):
    with PartitionLog.open(str(tmp_path / "t-0"), SMALL) as log:
        fill(log)
        bases = [s.base_offset for s in log.segments]
    names = sorted(os.listdir(tmp_path / "t-0"))
    for base in bases:
        for suffix in (".log", ".index", ".timeindex"):
            assert f"{base:020d}{suffix}" in names


def test_read_respects_max_bytes_but_returns_at_least_one_batch(tmp_path):
    cfg = LogConfig(segment_bytes=1 << 20, index_interval_bytes=128)
    with PartitionLog.open(str(tmp_path / "t-0"), cfg) as log:
        sizes = []
        for i in range(40):
            b = batch_of([b"x" * (10 * (i % 7 + 1))] * 2)
            sizes.append(len(b))
            log.append(b)
        one = log.read(0, 1)
        assert one.length == sizes[0]
        for start_batch, limit in [(0, 500), (3, 1000), (10, 333), (0, 10**9)]:
            data = log.read_bytes(start_batch * 2 + 1, limit)
            n = len(list(iter_batches(data)))
            assert sum(sizes[start_batch:start_batch + n]) == len(data)
            assert len(data) <= max(limit, sizes[start_batch])
            if start_batch + n < len(sizes):
                assert len(data) + sizes[start_batch + n] > limit, "stopped before the limit"


def test_file_slice_matches_bytes(tmp_path):
    with PartitionLog.open(str(tmp_path / "t-0"), SMALL) as log:
        fill(log)
        for offset in range(0, log.log_end_offset, 7):
            s = log.read(offset, 300)
            assert os.pread(s.fd, s.length, s.position) == log.read_bytes(offset, 300) == s.read()
            r, w = os.pipe()
            try:
                assert os.sendfile(w, s.fd, s.position, s.length) == s.length
                assert os.read(r, s.length) == s.read()
            finally:
                os.close(r)
                os.close(w)


def test_reads_outside_the_log_raise(tmp_path):
    with PartitionLog.open(str(tmp_path / "t-0"), SMALL) as log:
        fill(log, batches=5)
        end = log.log_end_offset
        assert log.read(end) is None and log.read_bytes(end) == b""
        with pytest.raises(OffsetOutOfRangeError):
            log.read(end + 1)
        with pytest.raises(OffsetOutOfRangeError):
            log.read(-1)


def test_offset_for_timestamp(tmp_path):
    with PartitionLog.open(str(tmp_path / "t-0"), SMALL) as log:
        stamps = []
        for i in range(80):
            n = 1 + i % 3
            log.append(batch_of([b"v" * 20] * n, timestamp=1_000 + 5 * i))
            stamps.extend(1_000 + 5 * i + j for j in range(n))
        for t in range(990, max(stamps) + 3):
            want = next((o for o, s in enumerate(stamps) if s >= t), None)
            assert log.offset_for_timestamp(t) == want, t
            assert log.record_for_timestamp(t) == (None if want is None else (want, stamps[want])), t


def test_bad_batches_are_refused_and_nothing_is_written(tmp_path):
    with PartitionLog.open(str(tmp_path / "t-0"), LogConfig(max_message_bytes=200)) as log:
        good = batch_of([b"a"])
        bad = bytearray(batch_of([b"b"]))
        bad[-1] ^= 1
        with pytest.raises(CorruptBatchError):
            log.append(good + bytes(bad))
        with pytest.raises(InvalidBatchError):
            log.append(good + b"\x00" * 5)
        with pytest.raises(InvalidBatchError):
            log.append(b"")
        with pytest.raises(RecordTooLargeError):
            log.append(batch_of([b"z" * 300]))
        assert log.log_end_offset == 0 and log.size_bytes == 0
        info = log.append(good + good)
        assert (info.base_offset, info.last_offset) == (0, 1)


def test_append_writes_offsets_in_place_into_a_bytearray(tmp_path):
    with PartitionLog.open(str(tmp_path / "t-0")) as log:
        log.append(batch_of([b"a", b"b"]))
        buf = bytearray(batch_of([b"c"]))
        log.append(buf)
        assert int.from_bytes(buf[:8], "big") == 2


def test_flush_policy_by_messages_and_durable_offset(tmp_path):
    with PartitionLog.open(str(tmp_path / "t-0"), LogConfig(flush_messages=5)) as log:
        log.append(batch_of([b"a"] * 3))
        assert log.flushed_offset == 0 and not log.is_flushed(0)
        log.append(batch_of([b"a"] * 3))
        assert log.flushed_offset == 6 and log.is_flushed(5) and not log.is_flushed(6)
        log.append(batch_of([b"a"]))
        assert log.flush() == 7 and log.is_flushed(6)


def test_flush_ms_runs_from_tick(tmp_path):
    with PartitionLog.open(str(tmp_path / "t-0"), LogConfig(flush_ms=100)) as log:
        log.append(batch_of([b"a"]), now_ms=0)
        log.flush(now_ms=0)
        log.append(batch_of([b"a"]), now_ms=50)
        log.tick(now_ms=60)
        assert log.flushed_offset == 1
        log.tick(now_ms=150)
        assert log.flushed_offset == 2


def test_segment_ms_rolls_an_old_segment(tmp_path):
    with PartitionLog.open(str(tmp_path / "t-0"), LogConfig(segment_ms=1000)) as log:
        log.append(batch_of([b"a"]), now_ms=0)
        log.active_segment.created_ms = 0
        log.append(batch_of([b"a"]), now_ms=500)
        assert len(log.segments) == 1
        log.append(batch_of([b"a"]), now_ms=1000)
        assert [s.base_offset for s in log.segments] == [0, 2]


def test_closed_index_files_are_trimmed_and_reopen_clean(tmp_path, caplog):
    d = str(tmp_path / "t-0")
    with PartitionLog.open(d, SMALL) as log:
        expected = fill(log)
    for name in os.listdir(d):
        if name.endswith(".index"):
            assert os.path.getsize(os.path.join(d, name)) % 8 == 0
            assert os.path.getsize(os.path.join(d, name)) < SMALL.segment_index_bytes
    caplog.set_level("INFO", logger="minilog.storage")
    with PartitionLog.open(d, SMALL) as log:
        assert "after a clean shutdown" in caplog.text and "recovered 0 segment(s)" in caplog.text
        assert [r[3] for r in decode_batches(b"".join(
            log.read_bytes(s.base_offset, 10**6) for s in log.segments if s.size))] == expected
        log.append(batch_of([b"after"]))
        assert decode_batches(log.read_bytes(len(expected)))[0][3] == b"after"


def test_reads_at_recently_appended_batches_find_what_a_scan_of_the_file_finds(tmp_path):
    """`LogSegment` remembers where its most recent batches start (`_recent`, so a consumer
    that keeps up skips the header scan); a read through it must equal a read by a log opened
    afresh from the files (which has only the index and the scan), at every offset, across the
    point where the memory is cleared and across segment rolls."""
    d = str(tmp_path / "t-0")
    config = LogConfig(segment_bytes=16 * 1024, index_interval_bytes=4096)
    with PartitionLog.open(d, config) as live:
        for i in range(700):   # more than the 256 remembered: the memory is cleared and refilled
            live.append(batch_of([b"v%d-%d" % (i, j) for j in range(1 + i % 3)]))
        end = live.log_end_offset
        assert len(live.segments) > 1
        remembered = [o for s in live.segments for o in range(s.base_offset, s.next_offset) if o in s._recent]
        assert len(remembered) > 100   # the live log does answer from memory here
        seen_live = [(s.position, s.length, s.read()) for s in (live.read(o, 200) for o in range(end))]
        live.flush()
    with PartitionLog.open(d, config) as reopened:
        assert all(not s._recent for s in reopened.segments)
        assert [(s.position, s.length, s.read()) for s in (reopened.read(o, 200) for o in range(end))] == seen_live
    assert all(decode_batches(data)[0][0] <= o < decode_batches(data)[-1][0] + 1 for o, (_, _, data) in enumerate(seen_live))


def test_index_pages_reach_the_file_through_write_one_page_ahead_of_the_entries(tmp_path):
    """`IndexFile._give_pages`: each page of an index file is given to the file by a pwrite
    before the first entry is stored into it through the map (a first store that allocates a
    page of a sparse file took milliseconds on the event loop); the zeros written change no
    entry, so the log reads back the same after a reopen."""
    d = str(tmp_path / "t-0")
    config = LogConfig(index_interval_bytes=64)
    page_blocks = mmap.PAGESIZE // 512

    def blocks(index):
        return os.stat(index.path).st_blocks

    with PartitionLog.open(d, config) as log:
        index = log.active_segment.index
        assert index.entries == 0 and blocks(index) == 0   # a fresh file is all holes
        values = []
        while index.entries < 1:
            values.append(b"%d" % len(values) + b"x" * 80)
            log.append(batch_of([values[-1]]))
        assert blocks(index) >= 2 * page_blocks   # the entry's page and the next one
        per_page = mmap.PAGESIZE // 8
        while index.entries <= per_page:   # the first entry on the second page
            values.append(b"%d" % len(values) + b"x" * 80)
            log.append(batch_of([values[-1]]))
        assert blocks(index) >= 3 * page_blocks
        log.flush()
    with PartitionLog.open(d, config) as log:
        assert log.active_segment.index.entries == per_page + 1
        assert [r[3] for r in decode_batches(log.read_bytes(0, 10**7))] == values
