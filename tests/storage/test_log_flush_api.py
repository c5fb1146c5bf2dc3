"""The split flush API (prepare_flush / FlushPlan.sync / complete_flush) and the flush requester."""

import os

from log_storage_helpers import batch_of
from minilog.storage import LogConfig, LogManager, PartitionLog


def test_prepare_sync_complete_covers_exactly_what_was_appended_before_prepare(tmp_path):
    with PartitionLog.open(str(tmp_path / "t-0"), LogConfig(segment_bytes=200)) as log:
        for i in range(6):
            log.append(batch_of([b"x" * 40]))
        assert len(log.segments) > 2
        plan = log.prepare_flush()
        assert plan.end_offset == 6 and plan.files
        log.append(batch_of([b"after the plan"]))  # the owner keeps appending while the sync runs
        plan.sync()
        assert log.flushed_offset == 0  # nothing is durable until the owner says so
        assert log.complete_flush(plan.end_offset) == 6
        assert log.is_flushed(5) and not log.is_flushed(6)
        assert log.complete_flush(3) == 6  # a late, older plan never moves it back
        assert log.prepare_flush().end_offset == 7
        # Only what is past the flushed offset is synced again.
        assert log.prepare_flush().files == [log.active_segment.fd]


def test_flush_policy_hands_the_flush_to_the_requester_instead_of_syncing_inline(tmp_path):
    requested = []
    with PartitionLog.open(str(tmp_path / "t-0"), LogConfig(flush_messages=3, flush_ms=100)) as log:
        log.flush_requester = requested.append
        log.append(batch_of([b"a"] * 2), now_ms=0)
        assert requested == []
        log.append(batch_of([b"a"] * 2), now_ms=1)
        assert requested == [log] and log.flushed_offset == 0
        log.append(batch_of([b"a"]), now_ms=2)   # the clocks restarted when the flush was asked for
        assert requested == [log]
        log.tick(now_ms=50)
        assert requested == [log]
        log.tick(now_ms=150)                     # flush.ms is due: asked for again, still not inline
        assert requested == [log, log] and log.flushed_offset == 0


def test_log_manager_gives_the_requester_to_open_and_new_logs(tmp_path):
    with LogManager(str(tmp_path)) as logs:
        first = logs.create_log("a", 0)
        logs.set_flush_requester(print)
        assert first.flush_requester is print and logs.create_log("b", 0).flush_requester is print


# ---- page cache behind the log end (PartitionLog.drop_behind_bytes) ------------------------

MiB = 1 << 20


def _values_back(log) -> list[bytes]:
    from clients.record_batch import decode_batches
    values, offset = [], log.log_start_offset
    while offset < log.log_end_offset:
        records = [r for r in decode_batches(log.read_bytes(offset, 64 * MiB)) if r[0] >= offset]
        values += [r[3] for r in records]
        offset = records[-1][0] + 1
    return values


def test_drop_behind_fsyncs_and_drops_from_the_page_cache_what_lies_behind_the_window(tmp_path):
    from harness import resident_pages
    page = os.sysconf("SC_PAGE_SIZE")
    values = [bytes([i]) * (256 * 1024) for i in range(24)]
    with PartitionLog.open(str(tmp_path / "t-0"), LogConfig()) as log:
        log.drop_behind_bytes = MiB      # no requester: each flush it asks for runs inline
        for v in values:
            log.append(batch_of([v]))
        # Every MiB appended asked for a flush: all of it is on disk without flush.* settings.
        assert log.flushed_offset == log.log_end_offset == 24
        segment = log.active_segment
        assert segment.size - MiB - page < segment.dropped_to <= segment.size - MiB
        resident = resident_pages(segment.log_path)
        # Pages (folios of up to 2 MiB) straddling the last range's end go with the next one.
        behind = (segment.dropped_to - segment.dropped_to % (2 * MiB)) // page
        assert behind >= 4 * MiB // page
        assert not any(resident[:behind]), f"{sum(resident[:behind])} of {behind} dropped pages still cached"
        assert all(resident[-(MiB // page) + 1:]), "the newest MiB left the page cache"
        assert _values_back(log) == values   # dropped pages read back from the disk intact


def test_drop_behind_asks_the_requester_every_window_and_drops_across_a_roll(tmp_path):
    requested = []
    with PartitionLog.open(str(tmp_path / "t-0"), LogConfig(segment_bytes=3 * MiB)) as log:
        log.flush_requester = requested.append
        log.drop_behind_bytes = MiB
        value = b"v" * (512 * 1024)
        log.append(batch_of([value]))
        assert requested == []
        log.append(batch_of([value]))
        assert requested == [log]            # a MiB appended since the last flush was asked for
        for _ in range(6):                   # the sixth batch rolls into a second segment
            log.append(batch_of([value]))
        assert len(requested) == 4
        first, second = log.segments
        assert second.size > MiB
        plan = log.prepare_flush()
        # Everything more than a MiB behind the log end, across the roll, and nothing newer.
        assert plan.drops == [(second.fd, 0, second.size - MiB), (first.fd, 0, first.size)]
        plan.sync()
        log.complete_flush(plan.end_offset)
        log.append(batch_of([value]))
        # The sealed segment is flushed and dropped: it is not named again.
        assert log.prepare_flush().drops == [(second.fd, 0, second.size - MiB)]
        assert _values_back(log) == [value] * 9


def test_without_drop_behind_nothing_is_flushed_or_dropped(tmp_path):
    requested = []
    with PartitionLog.open(str(tmp_path / "t-0"), LogConfig()) as log:
        log.flush_requester = requested.append
        for _ in range(8):
            log.append(batch_of([b"v" * (512 * 1024)]))
        assert requested == [] and log.flushed_offset == 0
        assert log.prepare_flush().drops == []


def test_log_manager_gives_drop_behind_to_open_and_new_logs(tmp_path):
    with LogManager(str(tmp_path)) as logs:
        first = logs.create_log("a", 0)
        logs.set_drop_behind(4 * MiB)
        assert first.drop_behind_bytes == 4 * MiB and logs.create_log("b", 0).drop_behind_bytes == 4 * MiB
        logs.set_drop_behind(None)
        assert first.drop_behind_bytes is None


def test_a_drop_the_kernel_refuses_does_not_fail_the_flush(tmp_path):
    """Dropping pages is advice: once the fsync succeeded the flush succeeded, whatever the
    advice call says (here ESPIPE, from a pipe)."""
    from minilog.storage.log import FlushPlan
    read_end, write_end = os.pipe()
    try:
        with PartitionLog.open(str(tmp_path / "t-0"), LogConfig()) as log:
            log.append(batch_of([b"kept"]))
            plan = log.prepare_flush()
            FlushPlan(plan.end_offset, plan.files, [(read_end, 0, 1 << 20)]).sync()
            assert log.complete_flush(plan.end_offset) == 1
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_read_of_dropped_bytes_has_the_kernel_read_what_follows_back_in(tmp_path):
    """A reader behind the window reads on: its first read of dropped bytes asks the kernel for
    the next ones too (LogSegment._slice, POSIX_FADV_WILLNEED), so they arrive without waiting
    for each fetch."""
    from harness import resident_pages, wait_until
    page = os.sysconf("SC_PAGE_SIZE")
    values = [bytes([i]) * (256 * 1024) for i in range(24)]
    with PartitionLog.open(str(tmp_path / "t-0"), LogConfig()) as log:
        log.drop_behind_bytes = MiB
        for v in values:
            log.append(batch_of([v]))
        path = log.active_segment.log_path
        ahead = slice(2 * MiB // page, 4 * MiB // page)
        assert not any(resident_pages(path)[ahead])
        log.read(0, 1024)            # the first batch alone; nothing read past it
        wait_until(lambda: all(resident_pages(path)[ahead]), 10)
        assert _values_back(log) == values
