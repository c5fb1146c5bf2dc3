"""The common produce and send call forms take the producers' fast path, and land where the slow
path would put them (a real server; the fast path is the top of Producer.produce and of
AIOKafkaProducer.send, the slow path Producer._produce and AIOKafkaProducer._send)."""

import time

from log_client_helpers import counted, drain

from clients.aio_log import AIOKafkaConsumer, AIOKafkaProducer
from clients.log import TopicPartition
from clients.log.partitioner import KeyPartitioner


def test_every_common_produce_form_takes_the_fast_path(producer, consumer, make_topic):
    topic = make_topic(4)
    p = producer(**{"linger.ms": 60_000})  # batches stay open until flush()
    for part in range(4):  # a batch's first record opens it, on the slow path
        p.produce(topic, b"open", partition=part)
    slow = counted(p, "_produce")
    p.produce(topic, b"plain")
    p.produce(topic, b"partition", partition=1)
    p.produce(topic, b"key-partition", key=b"k", partition=2)
    p.produce(topic, b"key", key=b"some key")
    assert slow == []
    p.produce(topic, b"headers", partition=3, headers={"h": b"v"})  # a rarer form: the slow path
    assert len(slow) == 1
    assert p.flush(10) == 0
    c = consumer()
    c.assign([TopicPartition(topic, part, 0) for part in range(4)])
    got = {m.value(): (m.partition(), m.key()) for m in drain(c, 9) if m.value() != b"open"}
    key_partition = KeyPartitioner("consistent_random").partition(b"some key", 4)
    assert got[b"partition"] == (1, None) and got[b"key-partition"] == (2, b"k")
    assert got[b"key"] == (key_partition, b"some key") and got[b"headers"] == (3, None)
    assert got[b"plain"][1] is None


async def test_every_common_send_form_takes_the_fast_path(bootstrap, make_topic):
    topic = make_topic(4)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=60_000)
    await producer.start()
    try:
        for part in range(4):
            await producer.send(topic, b"open", partition=part)
        slow = counted(producer, "_send")
        futures = {b"plain": await producer.send(topic, b"plain"),
                   b"partition": await producer.send(topic, b"partition", partition=1),
                   b"key-partition": await producer.send(topic, b"key-partition", key=b"k", partition=2)}
        keyed = [await producer.send(topic, b"key-%d" % i, key=b"same key") for i in range(3)]
        assert slow == []
        await producer.send(topic, b"timestamp", partition=3, timestamp_ms=1_700_000_000_000)
        assert len(slow) == 1
        await producer.flush()
        metas = {v: f.result() for v, f in futures.items()}
        key_partition = KeyPartitioner("murmur2_random").partition(b"same key", 4)  # aiokafka's default
        assert metas[b"partition"].partition == 1 and metas[b"key-partition"].partition == 2
        assert [f.result().partition for f in keyed] == [key_partition] * 3
        offsets = [f.result().offset for f in keyed]
        assert offsets == list(range(offsets[0], offsets[0] + 3))  # one key, one partition, in order
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id="fast-path", auto_offset_reset="earliest")
    await consumer.start()
    try:
        records = {}
        deadline = time.monotonic() + 10
        while len(records) < 11:
            assert time.monotonic() < deadline, f"got {len(records)} of 11 records"
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                for r in batch:
                    records[(r.partition, r.offset)] = r
        by_value = {r.value: r for r in records.values()}
        assert by_value[b"key-partition"].key == b"k" and by_value[b"key-1"].key == b"same key"
        assert by_value[b"partition"].partition == 1 and by_value[b"timestamp"].timestamp == 1_700_000_000_000
    finally:
        await consumer.stop()


async def test_a_key_serializer_keeps_send_off_the_fast_path(bootstrap, make_topic):
    # aiokafka calls the key serializer on every record, a None key included.
    topic = make_topic(1)
    seen = []
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=60_000,
                                key_serializer=lambda k: seen.append(k) or b"serialized")
    await producer.start()
    try:
        await producer.send(topic, b"one")
        await producer.send(topic, b"two")
        await producer.flush()
    finally:
        await producer.stop()
    assert seen == [None, None]
