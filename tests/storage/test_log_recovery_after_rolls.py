"""Crashes that follow segment rolls before any flush: the recovery point sits in an earlier segment.

Every segment from the one holding the recovery point onwards may have lost
pages (its log bytes, its sealed indexes, all of it). Recovery must keep every
complete batch of the prefix that survived and cut the rest, leaving a log whose
offsets are dense and that appends carry on from.
"""

import os

import pytest

from log_storage_helpers import batch_of
from minilog.storage import LogConfig, PartitionLog
from test_log_recovery import crash_copy, records, segment_files

CFG = LogConfig(segment_bytes=256, index_interval_bytes=64, segment_index_bytes=4096)


def build_rolled(tmp_path, flushed_batches=3, batches=30):
    """A log flushed and checkpointed after ``flushed_batches``, then rolled many times without a flush."""
    log = PartitionLog.open(str(tmp_path / "orig-0"), CFG)
    values = []
    for i in range(batches):
        vs = [b"r%03d-%d" % (i, j) for j in range(1 + i % 2)]
        log.append(batch_of(vs, timestamp=100 + i))
        values.extend(vs)
        if i + 1 == flushed_batches:
            log.flush()
            log.write_recovery_checkpoint()
    assert len(log.segments) >= 5
    assert log.flushed_offset < log.segments[2].base_offset  # the recovery point is in an early segment
    return log, values


def reopen_and_check(d, values, expect_all_but=None):
    with PartitionLog.open(d, CFG) as recovered:
        kept = records(recovered)
        assert kept == values[:len(kept)]
        if expect_all_but is not None:
            assert len(kept) == len(values) - expect_all_but
        assert recovered.log_end_offset == len(kept)
        bases = [s.base_offset for s in recovered.segments]
        assert bases == sorted(bases) and all(s.next_offset == n.base_offset
                                              for s, n in zip(recovered.segments, recovered.segments[1:]))
        assert recovered.append(batch_of([b"next"])).base_offset == len(kept)
        assert records(recovered) == kept + [b"next"]
    with PartitionLog.open(d, CFG) as again:  # the repaired log opens cleanly and the same
        assert records(again) == kept + [b"next"]
    return kept


@pytest.mark.parametrize("flushed_batches", [0, 3], ids=["never-flushed", "flushed-early"])
def test_torn_tail_after_rolls_is_cut_and_the_rest_kept(tmp_path, flushed_batches):
    log, values = build_rolled(tmp_path, flushed_batches)
    d = crash_copy(log, tmp_path / "crash-0")
    log.close()
    last = segment_files(d, ".log")[-1]
    last_count = 1 + (29 % 2)
    os.truncate(last, os.path.getsize(last) - 3)
    reopen_and_check(d, values, expect_all_but=last_count)


def test_crash_right_after_a_roll_keeps_everything(tmp_path):
    log, values = build_rolled(tmp_path)
    log.roll()
    d = crash_copy(log, tmp_path / "crash-0")
    log.close()
    assert os.path.getsize(segment_files(d, ".log")[-1]) == 0
    reopen_and_check(d, values, expect_all_but=0)


@pytest.mark.parametrize("flushed_batches", [0, 3], ids=["never-flushed", "flushed-early"])
@pytest.mark.parametrize("which", [2, -2])
def test_a_lost_middle_segment_becomes_a_recorded_gap_and_later_segments_are_kept(tmp_path, which,
                                                                                  flushed_batches):
    log, values = build_rolled(tmp_path, flushed_batches)
    d = crash_copy(log, tmp_path / "crash-0")
    lost_base, lost_end = log.segments[which].base_offset, log.segments[which + 1].base_offset
    end = log.log_end_offset
    log.close()
    os.truncate(segment_files(d, ".log")[which], 0)  # its pages never reached the disk
    with PartitionLog.open(d, CFG) as recovered:
        assert recovered.lost_ranges == [(lost_base, lost_end)]
        assert records(recovered) == values[:lost_base] + values[lost_end:]
        assert recovered.log_end_offset == end  # the later records keep their offsets
        assert recovered.append(batch_of([b"next"])).base_offset == end
    with PartitionLog.open(d, CFG) as again:
        assert again.lost_ranges == [(lost_base, lost_end)]
        assert records(again) == values[:lost_base] + values[lost_end:] + [b"next"]


def test_lost_index_pages_of_sealed_unflushed_segments_are_rebuilt(tmp_path):
    log, values = build_rolled(tmp_path)
    d = crash_copy(log, tmp_path / "crash-0")
    log.close()
    for path in segment_files(d, ".index")[1:-1] + segment_files(d, ".timeindex")[1:-1]:
        os.truncate(path, 0)
    reopen_and_check(d, values, expect_all_but=0)
