"""The split flush API (prepare_flush / FlushPlan.sync / complete_flush) and the flush requester."""

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
