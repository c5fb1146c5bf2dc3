"""Consumer groups through the Kafka door: real librdkafka consumers join, rebalance as members
come and go, and the group is visible to the admin APIs."""

import time

import pytest

from harness import wait_until

ck = pytest.importorskip("confluent_kafka")
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

# Quick groups: short sessions and heartbeats so rebalances settle in well under a second.
QUICK_GROUP = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 100, "auto.offset.reset": "earliest",
               "topic.metadata.refresh.interval.ms": 1000}


def _create(bootstrap, topic, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        f.result(15)
    return admin


def _assignments(consumers) -> list[set]:
    for c in consumers:
        c.poll(0.05)
    return [{tp.partition for tp in c.assignment()} for c in consumers]


def _settled(consumers, partitions: int):
    got = _assignments(consumers)
    everything = set().union(*got)
    return all(got) and everything == set(range(partitions)) and sum(map(len, got)) == partitions


def test_three_members_share_the_partitions_and_rebalance_as_they_join_and_leave(bootstrap):
    admin = _create(bootstrap, "rides", 6)
    conf = dict(QUICK_GROUP, **{"bootstrap.servers": bootstrap, "group.id": "dispatch"})
    consumers = []
    try:
        for _ in range(3):
            c = ck.Consumer(conf)
            c.subscribe(["rides"])
            consumers.append(c)
            wait_until(lambda: _settled(consumers, 6), timeout=30, interval=0.01,
                       message=f"{len(consumers)} members own all 6 partitions, each some")
        assert sorted(len(a) for a in _assignments(consumers)) == [2, 2, 2]

        group = admin.describe_consumer_groups(["dispatch"])["dispatch"].result(15)
        assert len(group.members) == 3 and str(group.state).endswith("STABLE")

        consumers.pop(0).close()   # LeaveGroup: the others take its partitions
        wait_until(lambda: _settled(consumers, 6), timeout=30, interval=0.01,
                   message="the two remaining members own all 6 partitions")
    finally:
        for c in consumers:
            c.close()


def test_a_kafka_leader_shares_partitions_with_a_msgpack_member(kafka_minilog):
    from clients.log import Consumer as MinilogConsumer
    bootstrap = kafka_minilog.bootstrap
    admin = _create(bootstrap, "mixed", 4)
    native = MinilogConsumer({"bootstrap.servers": f"127.0.0.1:{kafka_minilog.port}", "group.id": "mixed-group",
                              "session.timeout.ms": 6000, "heartbeat.interval.ms": 100,
                              "auto.offset.reset": "earliest"})
    kafka = ck.Consumer(dict(QUICK_GROUP, **{"bootstrap.servers": bootstrap, "group.id": "mixed-group"}))
    try:
        # The Kafka member joins first and leads, so its librdkafka assignor reads the msgpack
        # member's subscription translated by the core (test_kafka_mixed_groups.py has the
        # msgpack leader).
        kafka.subscribe(["mixed"])
        wait_until(lambda: kafka.poll(0.05) is None and len(kafka.assignment()) == 4, timeout=30,
                   message="the Kafka member alone owns the 4 partitions")
        native.subscribe(["mixed"])

        def owned():
            native.poll(0.05)
            kafka.poll(0.05)
            return ({tp.partition for tp in native.assignment()}, {tp.partition for tp in kafka.assignment()})

        def shared():
            a, b = owned()
            return a and b and not (a & b) and a | b == {0, 1, 2, 3}
        wait_until(shared, timeout=30, interval=0.01, message="both doors' members share the 4 partitions")
        group = admin.describe_consumer_groups(["mixed-group"])["mixed-group"].result(15)
        assert len(group.members) == 2
        assigned = sorted(tp.partition for m in group.members for tp in m.assignment.topic_partitions)
        assert assigned == [0, 1, 2, 3]   # the msgpack member's assignment described in Kafka's layout
    finally:
        kafka.close()
        native.close()
