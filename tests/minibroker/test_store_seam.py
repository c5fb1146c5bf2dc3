"""The store seam, in-process: what the core tells a store, and confirms that wait for durability.

A `RecordingStore` stands in for the durable store in minibroker/store/ (it is a test double of *that*
component, not of the broker): it records the calls and holds `when_durable` callbacks until the
test says "fsync done". The broker under test is the real core.
"""

from minibroker.broker import Broker
from minibroker.store_interface import TransientStore


class RecordingStore(TransientStore):
    def __init__(self):
        self.calls = []
        self.waiting = []
        self.next_id = 1

    def queue_declared(self, queue):
        self.calls.append(("queue_declared", queue.name))

    def queue_deleted(self, queue):
        self.calls.append(("queue_deleted", queue.name))

    def bound(self, source, destination, routing_key, arguments):
        self.calls.append(("bound", source.name, destination.name, routing_key))

    def enqueue(self, queue, msg):
        msg.store_id = self.next_id
        self.next_id += 1
        self.calls.append(("enqueue", queue.name, msg.body))

    def settle(self, queue, msg):
        self.calls.append(("settle", queue.name, msg.store_id))

    def when_durable(self, callback):
        self.waiting.append(callback)

    def commit(self):
        waiting, self.waiting = self.waiting, []
        for cb in waiting:
            cb()


class Sink:
    paused = False
    send_limit = 1 << 24

    def __init__(self):
        self.confirms = []
        self.deliveries = []

    def deliver(self, ch, entries, body_bytes):
        self.deliveries.extend(entries)

    def confirm(self, ch, ack, seq, multiple):
        self.confirms.append((ack, seq, multiple))

    def return_message(self, *args):
        pass

    def cancel(self, *args):
        pass


PERSISTENT = {"delivery_mode": 2}


def setup():
    store = RecordingStore()
    broker = Broker(store=store)
    sink = Sink()
    session = broker.open_session(sink)
    return store, broker, sink, session


def test_only_persistent_messages_in_durable_queues_reach_the_store():
    store, broker, sink, session = setup()
    broker.declare_queue(session, "durable", durable=True)
    broker.declare_queue(session, "transient")
    ch = session.channel(1)
    broker.publish_batch(ch, [["", "durable", b"p", PERSISTENT, False], ["", "durable", b"t", None, False],
                              ["", "transient", b"p2", PERSISTENT, False]])
    assert [c for c in store.calls if c[0] == "enqueue"] == [("enqueue", "durable", b"p")]
    assert ("queue_declared", "durable") in store.calls and ("queue_declared", "transient") not in store.calls


def test_confirms_wait_for_the_store_and_keep_their_order():
    store, broker, sink, session = setup()
    broker.declare_queue(session, "q", durable=True)
    ch = session.channel(1)
    ch.confirm_mode = True
    broker.publish_batch(ch, [["", "q", b"%d" % i, PERSISTENT, False] for i in range(3)])
    broker.run_turn()
    assert sink.confirms == []           # not durable yet
    broker.publish_batch(ch, [["", "q", b"3", None, False]])
    broker.run_turn()
    assert sink.confirms == []           # a later confirm must not overtake the earlier ones
    store.commit()                       # one "fsync" for both turns: group commit
    assert sink.confirms == [(True, 3, True), (True, 4, False)]


def test_ack_settles_the_stored_message_once():
    store, broker, sink, session = setup()
    broker.declare_queue(session, "q", durable=True)
    ch = session.channel(1)
    broker.publish_batch(ch, [["", "q", b"a", PERSISTENT, False]])
    got = ch.get(broker.queues["q"], False, broker.clock())
    ch.ack(got["delivery_tag"], False)
    assert [c for c in store.calls if c[0] == "settle"] == [("settle", "q", 1)]


def test_dead_lettered_persistent_message_is_settled_in_its_old_queue_and_stored_in_the_new():
    store, broker, sink, session = setup()
    broker.declare_queue(session, "dlq", durable=True)
    broker.declare_queue(session, "q", durable=True,
                         arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"})
    ch = session.channel(1)
    broker.publish_batch(ch, [["", "q", b"a", PERSISTENT, False]])
    got = ch.get(broker.queues["q"], False, broker.clock())
    ch.nack(got["delivery_tag"], False, False)
    assert store.calls[-2:] == [("enqueue", "dlq", b"a"), ("settle", "q", 1)]


def test_restore_helpers_rebuild_a_queue_with_messages():
    broker = Broker()
    broker.restore_exchange("ex", "topic")
    broker.restore_queue("q", arguments={"x-max-priority": 3})
    broker.restore_binding("ex", "q", "a.#")
    broker.restore_message("q", "ex", "a.b", b"low", {"priority": 1, "delivery_mode": 2}, store_id=7)
    broker.restore_message("q", "ex", "a.b", b"high", {"priority": 3, "delivery_mode": 2}, store_id=8)
    sink = Sink()
    session = broker.open_session(sink)
    ch = session.channel(1)
    got = ch.get(broker.queues["q"], True, broker.clock())
    assert got["body"] == b"high" and got["redelivered"] is True
    assert broker.route(broker.exchanges["ex"], "a.x", None) == (broker.queues["q"],)


class LazyStore(RecordingStore):
    """Drops bodies from memory once stored, as a store with lazy bodies may."""

    def enqueue(self, queue, msg):
        super().enqueue(queue, msg)
        self.bodies = getattr(self, "bodies", {})
        self.bodies[msg.store_id] = msg.body
        msg.body = None

    def read_body(self, msg):
        self.calls.append(("read_body", msg.store_id))
        return self.bodies[msg.store_id]

    def delivered(self, queue, msg):
        self.calls.append(("delivered", queue.name, msg.store_id))


def test_push_deliveries_of_stored_messages_tell_the_store_and_read_lazy_bodies():
    store = LazyStore()
    broker = Broker(store=store)
    sink = Sink()
    session = broker.open_session(sink)
    broker.declare_queue(session, "q", durable=True)
    ch = session.channel(1)
    ch.consume(broker.queues["q"], "c", False, False, {}, broker.clock())
    broker.publish_batch(ch, [["", "q", b"a", PERSISTENT, False], ["", "q", b"b", None, False],
                              ["", "q", b"c", PERSISTENT, False]])
    broker.run_turn()
    assert [e[5] for e in sink.deliveries] == [b"a", b"b", b"c"]
    assert [e[1] for e in sink.deliveries] == [1, 2, 3]
    assert [c for c in store.calls if c[0] == "delivered"] == [("delivered", "q", 1), ("delivered", "q", 2)]
    assert broker.queues["q"].unacked == 3 and len(ch.unacked) == 3
    assert ch.consumers["c"].unacked == 3
    ch.ack(3, True)
    assert broker.queues["q"].unacked == 0 and ch.consumers["c"].unacked == 0


def test_fanout_copies_keep_their_bodies_when_the_store_drops_one():
    store = LazyStore()
    broker = Broker(store=store)
    session = broker.open_session(Sink())
    broker.declare_queue(session, "durable", durable=True)
    broker.declare_queue(session, "transient")
    for name in ("durable", "transient"):
        broker.bind_queue(session, name, "amq.fanout")
    broker.publish_batch(session.channel(1), [["amq.fanout", "", b"body", PERSISTENT, False]])
    got = session.channel(1).get(broker.queues["transient"], True, broker.clock())
    assert got["body"] == b"body"
    got = session.channel(1).get(broker.queues["durable"], True, broker.clock())
    assert got["body"] == b"body"
