"""A write that fails midway (disk full) leaves the segment exactly as it was before the batch.

The OS failure is produced by swapping the ``os`` module seen by ``segment.py``
for one whose ``write`` writes half the buffer and then raises ENOSPC: the test
exercises our reaction to the failure, the file system underneath is real.
"""

import errno
import os

import pytest

from clients.record_batch import decode_batches
from log_storage_helpers import batch_of
from minilog.storage import LogConfig, PartitionLog, SegmentWriteError
from minilog.storage import segment as segment_module


class DiskFullAfterHalf:
    """Looks like ``os``; its next ``failures`` writes store half the bytes, then raise ENOSPC."""

    def __init__(self, failures=1):
        self.failures = failures

    def __getattr__(self, name):
        return getattr(os, name)

    def write(self, fd, data):
        if self.failures <= 0:
            return os.write(fd, data)
        self.failures -= 1
        os.write(fd, bytes(data[:len(data) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def all_values(log):
    return [r[3] for r in decode_batches(log.read_bytes(log.log_start_offset, 1 << 24))]


def test_failed_write_is_cut_off_and_the_next_batch_lands_right(tmp_path, monkeypatch):
    log = PartitionLog.open(str(tmp_path / "t-0"), LogConfig())
    log.append(batch_of([b"a", b"b"]))
    size_before = log.active_segment.size
    monkeypatch.setattr(segment_module, "os", DiskFullAfterHalf())
    with pytest.raises(SegmentWriteError) as err:
        log.append(batch_of([b"lost-%d" % i for i in range(50)]))
    monkeypatch.undo()
    assert err.value.errno == errno.ENOSPC and log.active_segment.log_path in str(err.value)
    assert isinstance(err.value, OSError)
    assert os.path.getsize(log.active_segment.log_path) == size_before
    assert log.log_end_offset == 2
    info = log.append(batch_of([b"c"]))
    assert info.base_offset == 2
    assert all_values(log) == [b"a", b"b", b"c"]
    log.close()
    # The file holds whole batches only: a clean reopen and a full recovery both see the same log.
    with PartitionLog.open(log.directory, LogConfig()) as reopened:
        assert all_values(reopened) == [b"a", b"b", b"c"]
    os.unlink(os.path.join(log.directory, ".clean-shutdown"))
    with PartitionLog.open(log.directory, LogConfig()) as recovered:
        assert all_values(recovered) == [b"a", b"b", b"c"]


def test_failed_first_write_of_a_segment_leaves_it_empty(tmp_path, monkeypatch):
    log = PartitionLog.open(str(tmp_path / "t-0"), LogConfig())
    monkeypatch.setattr(segment_module, "os", DiskFullAfterHalf())
    with pytest.raises(SegmentWriteError):
        log.append(batch_of([b"x"]))
    monkeypatch.undo()
    assert log.active_segment.size == 0 and log.active_segment.created_ms is None
    assert log.append(batch_of([b"y"])).base_offset == 0
    assert all_values(log) == [b"y"]
    log.close()


def test_a_failure_episode_is_logged_once_at_error_and_its_end_once(tmp_path, monkeypatch, caplog):
    caplog.set_level("INFO", logger="minilog.storage")
    log = PartitionLog.open(str(tmp_path / "t-0"), LogConfig())
    log.append(batch_of([b"a"]))
    monkeypatch.setattr(segment_module, "os", DiskFullAfterHalf(failures=3))
    for _ in range(3):
        with pytest.raises(SegmentWriteError):
            log.append(batch_of([b"x" * 100]))
    log.append(batch_of([b"b"]))  # the disk has room again
    monkeypatch.setattr(segment_module, "os", DiskFullAfterHalf(failures=2))
    for _ in range(2):
        with pytest.raises(SegmentWriteError):
            log.append(batch_of([b"y" * 100]))
    monkeypatch.undo()
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 2 and all("No space left on device" in e and "logged once" in e for e in errors)
    assert caplog.text.count("writes succeed again") == 1
    assert all_values(log) == [b"a", b"b"]
    log.close()
