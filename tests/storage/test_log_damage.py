"""Damage to data already on disk (a flipped bit, a cut in the middle): recovery keeps every good
batch, records what it lost, and never hands an offset out twice. A torn tail is still cut."""

import io
import json
import logging
import os

import pytest

from log_storage_helpers import batch_of
from minilog.dump import main as dump_main
from minilog.storage import LogConfig, OffsetLostError, PartitionLog
from test_log_recovery import crash_copy, records, segment_files

CFG = LogConfig(segment_bytes=600, index_interval_bytes=64, segment_index_bytes=4096)


def flushed_log(tmp_path, batches=60):
    """A log of ``batches`` 3-record batches over about ten segments, all fsynced, then crashed."""
    log = PartitionLog.open(str(tmp_path / "orig-0"), CFG)
    values, bases = [], []
    for i in range(batches):
        vs = [b"b%03d-%d" % (i, j) for j in range(3)]
        bases.append(log.append(batch_of(vs, timestamp=1_000 + i)).base_offset)
        values.extend(vs)
        log.flush()  # what acks=all does for every batch
    assert len(log.segments) >= 8
    d = crash_copy(log, tmp_path / "crash-0")  # as after kill -9: no clean-shutdown marker
    end = log.log_end_offset
    log.close()
    return d, values, end


def batch_positions(path):
    """(position, size) of each batch of a segment file, from the length fields."""
    raw = open(path, "rb").read()
    out, pos = [], 0
    while pos < len(raw):
        size = 12 + int.from_bytes(raw[pos + 8:pos + 12], "big")
        out.append((pos, size))
        pos += size
    return out


def flip_bit(path, position, bit=0x10):
    with open(path, "r+b") as f:
        f.seek(position)
        byte = f.read(1)[0]
        f.seek(position)
        f.write(bytes([byte ^ bit]))


@pytest.mark.parametrize("where", ["records", "length", "base_offset", "crc"])
def test_a_flipped_bit_in_the_oldest_segment_loses_one_batch_not_the_log(tmp_path, caplog, where):
    d, values, end = flushed_log(tmp_path)
    oldest = segment_files(d, ".log")[0]
    pos, size = batch_positions(oldest)[2]  # the third batch: offsets 6..8
    flip_bit(oldest, pos + {"records": size - 3, "length": 10, "base_offset": 7, "crc": 14}[where])
    caplog.set_level(logging.INFO, logger="minilog.storage")
    with PartitionLog.open(d, CFG) as log:
        assert log.lost_ranges == [(6, 9)]
        assert records(log) == values[:6] + values[9:]
        assert log.log_end_offset == end
        assert len(log.segments) == len(segment_files(d, ".log"))
        with pytest.raises(OffsetLostError, match="offsets 6..8 were lost"):
            log.read(7)
        assert log.read_bytes(3) and log.read(9) is not None
        assert log.append(batch_of([b"new"])).base_offset == end
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "offsets 6..8 are lost" in errors[0].getMessage()


def test_a_seven_byte_cut_in_the_middle_keeps_what_follows_and_reuses_no_offset(tmp_path):
    d, values, end = flushed_log(tmp_path)
    middle = segment_files(d, ".log")[3]
    base = int(os.path.basename(middle)[:20])
    pos, size = batch_positions(middle)[1]
    raw = open(middle, "rb").read()
    with open(middle, "wb") as f:
        f.write(raw[:pos + 20] + raw[pos + 27:])  # seven bytes gone from the second batch
    with PartitionLog.open(d, CFG) as log:
        assert log.lost_ranges == [(base + 3, base + 6)]
        assert records(log) == values[:base + 3] + values[base + 6:]
        assert log.log_end_offset == end
        assert log.append(batch_of([b"new"])).base_offset == end


def test_damage_in_the_last_batch_below_the_recovery_point_cuts_it_but_never_reuses_its_offsets(tmp_path):
    log = PartitionLog.open(str(tmp_path / "orig-0"), CFG)
    for i in range(5):
        log.append(batch_of([b"v%d" % i], timestamp=1_000))
    log.flush()
    log.write_recovery_checkpoint()  # offsets 0..4 are known durable
    d = crash_copy(log, tmp_path / "crash-0")
    log.close()
    last = segment_files(d, ".log")[-1]
    pos, size = batch_positions(last)[-1]
    flip_bit(last, pos + size - 2)
    with PartitionLog.open(d, CFG) as recovered:
        assert records(recovered) == [b"v0", b"v1", b"v2", b"v3"]
        assert recovered.lost_ranges == [(4, 5)]
        assert recovered.log_end_offset == 5
        assert recovered.append(batch_of([b"new"])).base_offset == 5


def test_an_unflushed_torn_tail_is_still_cut_without_a_gap(tmp_path):
    log = PartitionLog.open(str(tmp_path / "orig-0"), CFG)
    for i in range(5):
        log.append(batch_of([b"v%d" % i], timestamp=1_000))
    d = crash_copy(log, tmp_path / "crash-0")
    log.close()
    last = segment_files(d, ".log")[-1]
    os.truncate(last, os.path.getsize(last) - 4)
    with PartitionLog.open(d, CFG) as recovered:
        assert records(recovered) == [b"v0", b"v1", b"v2", b"v3"]
        assert recovered.lost_ranges == [] and recovered.log_end_offset == 4


def test_a_sealed_index_entry_pointing_to_a_wrong_position_is_found_at_the_first_read_and_rebuilt(tmp_path,
                                                                                                 caplog):
    log = PartitionLog.open(str(tmp_path / "t-0"), CFG)
    values = []
    for i in range(40):
        vs = [b"b%03d-%d" % (i, j) for j in range(3)]
        log.append(batch_of(vs, timestamp=1_000 + i))
        values.extend(vs)
    log.close()  # clean: the next open trusts the sealed indexes
    index = segment_files(log.directory, ".index")[0]
    raw = bytearray(open(index, "rb").read())
    entries = len(raw) // 8
    assert entries >= 3
    k = entries // 2
    offset_rel = int.from_bytes(raw[8 * k:8 * k + 4], "little")
    position = int.from_bytes(raw[8 * k + 4:8 * k + 8], "little")
    raw[8 * k + 4:8 * k + 8] = (position + 5).to_bytes(4, "little")  # still increasing, but wrong
    open(index, "wb").write(bytes(raw))
    caplog.set_level(logging.WARNING, logger="minilog.storage")
    with PartitionLog.open(log.directory, CFG) as reopened:
        assert records(reopened) == values  # reads across the bad entry return the right records
        assert reopened.read(offset_rel) is not None
        assert reopened.offset_for_timestamp(1_000) == 0
        assert caplog.text.count("rebuilding the indexes") == 1
    with open(index, "rb") as f:
        fixed = f.read()
    assert int.from_bytes(fixed[8 * k + 4:8 * k + 8], "little") == position



def test_damage_in_a_log_of_both_batch_formats_loses_one_batch_and_finds_the_kafka_ones_after_it(tmp_path):
    """Kafka clients' batches (magic 2 at byte 16) are found again after damage, as ours are."""
    from clients import kafka_batch
    log = PartitionLog.open(str(tmp_path / "mixed-0"), CFG)
    values = []
    for i in range(30):
        vs = [b"m%03d-%d" % (i, j) for j in range(3)]
        if i % 3:   # two Kafka batches for each of ours: resync must find Kafka ones right after the damage
            kafka = bytearray(kafka_batch.build_batch([(None, v, 1_000 + i, None) for v in vs]))
            kafka_batch.set_partition_leader_epoch(kafka, 0)
            log.append(kafka)
        else:
            log.append(batch_of(vs, timestamp=1_000 + i))
        values.extend(vs)
        log.flush()
    d = crash_copy(log, tmp_path / "crash-0")
    end = log.log_end_offset
    log.close()
    oldest = segment_files(d, ".log")[0]
    pos, size = batch_positions(oldest)[0]       # our batch at offsets 0..2, followed by Kafka batches
    flip_bit(oldest, pos + size - 3)
    with PartitionLog.open(d, CFG) as again:
        assert again.lost_ranges == [(0, 3)]
        assert records(again) == values[3:]
        assert again.log_end_offset == end


def test_minilog_dump_shows_the_ranges_recovery_took_out_and_where_they_were(tmp_path):
    d, values, end = flushed_log(tmp_path)
    oldest = segment_files(d, ".log")[0]
    pos, size = batch_positions(oldest)[2]   # offsets 6..8
    flip_bit(oldest, pos + size - 3)
    with PartitionLog.open(d, CFG) as log:
        assert log.lost_ranges == [(6, 9)]
    out = io.StringIO()
    assert dump_main([d], out=out) == 0, out.getvalue()   # repaired files are sound: no problem
    text = out.getvalue()
    assert "lost: offsets 6..8 (3): taken out as damaged at recovery" in text
    assert f"quarantined: quarantine/{os.path.basename(oldest)[:20]}-{pos}.bad ({size} damaged bytes" in text
    assert "gap: offsets 6..8 (3) are not in this segment: lost to damaged data (lost-offsets.json: 6..8)" in text

    out = io.StringIO()
    assert dump_main([d, "--json"], out=out) == 0
    doc = json.loads(out.getvalue())
    lost_file, = [f for f in doc["files"] if f["kind"] == "lost offsets"]
    assert lost_file["items"][0] == {"first_offset": 6, "last_offset": 8, "count": 3}
    first_segment = next(f for f in doc["files"] if f["file"] == oldest)
    assert first_segment["gaps"] == [{"first_offset": 6, "last_offset": 8, "lost": True}]
    assert sum(b["count"] for f in doc["files"] if f["kind"] == "segment" for b in f["items"]) == end - 3

    # Dumped alone, a segment reads the ranges from its directory; an unusable ranges file is a problem.
    out = io.StringIO()
    assert dump_main([oldest], out=out) == 0 and "lost to damaged data" in out.getvalue()
    with open(os.path.join(d, "lost-offsets.json"), "w") as f:
        f.write('{"version": 0, "lost": [[9, 6]]}')
    out = io.StringIO()
    assert dump_main([d], out=out) == 1
    assert "lost-offsets.json is unreadable" in out.getvalue()
    assert "not in lost-offsets.json: records removed by compaction" in out.getvalue()
