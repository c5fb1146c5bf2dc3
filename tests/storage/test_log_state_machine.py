"""A partition log against a list model: appends, rolls, reads, crashes, restarts, retention."""

import os
import shutil
import tempfile

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from clients.record_batch import build_batch, decode_batches, iter_batches
from log_storage_helpers import examples
from minilog.storage import LogConfig, OffsetLostError, OffsetOutOfRangeError, PartitionLog, apply_retention

LOST = None  # the model's value at an offset recovery took out as damaged
record = st.tuples(st.binary(min_size=0, max_size=120), st.integers(0, 10_000))


class LogModel(RuleBasedStateMachine):
    @initialize(segment_bytes=st.integers(1024, 4096), interval=st.integers(0, 300),
                index_entries=st.integers(3, 40))
    def open_log(self, segment_bytes, interval, index_entries):
        self.root = tempfile.mkdtemp(prefix="minilog-sm-")
        self.generation = 0
        self.config = LogConfig(segment_bytes=segment_bytes, index_interval_bytes=interval,
                                segment_index_bytes=24 * index_entries, retention_ms=None)
        self.log = PartitionLog.open(self._dir(), self.config)
        self.values: list[tuple[bytes, int]] = []  # model: (value, timestamp) by offset, LOST if damaged
        self.lost: list[tuple[int, int]] = []  # offset ranges recovery took out as damaged
        self.start = 0

    def _lost_at(self, offset):
        return next((r for r in self.lost if r[0] <= offset < r[1]), None)

    def _dir(self):
        return os.path.join(self.root, f"gen{self.generation}-0")

    def teardown(self):
        if hasattr(self, "log"):
            self.log.close()
            shutil.rmtree(self.root, ignore_errors=True)

    @rule(records=st.lists(record, min_size=1, max_size=12))
    def append(self, records):
        info = self.log.append(build_batch([(None, v, t, None) for v, t in records]))
        assert info.base_offset == len(self.values)
        assert info.last_offset == len(self.values) + len(records) - 1
        self.values.extend(records)

    @rule()
    def flush(self):
        assert self.log.flush() == len(self.values)

    @rule(data=st.data(), max_bytes=st.integers(1, 3000))
    def read(self, data, max_bytes):
        offset = data.draw(st.integers(self.start, len(self.values)))
        lost = self._lost_at(offset)
        if lost is not None:
            with pytest.raises(OffsetLostError) as raised:
                self.log.read(offset, max_bytes)
            assert (raised.value.first_offset, raised.value.end_offset) == lost
            return
        got = decode_batches(self.log.read_bytes(offset, max_bytes))
        if offset == len(self.values):
            assert got == []
            return
        assert got and got[0][0] <= offset <= got[-1][0]
        assert [r[0] for r in got] == list(range(got[0][0], got[0][0] + len(got))), "dense offsets"
        assert [(r[3], r[1]) for r in got] == self.values[got[0][0]:got[-1][0] + 1]

    @rule(data=st.data())
    def read_out_of_range(self, data):
        offset = data.draw(st.one_of(st.integers(-5, self.start - 1), st.integers(len(self.values) + 1, 10**6)))
        with pytest.raises(OffsetOutOfRangeError):
            self.log.read(offset)

    @rule(timestamp=st.integers(-1, 10_001))
    def lookup_time(self, timestamp):
        want = next((o for o in range(self.start, len(self.values))
                     if self.values[o] is not LOST and self.values[o][1] >= timestamp), None)
        assert self.log.offset_for_timestamp(timestamp) == want

    @rule()
    def restart(self):
        self.log.close()
        self.log = PartitionLog.open(self._dir(), self.config)

    @precondition(lambda self: self.values)
    @rule(data=st.data(), corrupt=st.booleans())
    def crash(self, data, corrupt):
        """Power cut: unflushed bytes of the last segment are cut short or garbled."""
        flushed = self.log.flushed_offset
        self.generation += 1
        shutil.copytree(self.log.directory, self._dir())
        self.log.close()
        logs = sorted(n for n in os.listdir(self._dir()) if n.endswith(".log"))
        path = os.path.join(self._dir(), logs[-1])
        raw = open(path, "rb").read()
        batches, pos = [], 0
        for h, mv in iter_batches(raw):
            batches.append((pos, h))
            pos += h.size
        safe = next((p for p, h in batches if h.base_offset >= flushed), len(raw))
        expected_end = int(logs[-1][:20])
        lost = None
        if corrupt and safe < len(raw):
            at = data.draw(st.integers(safe, len(raw) - 1))
            with open(path, "r+b") as f:
                f.seek(at)
                f.write(bytes([raw[at] ^ 0x5A]))
            hit = next(i for i, (p, h) in enumerate(batches) if p <= at < p + h.size)
            if hit == len(batches) - 1:  # the last batch: nothing valid after it, a torn tail is cut
                expected_end = batches[hit][1].base_offset
            else:  # valid batches follow: only the damaged one is lost, its offsets never reused
                lost = (batches[hit][1].base_offset, batches[hit][1].next_offset)
                expected_end = batches[-1][1].next_offset
        else:
            cut = data.draw(st.integers(safe, len(raw)))
            os.truncate(path, cut)
            for p, h in batches:
                if p + h.size <= cut:
                    expected_end = h.next_offset
        self.log = PartitionLog.open(self._dir(), self.config)
        assert flushed <= expected_end, "flushed data may not be lost"
        assert self.log.log_end_offset == expected_end
        del self.values[expected_end:]
        self.lost = [r for r in self.lost if r[0] < expected_end]
        if lost is not None:
            self.lost.append(lost)
            self.values[lost[0]:lost[1]] = [LOST] * (lost[1] - lost[0])
        assert [r for r in self.log.lost_ranges if r[1] > self.start] == \
            [r for r in sorted(self.lost) if r[1] > self.start]

    @rule(fraction=st.floats(0, 1))
    def retention_by_size(self, fraction):
        limit = int(self.log.size_bytes * fraction)
        bases = [s.base_offset for s in self.log.segments]
        self.log.config = LogConfig.from_dict({"retention.bytes": limit}, self.config)
        apply_retention(self.log, now_ms=0)
        self.log.config = self.config
        assert self.log.log_start_offset in bases and self.log.log_start_offset >= self.start
        self.start = self.log.log_start_offset

    @invariant()
    def offsets_match_the_model(self):
        if not hasattr(self, "log"):
            return
        assert self.log.log_end_offset == len(self.values)
        assert self.log.log_start_offset == self.start
        assert self.log.flushed_offset <= self.log.log_end_offset
        segments = self.log.segments
        assert segments[0].base_offset == self.start
        for a, b in zip(segments, segments[1:]):
            assert a.next_offset == b.base_offset, "segments are contiguous"

    @rule()
    def read_everything(self):
        offset, seen = self.start, []
        while offset < len(self.values):
            try:
                got = decode_batches(self.log.read_bytes(offset, 2000))
            except OffsetLostError as lost:
                offset = lost.end_offset
                continue
            seen.extend((r[3], r[1]) for r in got if r[0] >= offset)
            offset = got[-1][0] + 1
        assert seen == [v for v in self.values[self.start:] if v is not LOST]


TestLogModel = LogModel.TestCase
TestLogModel.settings = examples(60, stateful_step_count=40)
