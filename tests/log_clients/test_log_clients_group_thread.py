"""Group membership does not depend on how often the application polls (as in librdkafka).

Scaled down from the issue's case (10 s of work on one message, 6 s session timeout): 1.5 s
of work with a 0.6 s session timeout. The consumer's heartbeat thread keeps it in the group,
so its commit afterwards succeeds and its partitions stay its own. Only
`max.poll.interval.ms` bounds the time between polls: past it the consumer leaves the group,
its next poll reports `_MAX_POLL_EXCEEDED` and hands out nothing it held, and it rejoins.
"""

import threading
import time

from harness import wait_until
from log_client_helpers import drain

from clients.log import KafkaError, TopicPartition

FAST_GROUP = {"session.timeout.ms": 600, "heartbeat.interval.ms": 100, "enable.auto.commit": False}


def _first_record(consumer, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is not None and msg.error() is None:
            return msg
    raise AssertionError("no record within the deadline")


def test_long_work_on_one_message_keeps_membership_and_the_commit_succeeds(producer, consumer, make_topic):
    topic = make_topic(2)
    p = producer()
    for i in range(20):
        p.produce(topic, b"%d" % i, partition=i % 2)
    assert p.flush(10) == 0
    revoked = []
    c = consumer(**{"group.id": "slow-worker", **FAST_GROUP})
    c.subscribe([topic], on_revoke=lambda consumer, parts: revoked.append(parts))
    msg = _first_record(c)
    member = c.memberid()
    assert member and len(c.assignment()) == 2
    time.sleep(1.5)  # the work: 2.5 session timeouts without a poll
    c.commit(message=msg, asynchronous=False)  # raises if the member was dropped
    assert c.committed([TopicPartition(topic, msg.partition())])[0].offset == msg.offset() + 1
    assert c.memberid() == member and len(c.assignment()) == 2 and not revoked
    assert len(drain(c, 19)) == 19


def test_past_max_poll_interval_the_member_leaves_and_hands_out_nothing_it_held(producer, consumer, make_topic,
                                                                               admin):
    topic = make_topic(1)
    p = producer()
    for i in range(200):
        p.produce(topic, b"%d" % i)
    assert p.flush(10) == 0
    lost = []
    c = consumer(**{"group.id": "stalled", **FAST_GROUP, "max.poll.interval.ms": 500})
    c.subscribe([topic], on_lost=lambda consumer, parts: lost.append(parts))
    first = _first_record(c)
    member = c.memberid()
    time.sleep(0.6)  # the stall: no poll for longer than max.poll.interval.ms (500 ms)
    # Only once the heartbeat thread has left the group does the next poll have anything to
    # report (a poll before that would count as in time).
    wait_until(lambda: not admin.describe_consumer_groups(["stalled"])["stalled"].result(5).members,
               interval=0.05, message="the heartbeat thread to leave the group")
    msg = c.poll(5)
    assert msg is not None and msg.error() is not None, msg
    assert msg.error().code() == KafkaError._MAX_POLL_EXCEEDED
    assert lost == [[TopicPartition(topic, 0)]]
    # It joins again as a new member and reads on from its position (nothing was committed).
    again = _first_record(c)
    assert c.memberid() not in (None, member)
    assert again.offset() in (0, first.offset() + 1)


def test_a_rebalance_during_consume_hands_out_no_record_of_a_partition_it_took_away(producer, consumer, make_topic):
    """consume(1000, 3) takes the prefetched records, then waits for more while a second member
    joins. The records it holds were taken while all three partitions were its own: it hands
    them out before acting on the rebalance, never after on_revoke took their partitions away."""
    topic = make_topic(3)
    p = producer()
    for i in range(60):
        p.produce(topic, b"%d" % i, partition=i % 3)
    assert p.flush(10) == 0
    owned, revokes = set(), []

    def on_assign(consumer, parts):
        owned.update(tp.partition for tp in parts)

    def on_revoke(consumer, parts):
        owned.difference_update(tp.partition for tp in parts)
        revokes.append(parts)

    a = consumer(**{"group.id": "mid-call", **FAST_GROUP})
    a.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
    _first_record(a)
    assert owned == {0, 1, 2}

    stop = threading.Event()
    b = consumer(**{"group.id": "mid-call", **FAST_GROUP})
    b.subscribe([topic])

    def poll_b():
        while not stop.is_set():
            b.poll(0.05)

    thread = threading.Thread(target=poll_b, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not (revokes and owned and len(owned) < 3):
            assert time.monotonic() < deadline, "the second member's join never rebalanced the first"
            for m in a.consume(1000, 3.0):
                if m.error() is None:
                    assert m.partition() in owned, \
                        f"consume() returned partition {m.partition()} after it was revoked (owned {owned})"
    finally:
        stop.set()
        thread.join(10)
