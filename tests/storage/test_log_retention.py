import os

import pytest

from clients.record_batch import decode_batches
from log_storage_helpers import batch_of
from minilog.storage import LogConfig, LogManager, OffsetOutOfRangeError, PartitionLog, apply_retention


def filled(path, cfg, batches=30, t0=1_000):
    log = PartitionLog.open(path, cfg)
    for i in range(batches):
        log.append(batch_of([b"%04d" % i * 10] * 2, timestamp=t0 + 100 * i))
    return log


def test_retention_by_size_moves_log_start_and_reads_below_raise(tmp_path):
    cfg = LogConfig(segment_bytes=512, index_interval_bytes=64, retention_bytes=1200, retention_ms=None)
    log = filled(str(tmp_path / "t-0"), cfg)
    before = log.segments
    assert len(before) > 4
    deleted = apply_retention(log, now_ms=10**12)
    assert deleted > 0
    # Kafka's rule: drop a whole segment only if the log stays at or over retention.bytes without it.
    assert log.size_bytes - log.segments[0].size < 1200 <= log.size_bytes
    assert sum(s.size for s in before) - sum(s.size for s in before[:deleted]) == log.size_bytes
    start = log.log_start_offset
    assert start == before[deleted].base_offset > 0
    with pytest.raises(OffsetOutOfRangeError):
        log.read(start - 1)
    assert decode_batches(log.read_bytes(start))[0][0] == start
    assert apply_retention(log, now_ms=10**12) == 0
    log.close()
    with PartitionLog.open(str(tmp_path / "t-0"), cfg) as reopened:
        assert reopened.log_start_offset == start
        with pytest.raises(OffsetOutOfRangeError):
            reopened.read(start - 1)


def test_retention_by_time_keeps_segments_with_recent_records(tmp_path):
    cfg = LogConfig(segment_bytes=512, index_interval_bytes=64, retention_ms=1_000)
    log = filled(str(tmp_path / "t-0"), cfg)
    segs = log.segments
    now = segs[2].max_timestamp + 1_001  # segments 0..2 are older than retention.ms
    assert apply_retention(log, now_ms=now) == 3
    assert log.log_start_offset == segs[3].base_offset
    with pytest.raises(OffsetOutOfRangeError):
        log.read(segs[3].base_offset - 1)
    end = log.log_end_offset
    # Every record is old now, the active segment's too: it is rolled so that it can go as well.
    assert apply_retention(log, now_ms=10**15) == len(segs) - 3
    assert len(log.segments) == 1 and log.active_segment.size == 0
    assert log.log_start_offset == log.active_segment.base_offset == log.log_end_offset == end
    log.close()


def test_compact_only_topics_are_not_deleted(tmp_path):
    cfg = LogConfig(segment_bytes=512, retention_bytes=0, cleanup_policy="compact")
    with filled(str(tmp_path / "t-0"), cfg) as log:
        assert apply_retention(log, now_ms=10**15) == 0


def test_deleted_files_stay_readable_until_the_delay_passes(tmp_path):
    cfg = LogConfig(segment_bytes=512, retention_bytes=0, file_delete_delay_ms=1_000)
    log = filled(str(tmp_path / "t-0"), cfg)
    held = log.read(0)  # a slice a server is still sending
    expected = held.read()
    apply_retention(log, now_ms=5_000)
    assert any(n.endswith(".log.deleted") for n in os.listdir(log.directory))
    log.tick(now_ms=5_500)
    assert os.pread(held.fd, held.length, held.position) == expected
    log.tick(now_ms=6_000)
    assert not any(n.endswith(".deleted") for n in os.listdir(log.directory))
    log.close()


def test_log_manager_creates_reopens_ticks_and_deletes(tmp_path):
    data = str(tmp_path / "data")
    with LogManager(data, LogConfig(segment_bytes=512)) as mgr:
        log = mgr.create_log("orders.v1-eu", 0, {"retention.bytes": 600, "retention.ms": -1})
        mgr.create_log("orders.v1-eu", 1)
        mgr.create_log("other", 0)
        for i in range(30):
            log.append(batch_of([b"x" * 40]))
        assert log.config.retention_bytes == 600 and log.config.retention_ms is None
        assert mgr.tick() > 0 and log.log_start_offset > 0
        start = log.log_start_offset
        with pytest.raises(ValueError):
            mgr.create_log("../evil", 0)
    with LogManager(data, LogConfig(segment_bytes=512)) as mgr:
        assert mgr.topics() == {"orders.v1-eu": [0, 1], "other": [0]}
        log = mgr.get_log("orders.v1-eu", 0)
        assert log.log_start_offset == start and log.config.retention_bytes == 600
        assert mgr.delete_topic("orders.v1-eu") == 2
        with pytest.raises(KeyError):
            mgr.get_log("orders.v1-eu", 0)
    assert sorted(os.listdir(data)) == ["LOCK", "other-0", "topic-configs", "topics-being-created"]


def test_config_uses_kafka_names_and_rejects_nonsense():
    from minilog.storage import InvalidConfigError
    cfg = LogConfig.from_dict({"segment.bytes": 4096, "flush.messages": 10, "retention.ms": -1})
    assert cfg.segment_bytes == 4096 and cfg.flush_messages == 10 and cfg.retention_ms is None
    assert LogConfig().segment_bytes == 1 << 30 and LogConfig().index_interval_bytes == 4096
    assert LogConfig.from_dict(cfg.to_dict()) == cfg
    for bad in ({"segment.byte": 1}, {"segment.bytes": 0}, {"segment.bytes": 2**31}, {"cleanup.policy": "x"},
                {"retention.ms": "soon"}):
        with pytest.raises(InvalidConfigError):
            LogConfig.from_dict(bad)


def test_an_active_segment_older_than_retention_is_rolled_and_deleted(tmp_path):
    cfg = LogConfig(retention_ms=1_000, file_delete_delay_ms=0)
    log = PartitionLog.open(str(tmp_path / "t-0"), cfg)
    log.append(batch_of([b"a", b"b"], timestamp=10_000))
    log.append(batch_of([b"c"], timestamp=10_500))
    assert len(log.segments) == 1
    assert apply_retention(log, now_ms=11_500) == 0, "the newest record is not older than retention.ms yet"
    assert log.segments[0].size > 0 and log.log_start_offset == 0
    assert apply_retention(log, now_ms=11_501) == 1
    assert len(log.segments) == 1 and log.active_segment.size == 0
    assert (log.log_start_offset, log.log_end_offset) == (3, 3)
    assert log.read(3) is None
    with pytest.raises(OffsetOutOfRangeError):
        log.read(2)
    assert log.append(batch_of([b"d"], timestamp=20_000)).base_offset == 3
    assert decode_batches(log.read_bytes(3))[0][3] == b"d"
    log.close()
    with PartitionLog.open(str(tmp_path / "t-0"), cfg) as reopened:
        assert (reopened.log_start_offset, reopened.log_end_offset) == (3, 4)


def test_the_expired_active_segment_is_kept_without_the_delete_policy(tmp_path):
    cfg = LogConfig(retention_ms=1_000, cleanup_policy="compact")
    with PartitionLog.open(str(tmp_path / "t-0"), cfg) as log:
        log.append(batch_of([b"a"], timestamp=10_000))
        assert apply_retention(log, now_ms=10**12) == 0 and len(log.segments) == 1
