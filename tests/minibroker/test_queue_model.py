"""A model-based check of one queue's bookkeeping, in-process: whatever the mix of publishes,
gets, acks, nacks, rejects and channel closes, no message is lost or duplicated, the ready
messages stay in their original order, and the counts agree with a plain-list model.

The model: a message is `ready` (a sorted list of ids, since requeue restores the original
place), `unacked` on a channel (tag → id), or `gone` (acked or rejected without requeue).
"""

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from clients.protocol.errors import BrokerError
from minibroker.broker import Broker


class NullSink:
    paused = False
    send_limit = 1 << 24

    def deliver(self, ch, entries, body_bytes):
        return None

    def confirm(self, *args):
        pass

    def return_message(self, *args):
        pass

    def cancel(self, *args):
        pass


class QueueModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.broker = Broker()
        self.session = self.broker.open_session(NullSink())
        self.queue = self.broker.declare_queue(self.session, "q")
        self.broker.declare_queue(self.session, "other")
        self.next_id = 0
        self.ready = []                       # ids, in delivery order
        self.unacked = {1: {}, 2: {}}         # channel -> {tag: id}
        self.gone = set()
        self.redelivered = set()

    @rule(kinds=st.lists(st.sampled_from(["plain", "plain", "expiring", "refused", "elsewhere"]),
                         min_size=1, max_size=8))
    def publish(self, kinds):
        """A batch mixing publish_batch's fast path (plain), the general path (a message with an
        expiration), refused entries and entries for another queue, each of which ends a run of
        the fast path: the queue must still hold its messages in publish order."""
        entries = []
        for kind in kinds:
            if kind == "elsewhere":
                entries.append(["", "other", b"-", None, False])
            elif kind == "refused":
                entries.append(["", "q", b"-", {"priority": "high"}, False])
            else:
                props = {"expiration": "600000"} if kind == "expiring" else None
                entries.append(["", "q", b"%d" % self.next_id, props, False])
                self.ready.append(self.next_id)
                self.next_id += 1
        try:
            self.broker.publish_batch(self.session.channel(1), entries)
        except BrokerError as exc:
            assert "refused" in kinds and exc.code == "BAD_REQUEST"
        else:
            assert "refused" not in kinds

    @rule(ch=st.sampled_from([1, 2]))
    def get(self, ch):
        got = self.session.channel(ch).get(self.queue, False, self.broker.clock())
        if not self.ready:
            assert got is None
            return
        expected = self.ready.pop(0)
        assert int(got["body"]) == expected
        assert got["redelivered"] == (expected in self.redelivered)
        self.unacked[ch][got["delivery_tag"]] = expected

    def _settle(self, ch, tag, multiple):
        tags = [t for t in self.unacked[ch] if t <= tag] if multiple else [tag]
        return [self.unacked[ch].pop(t) for t in tags]

    @precondition(lambda self: self.unacked[1] or self.unacked[2])
    @rule(data=st.data(), multiple=st.booleans(), how=st.sampled_from(["ack", "requeue", "reject"]))
    def settle(self, data, multiple, how):
        ch = data.draw(st.sampled_from([c for c in (1, 2) if self.unacked[c]]))
        tag = data.draw(st.sampled_from(sorted(self.unacked[ch])))
        ids = self._settle(ch, tag, multiple)
        channel = self.session.channel(ch)
        if how == "ack":
            channel.ack(tag, multiple)
            self.gone.update(ids)
        elif how == "requeue":
            channel.nack(tag, multiple, True)
            self.ready = sorted(self.ready + ids)
            self.redelivered.update(ids)
        else:
            channel.nack(tag, multiple, False)
            self.gone.update(ids)

    @rule(ch=st.sampled_from([1, 2]))
    def close_channel(self, ch):
        self.session.close_channel(ch)
        ids = list(self.unacked[ch].values())
        self.unacked[ch] = {}
        self.ready = sorted(self.ready + ids)
        self.redelivered.update(ids)

    @invariant()
    def counts_agree(self):
        assert [int(m.body) for m in self.queue.ready] == self.ready
        assert self.queue.unacked == len(self.unacked[1]) + len(self.unacked[2])
        held = set(self.ready) | set(self.unacked[1].values()) | set(self.unacked[2].values())
        assert held.isdisjoint(self.gone)
        assert len(held) + len(self.gone) == self.next_id
        assert self.queue.ready_bytes == sum(len(b"%d" % i) for i in self.ready)
        assert self.queue.n_published == self.next_id
        positions = [m.position for m in self.queue.ready]
        assert positions == sorted(set(positions)) and (not positions or positions[-1] < self.queue._next_position)


TestQueueModel = QueueModel.TestCase
