import os
import shutil

import pytest

from clients.record_batch import decode_batches
from log_storage_helpers import batch_of
from minilog.storage import LogConfig, OffsetLostError, PartitionLog

CFG = LogConfig(segment_bytes=1024, index_interval_bytes=64, segment_index_bytes=4096)


def records(log):
    """Every value from the log start to the end, stepping over ranges recovery recorded as lost."""
    out = []
    offset = log.log_start_offset
    while offset < log.log_end_offset:
        try:
            batch = decode_batches(log.read_bytes(offset, 1 << 20))
        except OffsetLostError as lost:
            offset = lost.end_offset
            continue
        out.extend(r[3] for r in batch if r[0] >= offset)
        offset = batch[-1][0] + 1
    return out


def crash_copy(log, dest):
    """What a power cut would leave if the page cache survived: the files as they are now, no clean close."""
    shutil.copytree(log.directory, dest)
    return str(dest)


def build(tmp_path, batches=40, flush=True):
    log = PartitionLog.open(str(tmp_path / "orig-0"), CFG)
    values = []
    for i in range(batches):
        vs = [b"v%03d-%d" % (i, j) for j in range(1 + i % 3)]
        log.append(batch_of(vs, timestamp=100 + i))
        values.extend(vs)
    if flush:
        log.flush()
    return log, values


def segment_files(d, suffix):
    return sorted(os.path.join(d, n) for n in os.listdir(d) if n.endswith(suffix))


def test_truncated_tail_is_cut_and_logged(tmp_path, caplog):
    log, values = build(tmp_path, flush=False)
    log.flush()
    flushed = log.log_end_offset
    extra = [b"unflushed-%d" % i for i in range(3)]
    log.append(batch_of(extra))
    d = crash_copy(log, tmp_path / "crash-0")
    log.close()
    last = segment_files(d, ".log")[-1]
    size = os.path.getsize(last)
    os.truncate(last, size - 5)  # tear the unflushed batch
    caplog.set_level("INFO", logger="minilog.storage")
    with PartitionLog.open(d, CFG) as recovered:
        assert recovered.log_end_offset == flushed
        assert records(recovered) == values
        assert "truncated" in caplog.text and "unclean shutdown" in caplog.text
        assert f"log end offset {flushed}" in caplog.text
        assert "truncated %d bytes" % (size - 5 - os.path.getsize(last)) in caplog.text
        info = recovered.append(batch_of([b"next"]))
        assert info.base_offset == flushed


def test_crash_without_damage_keeps_unflushed_but_complete_batches(tmp_path):
    log, values = build(tmp_path, flush=False)
    d = crash_copy(log, tmp_path / "crash-0")
    log.close()
    with PartitionLog.open(d, CFG) as recovered:
        assert records(recovered) == values
        assert recovered.flushed_offset == recovered.log_end_offset


def test_corrupt_batch_in_an_earlier_segment_is_taken_out_and_everything_after_kept(tmp_path, caplog):
    log, values = build(tmp_path, flush=False)  # nothing flushed: recovery scans every segment
    d = crash_copy(log, tmp_path / "crash-0")
    end = log.log_end_offset
    victim_base = log.segments[1].base_offset
    log.close()
    logs = segment_files(d, ".log")
    assert len(logs) >= 3
    victim = logs[1]
    with open(victim, "r+b") as f:  # the second batch of the second segment, in its records
        f.seek(60)
        byte = f.read(1)
        f.seek(60)
        f.write(bytes([byte[0] ^ 0xFF]))
    caplog.set_level("WARNING", logger="minilog.storage")
    with PartitionLog.open(d, CFG) as recovered:
        (first, lost_end), = recovered.lost_ranges
        assert first > victim_base
        kept = records(recovered)
        assert kept == values[:first] + values[lost_end:]
        assert recovered.log_end_offset == end  # no offset is handed out twice
        assert len(recovered.segments) == len(logs)
        with pytest.raises(OffsetLostError):
            recovered.read(first)
        assert recovered.append(batch_of([b"new"])).base_offset == end
        assert "are lost" in caplog.text and "ERROR" in caplog.text
        assert os.listdir(os.path.join(d, "quarantine"))  # the damaged bytes are kept for inspection
    with PartitionLog.open(d, CFG) as again:  # unclean again: the recorded gap is not taken for damage
        assert again.lost_ranges == [(first, lost_end)]
        assert records(again) == kept + [b"new"]


@pytest.mark.parametrize("damage", ["missing", "garbage", "odd_size", "zeros"])
def test_missing_or_corrupt_index_is_rebuilt(tmp_path, damage, caplog):
    log, values = build(tmp_path)
    log.close()
    d = log.directory
    target = segment_files(d, ".index")[0]
    original = open(target, "rb").read()
    assert len(original) >= 16
    if damage == "missing":
        os.unlink(target)
        os.unlink(segment_files(d, ".timeindex")[0])
    elif damage == "garbage":
        with open(target, "wb") as f:
            f.write(bytes(reversed(original)))
    elif damage == "odd_size":
        with open(target, "ab") as f:
            f.write(b"xyz")
    else:
        with open(target, "wb") as f:
            f.write(original[:8] + b"\xff" * 8 + original[16:])
    caplog.set_level("INFO", logger="minilog.storage")
    with PartitionLog.open(d, CFG) as reopened:
        assert records(reopened) == values
        assert "rebuilding" in caplog.text
        assert reopened.offset_for_timestamp(100) == 0
    assert open(target, "rb").read() == original


def test_preallocated_index_from_unclean_shutdown_is_recomputed(tmp_path):
    log, values = build(tmp_path, flush=False)
    d = crash_copy(log, tmp_path / "crash-0")
    active_index = segment_files(d, ".index")[-1]
    assert os.path.getsize(active_index) == CFG.segment_index_bytes
    # The index reached the disk but the tail of the log did not.
    last = segment_files(d, ".log")[-1]
    os.truncate(last, 0)
    log.close()
    with PartitionLog.open(d, CFG) as recovered:
        kept = records(recovered)
        assert kept == values[:len(kept)]
        assert recovered.log_end_offset == recovered.active_segment.base_offset
        assert recovered.active_segment.index.entries == 0
        recovered.append(batch_of([b"x"] * 30))
        assert records(recovered)[-30:] == [b"x"] * 30


def test_empty_dir_and_leftover_zero_size_segment(tmp_path):
    d = str(tmp_path / "t-0")
    os.makedirs(d)
    with PartitionLog.open(d, CFG) as log:
        assert (log.log_start_offset, log.log_end_offset) == (0, 0)
        log.append(batch_of([b"a", b"b"]))
    open(os.path.join(d, "00000000000000000002.log"), "wb").close()
    open(os.path.join(d, "00000000000000000777.log"), "wb").close()
    with PartitionLog.open(d, CFG) as log:
        # A segment is created at the log end when it rolls: offsets 2..776 were handed out once
        # and are gone. The empty one in the middle holds nothing and goes.
        assert log.log_end_offset == 777 and records(log) == [b"a", b"b"]
        assert log.lost_ranges == [(2, 777)]
        log.append(batch_of([b"c"]))
        assert records(log) == [b"a", b"b", b"c"]
    assert not os.path.exists(os.path.join(d, "00000000000000000002.log"))


def test_leftovers_are_removed(tmp_path):
    log, values = build(tmp_path)
    log.close()
    d = log.directory
    for name in ("00000000000000000000.log.deleted", "recovery-point-offset-checkpoint.tmp",
                 "00000000000000099999.index"):
        open(os.path.join(d, name), "wb").close()
    with PartitionLog.open(d, CFG) as reopened:
        assert records(reopened) == values
    left = set(os.listdir(d))
    assert not {"00000000000000000000.log.deleted", "recovery-point-offset-checkpoint.tmp",
                "00000000000000099999.index"} & left


def test_corrupt_checkpoint_falls_back_to_full_recovery(tmp_path, caplog):
    log, values = build(tmp_path)
    d = crash_copy(log, tmp_path / "crash-0")
    log.close()
    with open(os.path.join(d, "recovery-point-offset-checkpoint"), "wb") as f:
        f.write(b"garbage")
    caplog.set_level("INFO", logger="minilog.storage")
    with PartitionLog.open(d, CFG) as recovered:
        assert records(recovered) == values
        assert "unreadable checkpoint" in caplog.text
