"""One consumer group, a real confluent-kafka consumer and this project's msgpack consumer: the
partitions are split between them, each client reading the other's subscription and assignment
in its own layout (the core translates them, minilog/consumer_protocol.py)."""

import pytest

from harness import wait_until

ck = pytest.importorskip("confluent_kafka", reason="confluent-kafka is in the test extra")


def _poll_into(consumer, seen, timeout=0.2):
    m = consumer.poll(timeout)
    if m is not None and m.error() is None:
        seen.append((m.partition(), m.offset()))


def test_a_group_of_a_kafka_consumer_and_a_msgpack_consumer_shares_the_partitions(kafka_minilog):
    from clients.log import AdminClient, Consumer as MinilogConsumer, NewTopic, Producer as MinilogProducer
    native = f"127.0.0.1:{kafka_minilog.port}"
    admin = AdminClient({"bootstrap.servers": native})
    admin.create_topics([NewTopic("mixed", num_partitions=4, replication_factor=1)])["mixed"].result(10)
    admin.close()
    p = MinilogProducer({"bootstrap.servers": native, "linger.ms": 1})
    for part in range(4):
        for i in range(5):
            p.produce("mixed", value=b"p%d-%d" % (part, i), partition=part)
    p.flush(10)
    p.close(5)

    # The msgpack consumer joins first and leads; the Kafka consumer's subscription reaches it
    # translated, and its assignment goes back in Kafka's layout.
    ours = MinilogConsumer({"bootstrap.servers": native, "group.id": "mixed-group", "auto.offset.reset": "earliest",
                            "session.timeout.ms": 6000, "partition.assignment.strategy": "range"})
    ours.subscribe(["mixed"])
    seen_ours, seen_kafka = [], []
    wait_until(lambda: _poll_into(ours, seen_ours) or len(seen_ours) >= 20, timeout=20,
               message="the msgpack consumer alone gets every partition")
    theirs = ck.Consumer({"bootstrap.servers": kafka_minilog.bootstrap, "group.id": "mixed-group",
                          "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
                          "partition.assignment.strategy": "range", "enable.auto.commit": False})
    theirs.subscribe(["mixed"])

    def split():
        _poll_into(ours, seen_ours, 0.05)
        _poll_into(theirs, seen_kafka, 0.05)
        return len(theirs.assignment()) == 2 and len(ours.assignment()) == 2
    wait_until(split, timeout=30, message="the four partitions split two and two across the protocols")
    mine = {tp.partition for tp in ours.assignment()}
    kafka_side = {tp.partition for tp in theirs.assignment()}
    assert mine | kafka_side == {0, 1, 2, 3} and not mine & kafka_side
    theirs.close()
    ours.close()
