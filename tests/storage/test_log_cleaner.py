"""Log compaction (cleaner.py): the last record per key survives, offsets are kept (with gaps), crashes are safe."""

import os
import shutil

from hypothesis import given
from hypothesis import strategies as st

from clients.record_batch import build_batch, decode_batches
from log_storage_helpers import examples
from minilog.storage import LogConfig, LogManager, PartitionLog
from minilog.storage.cleaner import CLEANER_DIR, clean, clean_if_dirty, dirty_ratio

NOW = 10**9


def config(delete_retention_ms=NOW, **kw):
    return LogConfig(segment_bytes=300, index_interval_bytes=64, segment_index_bytes=4096, cleanup_policy="compact",
                     delete_retention_ms=delete_retention_ms, retention_ms=None, **kw)


def read_all(log, start=None):
    """(offset, key, value) of every record from ``start`` (the log start) to the end."""
    out = []
    offset = log.log_start_offset if start is None else start
    while offset < log.log_end_offset:
        records = [r for r in decode_batches(log.read_bytes(offset, 1 << 20)) if r[0] >= offset]
        if not records:
            break
        out.extend((r[0], r[2], r[3]) for r in records)
        offset = records[-1][0] + 1
    return out


def fill(log, batches):
    """Append ``batches`` of (key, value); returns every record as (offset, key, value)."""
    written = []
    for i, batch in enumerate(batches):
        info = log.append(build_batch([(k, v, 1_000 + i, None) for k, v in batch]))
        written.extend((info.base_offset + j, k, v) for j, (k, v) in enumerate(batch))
    return written


def expected_after_clean(written, active_base, drop_tombstones):
    sealed = [r for r in written if r[0] < active_base]
    last = {}
    for r in sealed:
        last[r[1]] = r[0]
    kept = [r for r in sealed if last[r[1]] == r[0] and not (drop_tombstones and r[2] is None)]
    return kept + [r for r in written if r[0] >= active_base]


record = st.tuples(st.sampled_from([b"a", b"b", b"c", b"d", b"e"]),
                   st.one_of(st.none(), st.binary(min_size=1, max_size=30)))


@examples(40)
@given(batches=st.lists(st.lists(record, min_size=1, max_size=6), min_size=1, max_size=40),
       drop_tombstones=st.booleans(), clean_after=st.none() | st.integers(0, 40))
def test_compaction_keeps_exactly_the_last_record_per_key_at_its_offset(tmp_path_factory, batches, drop_tombstones,
                                                                         clean_after):
    d = str(tmp_path_factory.mktemp("c") / "t-0")
    cfg = config(delete_retention_ms=0 if drop_tombstones else NOW)
    log = PartitionLog.open(d, cfg)
    if clean_after is None:
        written = fill(log, batches)
    else:  # an earlier clean, then more appends: the final clean must give the same result
        written = fill(log, batches[:clean_after])
        clean(log, NOW)
        written += fill(log, batches[clean_after:])
    active_base = log.active_segment.base_offset
    end = log.log_end_offset
    clean(log, NOW)
    want = expected_after_clean(written, active_base, drop_tombstones)
    got = read_all(log)
    assert got == want
    offsets = [r[0] for r in got]
    assert offsets == sorted(set(offsets))
    assert log.log_end_offset == end and log.log_start_offset == 0
    for start in range(0, end, 3):  # a fetch from inside a gap starts at the next kept record
        assert read_all(log, start) == [r for r in want if r[0] >= start]
    again = clean(log, NOW)  # idempotent: nothing left to drop, so no file is touched
    assert (again.segments_rewritten, again.segments_deleted, again.records_read) == (0, 0, 0)
    assert read_all(log) == want
    # Both a clean restart and crash recovery (which validates every batch) see the same log.
    crashed = d + "-crash"
    shutil.copytree(d, crashed)
    log.close()
    for path in (d, crashed):
        with PartitionLog.open(path, cfg) as reopened:
            assert read_all(reopened) == want
            assert reopened.append(build_batch([(b"z", b"after", 5, None)])).base_offset == end


def test_dirty_ratio_decides_when_to_clean(tmp_path):
    log = PartitionLog.open(str(tmp_path / "t-0"), config(min_cleanable_dirty_ratio=0.5))
    fill(log, [[(b"k", b"v%d" % i * 20)] for i in range(30)])
    assert dirty_ratio(log) == 1.0
    stats = clean_if_dirty(log, NOW)
    assert stats.records_kept == 1 and stats.segments_deleted > 0
    assert dirty_ratio(log) == 0.0 and clean_if_dirty(log, NOW) is None
    before = len(log.segments)
    fill(log, [[(b"k", b"w%d" % i * 20)] for i in range(4)])
    assert len(log.segments) > before and 0 < dirty_ratio(log) < 1
    log.close()


def test_delete_policy_logs_are_never_cleaned(tmp_path):
    log = PartitionLog.open(str(tmp_path / "t-0"), LogConfig(segment_bytes=300, retention_ms=None))
    fill(log, [[(b"k", b"v%d" % i * 20)] for i in range(30)])
    assert clean_if_dirty(log, NOW) is None
    log.close()


def test_crash_before_the_swap_keeps_the_old_segment_and_removes_the_scratch(tmp_path, monkeypatch):
    from minilog.storage import cleaner

    d = str(tmp_path / "t-0")
    snapshot = str(tmp_path / "at-crash")
    log = PartitionLog.open(d, config())
    written = fill(log, [[(b"k%d" % (i % 3), b"v%d" % i * 20)] for i in range(30)])
    active_base = log.active_segment.base_offset

    def power_cut(directory, scratch, base_offset):
        shutil.copytree(d, snapshot)  # the new segment is complete in the scratch directory only
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(cleaner, "_swap_in", power_cut)
    try:
        clean(log, NOW)
    except KeyboardInterrupt:
        pass
    monkeypatch.undo()
    log.close()
    assert os.listdir(os.path.join(snapshot, CLEANER_DIR))
    with PartitionLog.open(snapshot, config()) as reopened:
        got = read_all(reopened)
        # Segments dropped whole before the crash are gone; every other record is the original.
        assert set(got) <= set(written) and [r[0] for r in got] == sorted(r[0] for r in got)
        assert set(expected_after_clean(written, active_base, False)) <= set(got)
        assert not os.path.exists(os.path.join(snapshot, CLEANER_DIR))


def test_crash_after_the_log_rename_rebuilds_the_missing_indexes(tmp_path):
    d = str(tmp_path / "t-0")
    log = PartitionLog.open(d, config())
    written = fill(log, [[(b"k%d" % (i % 3), b"v%d" % i * 20)] for i in range(30)])
    active_base = log.active_segment.base_offset
    clean(log, NOW)
    want = read_all(log)
    assert want == expected_after_clean(written, active_base, False)
    crashed = str(tmp_path / "crash")
    shutil.copytree(d, crashed)
    log.close()
    # The state between steps (c) and (d): new .log files, their indexes not yet renamed in.
    for name in os.listdir(crashed):
        if name.endswith((".index", ".timeindex")) and not name.startswith("%020d" % active_base):
            os.unlink(os.path.join(crashed, name))
    with PartitionLog.open(crashed, config()) as reopened:
        assert read_all(reopened) == want


def test_log_manager_tick_compacts_compacted_topics(tmp_path):
    with LogManager(str(tmp_path)) as logs:
        log = logs.create_log("table", 0, {"cleanup.policy": "compact", "segment.bytes": 300,
                                           "retention.ms": -1})
        fill(log, [[(b"k%d" % (i % 2), b"v%d" % i * 20)] for i in range(40)])
        size = log.size_bytes
        logs.tick()
        assert log.size_bytes < size / 2
        values = {k: v for _, k, v in read_all(log)}
        assert values == {b"k0": b"v38" * 20, b"k1": b"v39" * 20}


def test_compaction_settings_use_kafka_names_and_ranges():
    import pytest

    from minilog.storage import InvalidConfigError
    cfg = LogConfig.from_dict({"cleanup.policy": "delete,compact", "min.cleanable.dirty.ratio": 0.25,
                               "delete.retention.ms": 5})
    assert cfg.compacts and cfg.deletes and cfg.min_cleanable_dirty_ratio == 0.25 and cfg.delete_retention_ms == 5
    assert LogConfig.from_dict(cfg.to_dict()) == cfg
    assert LogConfig().min_cleanable_dirty_ratio == 0.5 and LogConfig().delete_retention_ms == 86_400_000
    for bad in ({"min.cleanable.dirty.ratio": 1.5}, {"min.cleanable.dirty.ratio": "half"},
                {"delete.retention.ms": -5}):
        with pytest.raises(InvalidConfigError):
            LogConfig.from_dict(bad)
