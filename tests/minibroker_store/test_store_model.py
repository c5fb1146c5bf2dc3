"""The journal checked against a model across clean restarts, crashes and torn tails.

In the manner of RabbitMQ's property suites: the model records what is *confirmed* (covered
by a completed commit) and what is *uncertain* (appended since). Records reach the disk in
order, so after a crash the recovered state must equal the model's state after the confirmed
operations plus some prefix of the uncertain ones -- every confirmed, unsettled message
exactly once, with its delivery count, nothing settled-and-confirmed, nothing invented.
"""

import asyncio
import os
import shutil
import tempfile

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from minibroker.store.journal import MessageJournal, StorageFailure

QUEUES = ["a", "b", "c"]


def apply(state: dict, op) -> None:
    kind = op[0]
    if kind == "publish":
        _, msg_id, queues, body = op
        for q in queues:
            state[(msg_id, q)] = (0, body)
    elif kind == "settle":
        state.pop((op[1], op[2]), None)
    elif kind == "deliver":
        _, msg_id, q, count = op
        if (msg_id, q) in state:
            state[(msg_id, q)] = (count, state[(msg_id, q)][1])


class JournalMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="journal-model-")
        self.loop = asyncio.new_event_loop()
        self.durable: dict = {}   # (msg_id, queue) -> (delivery_count, body): confirmed state
        self.ops: list = []       # appended since the last completed commit: uncertain
        self.journal = None
        self._open()

    def _open(self):
        self.journal = MessageJournal(self.dir, segment_bytes=2048, compact_ratio=0.5)
        rec = self.journal.open()
        got = {}
        for q, msgs in rec.queues.items():
            ids = [m.msg_id for m in msgs]
            assert ids == sorted(ids) and len(ids) == len(set(ids)), f"queue {q} not in order or duplicated: {ids}"
            for m in msgs:
                assert m.redelivered == (m.delivery_count > 0)
                got[(m.msg_id, q)] = (m.delivery_count, self.journal.read_body(m.msg_id))
        candidates = []
        state = dict(self.durable)
        candidates.append(dict(state))
        for op in self.ops:
            apply(state, op)
            candidates.append(dict(state))
        assert got in candidates, (
            f"recovered state is not the confirmed state plus a prefix of the uncertain ops:\n"
            f"got {sorted(got)}\nconfirmed {sorted(self.durable)}\nuncertain {self.ops}")
        self.durable = got
        self.ops = []

    def current(self) -> dict:
        state = dict(self.durable)
        for op in self.ops:
            apply(state, op)
        return state

    def settle_loop(self):
        """Let the abandoned journal's cancelled committer finish cancelling."""
        self.loop.run_until_complete(asyncio.sleep(0))

    def run(self, make_awaitable):
        async def runner():
            result = await make_awaitable()
            # Let the committer go idle, so what is on disk at a crash does not depend on timing.
            while self.journal._sync_task is not None:
                await asyncio.shield(self.journal._sync_task)
            return result
        return self.loop.run_until_complete(runner())

    @rule(queues=st.lists(st.sampled_from(QUEUES), min_size=1, max_size=3, unique=True),
          size=st.integers(0, 600))
    def publish(self, queues, size):
        body = os.urandom(size)
        if len(queues) == 1 and size % 2:   # the broker's hot path, checked by the same model
            j = self.journal
            msg_id = j.append_publish_one(queues[0], "ex", "rk", j.pack_properties({"delivery_mode": 2}), body)
        else:
            msg_id = self.journal.append_publish(queues, "ex", "rk", {"delivery_mode": 2}, body)
        self.ops.append(("publish", msg_id, tuple(queues), body))

    @precondition(lambda self: self.current())
    @rule(data=st.data())
    def settle(self, data):
        msg_id, q = data.draw(st.sampled_from(sorted(self.current())))
        self.journal.append_settle(q, [msg_id])
        self.ops.append(("settle", msg_id, q))

    @precondition(lambda self: self.current())
    @rule(data=st.data())
    def deliver(self, data):
        state = self.current()
        key = data.draw(st.sampled_from(sorted(state)))
        count = state[key][0] + 1
        self.journal.append_delivery(key[1], [(key[0], count)])
        self.ops.append(("deliver", key[0], key[1], count))

    @rule()
    def commit(self):
        self.run(self.journal.commit)
        self.durable = self.current()
        self.ops = []

    @rule()
    def maintain(self):
        self.run(self.journal.maintain)   # syncs before anything is deleted
        self.run(self.journal.sync)
        self.durable = self.current()
        self.ops = []

    @rule()
    def clean_restart(self):
        self.run(self.journal.close)
        self.durable = self.current()
        self.ops = []
        self._open()

    @rule()
    def clean_restart_from_snapshot(self):
        """A clean stop that writes the clean-stop snapshot, as the broker does: the next open
        takes the index, delivery counts and segment references from it instead of a replay."""
        state = self.current()
        props_bin = self.journal.pack_properties({"delivery_mode": 2})
        held: dict = {}
        for msg_id, q in sorted(state):
            held.setdefault(q, []).append((msg_id, "ex", "rk", props_bin, None))
        self.run(self.journal.commit)
        self.journal.close_sync(snapshot=lambda: list(held.items()))
        self.durable = state
        self.ops = []
        self._open()

    @rule(call=st.sampled_from(["pwritev", "fdatasync"]))
    def disk_failure(self, call):
        """A commit meets a full disk (the write fails) or an I/O error (the fsync fails): the
        uncertain publishes are lost, the uncertain settlements and delivery counts are kept and
        retried; once the disk works again the retry makes them durable."""
        real = getattr(os, call)

        def broken(*args):
            raise OSError(28 if call == "pwritev" else 5, "injected by the model")

        setattr(os, call, broken)
        try:
            try:
                self.run(self.journal.commit)
            except StorageFailure:
                pass
            failed = self.journal.failure is not None
            if failed:
                with pytest.raises(StorageFailure):
                    self.journal.append_publish(["a"], "ex", "rk", None, b"refused")
        finally:
            setattr(os, call, real)
        if not failed:      # nothing was pending: nothing to fail
            self.durable = self.current()
            self.ops = []
            return
        lost = {op[1] for op in self.ops if op[0] == "publish"}
        self.ops = [op for op in self.ops if op[0] != "publish" and op[1] not in lost]
        self.run(self.journal._probe)
        assert self.journal.failure is None
        self.durable = self.current()
        self.ops = []

    @rule()
    def crash(self):
        """kill -9: the append buffer is lost, what reached the kernel survives."""
        self.journal.abandon()
        self.settle_loop()
        self._open()

    @rule(fraction=st.floats(0, 1))
    def power_loss(self, fraction):
        """Lose a random part of the active segment's unsynced tail, cutting records anywhere."""
        seg = self.journal.segments[max(self.journal.segments)]
        self.journal._write_out()
        synced, size = seg.synced, seg.written
        path = seg.path
        self.journal.abandon()
        self.settle_loop()
        keep = synced + int((size - synced) * fraction)
        if os.path.exists(path) and keep < os.path.getsize(path):
            os.truncate(path, keep)
        self._open()

    @invariant()
    def bodies_readable(self):
        if self.journal is not None and not self.journal._closed:
            for (msg_id, _q), (_count, body) in list(self.current().items())[:5]:
                assert self.journal.read_body(msg_id) == body

    def teardown(self):
        try:
            if self.journal is not None and not self.journal._closed:
                self.journal.abandon()
                self.settle_loop()
        finally:
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)


TestJournalModel = JournalMachine.TestCase
