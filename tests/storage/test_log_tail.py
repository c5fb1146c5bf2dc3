"""The log's in-memory tail (`PartitionLog._tail`): the fetch a small append wakes (a read from
that append's first offset) is answered from memory, with exactly the bytes, position, length and
next offset the file gives, and never from a tail that a roll, retention, compaction's swap, a
close or a failed write made stale."""

import os

from hypothesis import given
from hypothesis import strategies as st

from clients.record_batch import build_batch, decode_batches
from log_storage_helpers import batch_of, examples
from minilog.storage import LogConfig, PartitionLog
from minilog.storage.log import TAIL_MAX_BYTES

SMALL = LogConfig(segment_bytes=8 * 1024, index_interval_bytes=256, segment_index_bytes=4096)


def from_file(log, offset, max_bytes):
    """The read as the segments answer it, the tail set aside."""
    tail, log._tail = log._tail, None
    try:
        return log.read(offset, max_bytes)
    finally:
        log._tail = tail


def check_reads(log, offsets):
    for offset in offsets:
        for max_bytes in (1, 200, TAIL_MAX_BYTES, 1 << 20):
            got, want = log.read(offset, max_bytes), from_file(log, offset, max_bytes)
            if want is None:
                assert got is None
                continue
            assert (got.fd, got.position, got.length, got.next_offset) == \
                   (want.fd, want.position, want.length, want.next_offset), (offset, max_bytes)
            assert got.read() == os.pread(want.fd, want.length, want.position)


@given(st.lists(st.tuples(st.integers(1, 3), st.sampled_from([10, 100, 3000, TAIL_MAX_BYTES])), min_size=1,
                max_size=40))
@examples(25)
def test_every_read_from_the_tail_is_what_the_file_holds(tmp_path_factory, appends):
    """Appends of one or more batches, small ones and ones over the tail's size, with rolls
    (8 KiB segments): every batch boundary read with every limit equals the file's answer."""
    with PartitionLog.open(str(tmp_path_factory.mktemp("t") / "t-0"), SMALL) as log:
        bases = []
        for n, size in appends:
            data = b"".join(batch_of([b"x" * size]) for _ in range(n))
            info = log.append(data)
            bases.append(info.base_offset)
            check_reads(log, bases[-6:] + [log.log_end_offset])
        check_reads(log, bases)


def test_the_fetch_a_small_append_wakes_is_read_from_memory(tmp_path):
    with PartitionLog.open(str(tmp_path / "t-0"), SMALL) as log:
        log.append(batch_of([b"a"]))
        second = log.append(batch_of([b"b", b"c"])).base_offset
        found = log.read(second)
        assert found.data is not None and found.next_offset == 3
        assert log.read(0).data is None      # a reader further behind reads the file
        assert [r[3] for r in decode_batches(found.read())] == [b"b", b"c"]
        big = log.append(build_batch([(None, b"z" * TAIL_MAX_BYTES, 1_000, None)])).base_offset
        assert log.read(big).data is None   # over the tail's size: read from the file
        assert log.read(second).data is None


def test_a_roll_retention_and_close_drop_the_tail(tmp_path):
    config = LogConfig(segment_bytes=8 * 1024, retention_bytes=1, file_delete_delay_ms=0)
    path = str(tmp_path / "t-0")
    log = PartitionLog.open(path, config)
    log.append(batch_of([b"old"]))
    log.roll()
    assert log._tail is None
    base = log.append(batch_of([b"new"])).base_offset
    assert log.read(base).data is not None
    assert log.delete_oldest_segments(1, "test") == 1
    assert log._tail is None
    assert [r[3] for r in decode_batches(log.read(base).read())] == [b"new"]
    log.close()
    assert log._tail is None
    with PartitionLog.open(path, config) as again:
        assert [r[3] for r in decode_batches(again.read(base).read())] == [b"new"]
        assert again.read(base).data is None   # nothing appended since the open


def test_a_failed_append_drops_the_tail(tmp_path, monkeypatch):
    with PartitionLog.open(str(tmp_path / "t-0"), SMALL) as log:
        base = log.append(batch_of([b"kept"])).base_offset

        def full(*args):
            raise OSError(28, "No space left on device")
        monkeypatch.setattr(os, "write", full)
        try:
            log.append(batch_of([b"lost"]))
        except OSError:
            pass
        monkeypatch.undo()
        assert log._tail is None
        assert [r[3] for r in decode_batches(log.read(base).read())] == [b"kept"]
        after = log.append(batch_of([b"next"])).base_offset
        assert after == base + 1
        assert [r[3] for r in decode_batches(log.read(base).read())] == [b"kept", b"next"]
