"""Consumer groups over the real wire: splitting partitions, takeover, generations, assignors."""

import threading

import pytest
from log_client_helpers import drain
from harness import wait_until

from clients.log import Consumer, KafkaError, KafkaException, TopicPartition
from clients.log.assignors import range_assign, roundrobin_assign, sticky_assign

FAST_GROUP = {"heartbeat.interval.ms": 100, "session.timeout.ms": 6000, "enable.auto.commit": False}


class GroupWorker:
    """One consumer in its own thread, processing a record then committing it synchronously."""

    def __init__(self, idx, bootstrap, topic, group, log, **conf):
        self.idx = idx
        self.log = log
        self.assigned = []
        self.stop = threading.Event()
        self.close_on_stop = True
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                                  "auto.offset.reset": "earliest", **FAST_GROUP, **conf})
        self.consumer.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.error = None

    def _on_assign(self, consumer, partitions):
        self.assigned = sorted(tp.partition for tp in partitions)

    def _on_revoke(self, consumer, partitions):
        self.assigned = []

    def run(self):
        c = self.consumer
        try:
            while not self.stop.is_set():
                m = c.poll(0.05)
                if m is None or m.error() is not None:
                    continue
                key = (m.partition(), m.offset())
                self.log["delivered"].append((self.idx, key))
                try:
                    c.commit(message=m, asynchronous=False)
                    self.log["committed"].add(key)
                except KafkaException as exc:
                    # A commit refused mid-rebalance: the record is redelivered to the next owner.
                    self.log["failed"].add(key)
                    assert exc.args[0].code() in (KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION,
                                                  KafkaError.UNKNOWN_MEMBER_ID), exc
            if self.close_on_stop:
                c.close()
        except BaseException as exc:  # surfaced by the test
            self.error = exc


def _produce_per_partition(producer, topic, partitions, per_partition, start=0):
    for p in range(partitions):
        for i in range(start, start + per_partition):
            producer.produce(topic, value=f"{p}-{i}", partition=p)
    assert producer.flush(10) == 0


def _check_no_loss_no_skip(log, partitions, per_partition):
    seen = {}
    for _, key in log["delivered"]:
        seen[key] = seen.get(key, 0) + 1
    for p in range(partitions):
        for o in range(per_partition):
            assert (p, o) in seen, f"record {p}/{o} was never delivered (skipped)"
    duplicated = {k for k, n in seen.items() if n > 1}
    # Only records whose commit was refused may come again; a committed record never does.
    assert duplicated <= log["failed"], duplicated - log["failed"]


@pytest.mark.parametrize("how", ["close", "stop_polling"])
def test_three_consumers_split_six_partitions_and_survivors_take_over(how, bootstrap, make_topic, producer):
    topic = make_topic(6)
    group = f"split-{how}"
    log = {"delivered": [], "committed": set(), "failed": set()}
    # A member that stops polling (a stuck process) keeps heartbeating from its background
    # thread, as with librdkafka, until max.poll.interval.ms: then it leaves the group.
    conf = {"max.poll.interval.ms": 1500} if how == "stop_polling" else {}
    workers = [GroupWorker(i, bootstrap, topic, group, log, **conf) for i in range(3)]
    for w in workers:
        w.thread.start()
    try:
        wait_until(lambda: sorted(len(w.assigned) for w in workers) == [2, 2, 2], 15,
                   message="three members with two partitions each")
        assert sorted(p for w in workers for p in w.assigned) == list(range(6))
        p = producer()
        _produce_per_partition(p, topic, 6, 20)
        wait_until(lambda: len({k for _, k in log["delivered"]}) == 120, 15, message="first 120 records")
        leaver = workers[0]
        if how == "stop_polling":
            leaver.close_on_stop = False  # it just stops polling, like a stuck process
        leaver.stop.set()
        leaver.thread.join(10)
        survivors = workers[1:]
        wait_until(lambda: sorted(len(w.assigned) for w in survivors) == [3, 3], 20,
                   message="the two survivors own three partitions each")
        _produce_per_partition(p, topic, 6, 20, start=20)
        wait_until(lambda: len({k for _, k in log["delivered"]}) == 240, 15, message="all 240 records")
        # Nothing skipped; the survivors took the leaver's partitions over from its last
        # commit, so no committed record came twice.
        _check_no_loss_no_skip(log, 6, 40)
    finally:
        for w in workers:
            w.stop.set()
        for w in workers:
            w.thread.join(10)
        for w in workers:
            if not w.close_on_stop:
                w.consumer.close()
    for w in workers:
        assert w.error is None, w.error


def test_two_groups_read_the_same_topic_independently(producer, consumer, make_topic):
    topic = make_topic(2)
    p = producer()
    for i in range(100):
        p.produce(topic, b"%d" % i, key=b"%d" % (i % 7))
    p.flush(10)
    a = consumer(**{"group.id": "group-a", **FAST_GROUP})
    b = consumer(**{"group.id": "group-b", **FAST_GROUP})
    a.subscribe([topic])
    b.subscribe([topic])
    got_a = drain(a, 100)
    a.commit(asynchronous=False)
    got_b = drain(b, 60)
    b.commit(asynchronous=False)
    assert sorted(int(m.value()) for m in got_a) == list(range(100))
    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    assert sum(tp.offset for tp in a.committed(tps)) == 100
    assert sum(tp.offset for tp in b.committed(tps)) == 60  # b's progress is its own


def test_committed_offsets_resume_a_new_member(producer, consumer, make_topic):
    topic = make_topic(1)
    p = producer()
    for i in range(50):
        p.produce(topic, b"%d" % i)
    p.flush(10)
    c1 = consumer(**{"group.id": "resume", **FAST_GROUP})
    c1.subscribe([topic])
    first = drain(c1, 20)
    c1.commit(message=first[-1], asynchronous=False)  # commits offset 20, like confluent-kafka
    assert c1.committed([TopicPartition(topic, 0)])[0].offset == 20
    c1.close()
    c2 = consumer(**{"group.id": "resume", **FAST_GROUP})
    c2.subscribe([topic])
    rest = drain(c2, 30)
    assert [m.offset() for m in rest] == list(range(20, 50))


def test_auto_commit_commits_consumed_positions(producer, consumer, make_topic):
    topic = make_topic(1)
    p = producer()
    for i in range(30):
        p.produce(topic, b"x")
    p.flush(10)
    c = consumer(**{"group.id": "auto", "heartbeat.interval.ms": 100, "enable.auto.commit": True,
                    "auto.commit.interval.ms": 100})
    c.subscribe([topic])
    drain(c, 30)
    tp = TopicPartition(topic, 0)

    def committed_30():
        c.poll(0.05)
        return c.committed([tp])[0].offset == 30
    wait_until(committed_30, 10, message="auto-commit of offset 30")


def _poll_in_thread(consumer, stop):
    t = threading.Thread(target=lambda: [consumer.poll(0.05) for _ in iter(stop.is_set, True)], daemon=True)
    t.start()
    return t


def test_stale_generation_commit_is_refused(bootstrap, admin, producer, consumer, make_topic):
    topic = make_topic(3)
    p = producer()
    for i in range(30):
        p.produce(topic, b"%d" % i, partition=i % 3)
    p.flush(10)
    revoked = threading.Event()
    c1 = consumer(**{"group.id": "stale", **FAST_GROUP})
    c2 = consumer(**{"group.id": "stale", **FAST_GROUP})
    c3 = consumer(**{"group.id": "stale", **FAST_GROUP})
    c1.subscribe([topic], on_revoke=lambda c, ps: revoked.set())
    c2.subscribe([topic])
    # One thread polls both in turn: the join state machine never blocks a poll.
    got = []
    wait_until(lambda: (got.extend(m for m in [c1.poll(0.02)] if m is not None and m.error() is None),
                        c2.poll(0.02))[1] is None and c1.assignment() and c2.assignment() and got,
               10, message="c1 and c2 members, c1 holding a record")
    m = got[0]
    revoked.clear()
    gen = admin.describe_consumer_groups(["stale"])["stale"].result().generation_id
    stop = threading.Event()
    threads = []
    try:
        c3.subscribe([topic])
        threads.append(_poll_in_thread(c3, stop))
        # c1 hears of the rebalance and sends its join; it stays parked while c2 is silent.
        wait_until(lambda: c1.poll(0.05) is None and revoked.is_set(), 10, message="c1 rejoining")
        threads.append(_poll_in_thread(c2, stop))  # c2 rejoins: the next generation forms
        wait_until(lambda: admin.describe_consumer_groups(["stale"])["stale"].result().generation_id > gen,
                   10, message="the next generation")
        # c1 has not read its join reply: it still believes in the old generation.
        with pytest.raises(KafkaException) as exc:
            c1.commit(message=m, asynchronous=False)
        assert exc.value.args[0].code() == KafkaError.ILLEGAL_GENERATION
        # Polling again, c1 syncs into the new generation and its commits are accepted.
        wait_until(lambda: c1.poll(0.05) is None and len(c1.assignment()) == 1, 10, message="c1 back")
        tp = c1.assignment()[0]
        c1.commit(offsets=[TopicPartition(tp.topic, tp.partition, 1)], asynchronous=False)
    finally:
        stop.set()
        for t in threads:
            t.join(5)


def test_manual_assign_commit_into_active_group_is_refused(producer, consumer, make_topic):
    topic = make_topic(1)
    member = consumer(**{"group.id": "busy", **FAST_GROUP})
    member.subscribe([topic])
    wait_until(lambda: member.poll(0.05) is None and member.assignment(), 10, message="member assigned")
    outsider = consumer(**{"group.id": "busy"})
    outsider.assign([TopicPartition(topic, 0, 0)])
    with pytest.raises(KafkaException) as exc:
        outsider.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)
    assert exc.value.args[0].code() == KafkaError.ILLEGAL_GENERATION


def test_rebalance_callbacks_and_roundrobin(bootstrap, make_topic):
    topic = make_topic(4)
    events = []
    c1 = Consumer({"bootstrap.servers": bootstrap, "group.id": "rr", "partition.assignment.strategy": "roundrobin",
                   **FAST_GROUP})
    c2 = Consumer({"bootstrap.servers": bootstrap, "group.id": "rr", "partition.assignment.strategy": "roundrobin",
                   **FAST_GROUP})
    try:
        c1.subscribe([topic], on_assign=lambda c, ps: events.append(("assign1", len(ps))),
                     on_revoke=lambda c, ps: events.append(("revoke1", len(ps))))
        wait_until(lambda: c1.poll(0.05) is None and len(c1.assignment()) == 4, 10, message="c1 owns all")
        c2.subscribe([topic])
        stop = threading.Event()
        t = threading.Thread(target=lambda: [c2.poll(0.05) for _ in iter(stop.is_set, True)], daemon=True)
        t.start()
        wait_until(lambda: c1.poll(0.05) is None and len(c1.assignment()) == 2 and len(c2.assignment()) == 2, 15,
                   message="two members with two partitions each")
        stop.set()
        t.join(5)
        assert events[:3] == [("assign1", 4), ("revoke1", 4), ("assign1", 2)]
        assert sorted(tp.partition for tp in c1.assignment() + c2.assignment()) == [0, 1, 2, 3]
    finally:
        c2.close()
        c1.close()


def test_assignors_are_balanced_and_deterministic():
    subs = {"b": ["t", "u"], "a": ["t", "u"], "c": ["t"]}
    counts = {"t": 7, "u": 2}
    r = range_assign(subs, counts)
    assert r["a"]["t"] == [0, 1, 2] and r["b"]["t"] == [3, 4] and r["c"]["t"] == [5, 6]
    assert r["a"]["u"] == [0] and r["b"]["u"] == [1]
    rr = roundrobin_assign({m: ["t", "u"] for m in "abc"}, counts)
    assert sorted(p for m in rr.values() for p in m.get("t", [])) == list(range(7))
    assert rr["a"] == {"t": [0, 3, 6]} and rr["b"] == {"t": [1, 4], "u": [0]}
    assert max(sum(len(v) for v in m.values()) for m in rr.values()) - \
        min(sum(len(v) for v in m.values()) for m in rr.values()) <= 1
    owned = {"a": {"t": [0, 1, 2, 3]}, "b": {"t": [4, 5, 6]}}
    s = sticky_assign({"a": ["t"], "b": ["t"], "c": ["t"]}, {"t": 7}, owned)
    assert set(s["a"]["t"]) <= {0, 1, 2, 3} and set(s["b"]["t"]) <= {4, 5, 6}
    assert sorted(len(v["t"]) for v in s.values()) == [2, 2, 3]


def test_subscribing_before_the_topic_exists(admin, producer, consumer):
    c = consumer(**{"group.id": "early", **FAST_GROUP})
    c.subscribe(["later-topic"])
    seen = []
    # (a Message with no value is falsy, as in confluent-kafka: len() is the value's length)
    wait_until(lambda: seen.extend(m for m in [c.poll(0.05)] if m is not None) or seen, 10, message="an error")
    assert seen[0].error().code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    from clients.log import NewTopic
    admin.create_topics([NewTopic("later-topic", 2)])["later-topic"].result(5)
    p = producer()
    for i in range(10):
        p.produce("later-topic", b"%d" % i, partition=i % 2)
    p.flush(10)
    got = drain(c, 10)  # the group notices the topic and rejoins to take it
    assert sorted(int(m.value()) for m in got) == list(range(10))


def test_regex_subscription(make_topic, producer, consumer):
    a = make_topic(1, name="metrics-a")
    b = make_topic(1, name="metrics-b")
    make_topic(1, name="other-x")
    p = producer()
    for t in (a, b, "other-x"):
        p.produce(t, t.encode())
    p.flush(10)
    c = consumer(**{"group.id": "rx", **FAST_GROUP})
    c.subscribe(["^metrics-.*"])
    got = drain(c, 2)
    assert sorted(m.value() for m in got) == [b"metrics-a", b"metrics-b"]


def test_cooperative_sticky_moves_only_what_it_must(bootstrap, make_topic, producer):
    topic = make_topic(4)
    conf = {"bootstrap.servers": bootstrap, "group.id": "coop", "partition.assignment.strategy": "cooperative-sticky",
            "auto.offset.reset": "earliest", **FAST_GROUP}
    events = []
    c1, c2 = Consumer(conf), Consumer(conf)
    try:
        c1.subscribe([topic], on_assign=lambda c, ps: events.append(("assign1", sorted(tp.partition for tp in ps))),
                     on_revoke=lambda c, ps: events.append(("revoke1", sorted(tp.partition for tp in ps))))
        wait_until(lambda: c1.poll(0.05) is None and len(c1.assignment()) == 4, 10, message="c1 owns all")
        c2.subscribe([topic])
        stop = threading.Event()
        t = _poll_in_thread(c2, stop)
        wait_until(lambda: c1.poll(0.05) is None and len(c1.assignment()) == 2 and len(c2.assignment()) == 2, 15,
                   message="two members with two partitions each")
        stop.set()
        t.join(5)
        # c1 gave up exactly two partitions and never the two it kept.
        kept = sorted(tp.partition for tp in c1.assignment())
        revoked = [e for e in events if e[0] == "revoke1"]
        assert revoked and len(revoked[0][1]) == 2 and not set(revoked[0][1]) & set(kept), events
        assert events[0] == ("assign1", [0, 1, 2, 3])
        assert sorted(tp.partition for tp in c1.assignment() + c2.assignment()) == [0, 1, 2, 3]
        p = producer()
        for i in range(8):
            p.produce(topic, b"%d" % i, partition=i % 4)
        p.flush(10)
        got = []
        stop = threading.Event()
        t = threading.Thread(target=lambda: [got.extend(m for m in [c2.poll(0.05)] if m is not None and m.error() is None)
                                             for _ in iter(stop.is_set, True)], daemon=True)
        t.start()
        mine = drain(c1, 4)
        wait_until(lambda: len(got) >= 4, 10, message="c2's records")
        stop.set()
        t.join(5)
        assert sorted((m.partition(), m.offset()) for m in mine + got) == [(p, o) for p in range(4) for o in range(2)]
    finally:
        c2.close()
        c1.close()


def test_a_member_that_stalls_past_max_poll_interval_gets_on_lost_then_rejoins(admin, make_topic, consumer):
    topic = make_topic(2)
    events = []
    # Heartbeats come from the consumer's thread, so a stall longer than the session does not
    # end the membership; max.poll.interval.ms does (see test_log_clients_group_thread.py).
    c = consumer(**{"group.id": "staller", "heartbeat.interval.ms": 100, "session.timeout.ms": 1000,
                    "max.poll.interval.ms": 700, "enable.auto.commit": False})
    c.subscribe([topic], on_assign=lambda cons, ps: events.append(("assign", len(ps))),
                on_revoke=lambda cons, ps: events.append(("revoke", len(ps))),
                on_lost=lambda cons, ps: events.append(("lost", len(ps))))
    wait_until(lambda: c.poll(0.05) is None and len(c.assignment()) == 2, 10, message="assignment")
    # The application stalls (no poll): the consumer's thread leaves the group.
    wait_until(lambda: not admin.describe_consumer_groups(["staller"])["staller"].result().members, 10,
               message="leaving")
    stalled = c.poll(5)
    assert stalled is not None and stalled.error().code() == KafkaError._MAX_POLL_EXCEEDED
    wait_until(lambda: c.poll(0.05) is None and ("lost", 2) in events and len(c.assignment()) == 2, 10,
               message="on_lost, then a new assignment")
    assert events[0] == ("assign", 2) and ("revoke", 2) not in events
    assert events[-1] == ("assign", 2)


def test_store_offsets_with_auto_store_off(producer, consumer, make_topic):
    topic = make_topic(1)
    p = producer()
    for i in range(10):
        p.produce(topic, b"%d" % i)
    p.flush(10)
    c = consumer(**{"group.id": "storer", "enable.auto.offset.store": False, "enable.auto.commit": False,
                    **{k: v for k, v in FAST_GROUP.items() if k != "enable.auto.commit"}})
    c.subscribe([topic])
    msgs = drain(c, 10)
    c.store_offsets(message=msgs[3])  # processed up to offset 3 only
    c.commit(asynchronous=False)
    assert c.committed([TopicPartition(topic, 0)])[0].offset == 4


def test_resubscribing_switches_topics(make_topic, producer, consumer):
    a, b = make_topic(1), make_topic(1)
    p = producer()
    p.produce(a, b"from-a")
    p.produce(b, b"from-b")
    p.flush(10)
    c = consumer(**{"group.id": "switcher", **FAST_GROUP})
    c.subscribe([a])
    assert [m.value() for m in drain(c, 1)] == [b"from-a"]
    c.subscribe([b])
    assert [m.value() for m in drain(c, 1)] == [b"from-b"]
    assert [tp.topic for tp in c.assignment()] == [b]
