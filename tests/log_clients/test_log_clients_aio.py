"""The aiokafka-style clients against a real server: send, getmany, groups, seek, commit."""

import asyncio
import json
import time

import pytest
from harness import async_wait_until

from clients.aio_log import (AIOConsumer, AIOKafkaConsumer, AIOKafkaProducer, AIOProducer, CommitFailedError,
                             ConsumerRebalanceListener, RecordMetadata, TopicPartition)
from clients.aio_log.errors import MessageSizeTooLargeError


async def _collect(consumer, count, timeout=10.0):
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < count:
        assert time.monotonic() < deadline, f"got {len(out)} of {count} records"
        batch = await consumer.getmany(timeout_ms=200, max_records=count - len(out))
        for records in batch.values():
            out.extend(records)
    return out


async def test_send_and_wait_then_getmany(bootstrap, make_topic):
    topic = make_topic(2)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
    await producer.start()
    try:
        md = await producer.send_and_wait(topic, b"first", key=b"k", headers=[("h", b"v")])
        assert isinstance(md, RecordMetadata) and md.topic == topic and md.offset == 0
        futures = [await producer.send(topic, b"%d" % i, key=b"k") for i in range(200)]
        await producer.flush()
        offsets = [f.result().offset for f in futures]
        assert offsets == list(range(1, 201))  # same key, same partition, in order
        assert {f.result().partition for f in futures} == {md.partition}
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id="aio-g", auto_offset_reset="earliest",
                                heartbeat_interval_ms=100)
    await consumer.start()
    try:
        records = await _collect(consumer, 201)
        first = [r for r in records if r.offset == 0 and r.partition == md.partition][0]
        assert first.value == b"first" and first.key == b"k" and first.headers == (("h", b"v"),)
        assert first.topic == topic and first.timestamp > 0
        await consumer.commit()
        tp = TopicPartition(topic, md.partition)
        assert await consumer.committed(tp) == 201
        assert await consumer.position(tp) == 201
    finally:
        await consumer.stop()


async def test_async_iteration_serializers_and_seek(bootstrap, make_topic):
    topic = make_topic(1)
    async with AIOProducer(bootstrap_servers=bootstrap, value_serializer=lambda v: json.dumps(v).encode(),
                           key_serializer=str.encode) as producer:
        for i in range(20):
            await producer.send(topic, {"n": i}, key="k")
        await producer.flush()
    consumer = AIOConsumer(bootstrap_servers=bootstrap, value_deserializer=json.loads, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        seen = []
        async for record in consumer:
            seen.append(record.value["n"])
            if len(seen) == 20:
                break
        assert seen == list(range(20))
        consumer.seek(tp, 15)
        again = await _collect(consumer, 5)
        assert [r.value["n"] for r in again] == list(range(15, 20))
        await consumer.seek_to_beginning(tp)
        assert (await consumer.getone()).offset == 0
        assert await consumer.end_offsets([tp]) == {tp: 20}
        assert await consumer.beginning_offsets([tp]) == {tp: 0}
    finally:
        await consumer.stop()


async def test_getmany_waits_for_a_later_record(bootstrap, make_topic, minilog_server):
    topic = make_topic(1)
    # A long max wait, so that "woken by the append" and "answered at max_wait" stay seconds
    # apart however loaded the machine is.
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=20_000)
    await consumer.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        assert await consumer.getmany(timeout_ms=200) == {}

        async def later():
            # The record must find a fetch parked on the server: only a wake-up on append
            # answers it before max_wait.
            await async_wait_until(lambda: len(minilog_server.server.broker.waiters) > 0,
                                   message="a fetch parked on the server")
            await producer.send_and_wait(topic, b"late")
            return time.monotonic()
        task = asyncio.ensure_future(later())
        got = await consumer.getmany(timeout_ms=30_000)
        arrived = time.monotonic()
        sent = await task
        assert [r.value for rs in got.values() for r in rs] == [b"late"]
        assert arrived - sent < 10, "a parked fetch must answer when data arrives, not at max_wait (20 s)"
    finally:
        await producer.stop()
        await consumer.stop()


async def test_group_of_two_splits_and_rebalances_with_listener(bootstrap, make_topic):
    topic = make_topic(4)
    events = []

    class Listener(ConsumerRebalanceListener):
        def __init__(self, name):
            self.name = name

        async def on_partitions_assigned(self, assigned):
            events.append((self.name, "assigned", len(assigned)))

        def on_partitions_revoked(self, revoked):
            events.append((self.name, "revoked", len(revoked)))

    conf = dict(bootstrap_servers=bootstrap, group_id="aio-split", auto_offset_reset="earliest",
                heartbeat_interval_ms=100, session_timeout_ms=3000)
    a = AIOKafkaConsumer(**conf)
    b = AIOKafkaConsumer(**conf)
    await a.start()
    await b.start()
    try:
        a.subscribe([topic], listener=Listener("a"))
        await async_wait_until(lambda: len(a.assignment()) == 4, timeout=20, interval=0.02,
                               message="a to own all 4 partitions")
        b.subscribe([topic], listener=Listener("b"))
        await async_wait_until(lambda: len(a.assignment()) == 2 and len(b.assignment()) == 2, timeout=20,
                               interval=0.02, message="a and b to own 2 partitions each")
        assert a.assignment() | b.assignment() == {TopicPartition(topic, p) for p in range(4)}
        assert ("a", "revoked", 4) in events and ("b", "assigned", 2) in events
        async with AIOKafkaProducer(bootstrap_servers=bootstrap) as producer:
            for p in range(4):
                for i in range(10):
                    await producer.send(topic, b"%d" % i, partition=p)
        got_a, got_b = await asyncio.gather(_collect(a, 20), _collect(b, 20))
        assert sorted((r.partition, r.offset) for r in got_a + got_b) == [(p, o) for p in range(4) for o in range(10)]
    finally:
        await b.stop()
        await a.stop()


async def test_commit_from_a_consumer_outside_an_active_group_fails(bootstrap, make_topic):
    topic = make_topic(1)
    member = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id="aio-busy", heartbeat_interval_ms=100)
    await member.start()
    outsider = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id="aio-busy")
    await outsider.start()
    try:
        await async_wait_until(member.assignment, timeout=10, interval=0.02, message="the member's assignment")
        outsider.assign([TopicPartition(topic, 0)])
        with pytest.raises(CommitFailedError):
            await outsider.commit({TopicPartition(topic, 0): 1})
    finally:
        await outsider.stop()
        await member.stop()


async def test_seek_into_the_middle_of_a_batch(bootstrap, make_topic):
    topic = make_topic(1)
    async with AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=50) as producer:
        futures = [await producer.send(topic, b"%d" % i) for i in range(50)]
        await producer.flush()
    assert [f.result().offset for f in futures] == list(range(50))
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, 37)  # inside the single batch of 50: its head is skipped
        records = await _collect(consumer, 13)
        assert [r.offset for r in records] == list(range(37, 50))
        assert [r.value for r in records] == [b"%d" % i for i in range(37, 50)]
        assert records[0].serialized_value_size == 2
    finally:
        await consumer.stop()


async def test_send_futures_behave_like_asyncio_futures(bootstrap, make_topic):
    # send()'s fast path returns per-record views of one future per batch; every way a
    # program may wait on aiokafka's futures must still give each record its own metadata.
    topic = make_topic(1)
    async with AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1000) as producer:
        before = time.time_ns() // 1_000_000
        futures = [await producer.send(topic, b"v%d" % i) for i in range(100)]  # about 9 batches
        stamped = await producer.send(topic, b"old", timestamp_ms=1_000_000)
        called = []
        futures[7].add_done_callback(lambda f: called.append(f.result().offset))
        gathered = await asyncio.gather(*futures)
        assert [m.offset for m in gathered] == list(range(100))
        assert all(isinstance(m, RecordMetadata) and m.topic == topic and m.partition == 0 for m in gathered)
        assert all(before <= m.timestamp <= time.time_ns() // 1_000_000 for m in gathered)
        done, pending = await asyncio.wait(futures[:10])
        assert len(done) == 10 and not pending
        assert (await asyncio.wait_for(futures[42], 10)).offset == 42
        assert (await stamped).timestamp == 1_000_000 and (await stamped).offset == 100
        assert futures[3].done() and not futures[3].cancelled() and futures[3].exception() is None
        await async_wait_until(lambda: called, 10, message="the done callback")  # runs in a later loop turn
        assert called == [7]


async def test_a_rejected_batch_fails_each_of_its_records(bootstrap, make_topic):
    topic = make_topic(1, config={"max.message.bytes": "2000"})
    async with AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=100_000) as producer:
        futures = [await producer.send(topic, b"x" * 100) for _ in range(50)]  # one batch of ~5,800 bytes
        results = await asyncio.gather(*futures, return_exceptions=True)
        assert all(isinstance(r, Exception) for r in results), results[:3]
        with pytest.raises(Exception):
            futures[0].result()
        assert futures[0].exception() is results[0]


async def test_batches_never_pass_max_batch_size_and_oversized_records_are_refused(bootstrap, make_topic):
    # aiokafka starts a new batch for a record that would take the open one past
    # max_batch_size. Closing a batch only once it had passed the size sent 16 x 64 KiB
    # records (1,048,832 bytes) in one request, which the server refuses (max 1 MiB).
    topic = make_topic(1)
    record = b"r" * 65536
    async with AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=50, max_batch_size=1_000_000) as producer:
        futures = [await producer.send(topic, record, partition=0) for _ in range(40)]
        results = await asyncio.gather(*futures, return_exceptions=True)
        assert [r.offset for r in results] == list(range(40)), results[:3]
        with pytest.raises(MessageSizeTooLargeError):
            await producer.send(topic, b"x" * (1048576 + 1))


async def test_stop_ends_even_when_a_heartbeat_swallows_its_cancel(bootstrap, make_topic, monkeypatch):
    # Python 3.11's asyncio.wait_for can lose a cancel that lands as the awaited reply arrives
    # (fixed in 3.12). A heartbeat loop that then went on would keep stop() waiting for ever:
    # here every heartbeat swallows its cancel, and stop() must still finish.
    topic = make_topic(1)
    member = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id="aio-lost-cancel", heartbeat_interval_ms=20)
    await member.start()
    call = member._conn.call
    in_heartbeat = []

    async def heartbeat_that_swallows_cancel(op, args=None, timeout=30.0):
        if op != "heartbeat":
            return await call(op, args, timeout)
        in_heartbeat.append(True)
        try:
            await asyncio.sleep(0.5)   # a slow round trip: stop()'s cancel lands in it
            return await call(op, args, timeout)
        except asyncio.CancelledError:
            return {}   # as wait_for does when the reply won the race
        finally:
            in_heartbeat.pop()

    monkeypatch.setattr(member._conn, "call", heartbeat_that_swallows_cancel)
    await async_wait_until(lambda: in_heartbeat, timeout=10, interval=0.005, message="a heartbeat under way")
    await asyncio.wait_for(member.stop(), 10)
