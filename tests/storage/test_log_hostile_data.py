"""Data an older broker stored without checking record bodies: one bad log never stops the others."""

import errno
import os
import resource
import shutil
import struct

import msgpack
import pytest

from clients.record_batch import pack_batch
from log_storage_helpers import append_unchecked, batch_of
from minilog.storage import LogManager

from test_log_cleaner import fill, read_all


def map_key_batch(ts=1_000) -> bytes:
    return pack_batch(msgpack.packb([[0, 0, {"k": 1}, b"odd", None]], use_bin_type=True), 1, ts, ts)


def test_a_map_key_in_a_compacted_topic_leaves_retention_and_other_compaction_running(tmp_path, caplog):
    caplog.set_level("WARNING", logger="minilog.storage")
    with LogManager(str(tmp_path)) as logs:
        table = logs.create_log("table", 0, {"cleanup.policy": "compact", "segment.bytes": 300,
                                             "retention.ms": -1})
        fill(table, [[(b"k%d" % (i % 2), b"v%d" % i * 20)] for i in range(10)])
        odd_offset = append_unchecked(table, map_key_batch())
        fill(table, [[(b"k%d" % (i % 2), b"w%d" % i * 20)] for i in range(30)])
        other = logs.create_log("other", 0, {"cleanup.policy": "compact", "segment.bytes": 300,
                                             "retention.ms": -1})
        fill(other, [[(b"k%d" % (i % 2), b"v%d" % i * 20)] for i in range(40)])
        old = logs.create_log("old", 0, {"segment.bytes": 200, "retention.ms": 1_000})
        for i in range(10):
            old.append(batch_of([b"x" * 50], timestamp=1_000 + i))
        assert len(old.segments) > 2
        other_size, table_size = other.size_bytes, table.size_bytes

        logs.tick(now_ms=10**9)
        logs.tick(now_ms=10**9 + 1_000)

        assert len(old.segments) == 1  # retention ran for the topic after the bad one
        assert other.size_bytes < other_size / 2  # and compaction for the other compacted topic
        assert table.size_bytes < table_size / 2  # the bad topic's other segments were compacted too
        kept = read_all(table)
        assert (odd_offset, {"k": 1}, b"odd") in [(o, k, v) for o, k, v in kept]
        # Segments without the odd record were compacted: only the last value of each key survives there.
        values = {k: v for _, k, v in kept if isinstance(k, bytes)}
        assert values == {b"k0": b"w28" * 20, b"k1": b"w29" * 20}
        assert caplog.text.count("not bytes") == 1


def test_running_out_of_file_descriptors_mid_create_leaves_no_half_topic(tmp_path):
    logs = LogManager(str(tmp_path))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 20, hard))  # room for about six partitions
    try:
        with pytest.raises(OSError) as failed:
            logs.create_topic("wide", 20, {"retention.ms": -1})
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert failed.value.errno == errno.EMFILE
    assert len(os.listdir("/proc/self/fd")) <= in_use + 1  # nothing leaked
    assert "wide" not in logs.topics()
    assert not [n for n in os.listdir(tmp_path) if n.startswith("wide")]
    assert os.listdir(tmp_path / "topic-configs") == []
    logs.create_topic("wide", 20)  # the same request works once descriptors are there
    assert logs.topics()["wide"] == list(range(20))
    logs.close()
    with LogManager(str(tmp_path)) as again:
        assert again.topics()["wide"] == list(range(20))


def test_batches_claiming_2_31_records_on_disk_never_stop_a_restart(tmp_path):
    """An older broker stored them unchecked; their offsets overflow a segment's u32 index
    (struct.error in recovery, exit 1, before). The log opens, keeps what it can, goes on."""
    from minilog.storage import LogConfig, PartitionLog
    cfg = LogConfig(index_interval_bytes=64)
    log = PartitionLog.open(str(tmp_path / "t-0"), cfg)
    log.append(batch_of([b"first"]))
    liar = pack_batch(msgpack.packb([[0, 0, None, b"x" * 100, None]], use_bin_type=True), 2**31 - 1, 1_000, 1_000)
    for _ in range(5):
        try:
            append_unchecked(log, liar)
        except struct.error:  # what the older broker's produce met (INTERNAL_ERROR); the bytes were written
            pass
    crashed = tmp_path / "crash-0"
    shutil.copytree(log.directory, crashed)  # as after kill -9: no clean-shutdown marker
    log.close()
    with PartitionLog.open(str(crashed), cfg) as reopened:
        assert reopened.read_bytes(0)
        end = reopened.log_end_offset
        assert reopened.append(batch_of([b"after"])).base_offset == end


def test_running_out_of_file_descriptors_while_adding_partitions_adds_none(tmp_path):
    logs = LogManager(str(tmp_path))
    logs.create_topic("grow", 2, {"retention.ms": 60_000})
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd"))
    build = logs.reserve_partitions("grow", 22)
    assert logs.is_being_created("grow")
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 20, hard))  # room for about six partitions
    try:
        with pytest.raises(OSError):
            logs.build_topic(build)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    logs.abandon_topic(build)
    assert len(os.listdir("/proc/self/fd")) <= in_use + 1  # nothing leaked
    assert logs.topics()["grow"] == [0, 1] and not logs.is_being_created("grow")
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith("grow")) == ["grow-0", "grow-1"]
    assert logs.overrides_for("grow") == {"retention.ms": 60_000}   # the topic keeps its config file
    build = logs.reserve_partitions("grow", 22)
    logs.build_topic(build)
    assert [log.config.retention_ms for log in logs.adopt_topic(build)] == [60_000] * 20
    logs.close()
    with LogManager(str(tmp_path)) as again:
        assert again.topics()["grow"] == list(range(22))
        assert again.overrides_for("grow") == {"retention.ms": 60_000}
