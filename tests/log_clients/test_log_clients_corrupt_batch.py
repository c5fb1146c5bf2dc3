"""A fetched batch whose CRC is wrong: the consumer reports it at the batch's offset.

The batch is corrupted on disk after the server stored it (the server checks CRCs when a
batch is produced, not when it is read back, as Kafka). With `check.crcs` on, the consumer
hands out the records before the bad batch, then one error naming the batch's offset, and
stops there: its position stays at the bad batch, so a commit never moves past it. With
`check.crcs` off (librdkafka's default) it reports the error the same way and skips exactly
that batch. Never silently, and never more than that batch.
"""

import glob
import os
import time

from clients.log import KafkaError, TopicPartition
from clients.record_batch import HEADER_SIZE, read_header


def _three_batches(producer, topic):
    p = producer(**{"linger.ms": 10_000})
    for b in range(3):
        for i in range(10):
            p.produce(topic, b"batch%d-%d" % (b, i), partition=0)
        assert p.flush(10) == 0  # one batch per flush


def _corrupt_second_batch(server, topic):
    [path] = glob.glob(os.path.join(server.data_dir, "**", f"{topic}-0", "*.log"), recursive=True)
    with open(path, "r+b") as f:
        data = f.read()
        first = read_header(data, 0)
        assert (first.base_offset, first.record_count) == (0, 10)
        second = read_header(data, first.size)
        assert second.base_offset == 10
        where = first.size + HEADER_SIZE + 5  # a byte inside the second batch's records
        f.seek(where)
        f.write(bytes([data[where] ^ 0xFF]))


def _drain(consumer, want, timeout=10.0):
    """Poll until `want` messages (data or errors) came, then once more to see nothing follows."""
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < want and time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is not None:
            out.append(msg)
    extra = consumer.poll(0.3)
    if extra is not None:
        out.append(extra)
    return out


def test_a_corrupt_batch_is_reported_at_its_offset_and_stops_the_partition(producer, consumer, make_topic,
                                                                           minilog_server):
    topic = make_topic(1)
    _three_batches(producer, topic)
    _corrupt_second_batch(minilog_server, topic)
    c = consumer(**{"check.crcs": True, "group.id": "crc-on", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    got = _drain(c, 11)
    data = [m.offset() for m in got if m.error() is None]
    errors = [m for m in got if m.error() is not None]
    assert data == list(range(10))
    assert len(errors) == 1
    assert errors[0].error().code() == KafkaError._BAD_MSG and errors[0].offset() == 10
    assert c.position([TopicPartition(topic, 0)])[0].offset == 10
    c.commit(asynchronous=False)
    assert c.committed([TopicPartition(topic, 0)])[0].offset == 10
    c.seek(TopicPartition(topic, 0, 20))  # the application may step over it
    assert [m.offset() for m in _drain(c, 10) if m.error() is None] == list(range(20, 30))


def test_without_check_crcs_exactly_the_corrupt_batch_is_skipped_and_reported(producer, consumer, make_topic,
                                                                             minilog_server):
    topic = make_topic(1)
    _three_batches(producer, topic)
    _corrupt_second_batch(minilog_server, topic)
    c = consumer(**{"check.crcs": False})
    c.assign([TopicPartition(topic, 0, 0)])
    got = _drain(c, 21)
    assert [m.offset() for m in got if m.error() is None] == list(range(10)) + list(range(20, 30))
    errors = [m for m in got if m.error() is not None]
    assert len(errors) == 1 and errors[0].offset() == 10
    assert [m.offset() for m in got].index(10) == 10  # reported where the batch was, in order


async def test_the_asyncio_consumer_reports_it_in_order_and_stops_there(producer, make_topic, minilog_server,
                                                                         bootstrap):
    from clients.aio_log import AIOKafkaConsumer
    from clients.aio_log import TopicPartition as AioTP
    from clients.aio_log.errors import KafkaError as AioKafkaError
    topic = make_topic(1)
    _three_batches(producer, topic)
    _corrupt_second_batch(minilog_server, topic)
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await c.start()
    try:
        tp = AioTP(topic, 0)
        c.assign([tp])
        got = []
        deadline = time.monotonic() + 10
        while len(got) < 10:
            assert time.monotonic() < deadline
            got += (await c.getmany(timeout_ms=200)).get(tp, [])
        assert [r.offset for r in got] == list(range(10))
        import pytest
        with pytest.raises(AioKafkaError, match="at offset 10"):
            for _ in range(50):
                await c.getmany(timeout_ms=100)
        assert await c.getmany(timeout_ms=300) == {}  # stopped at the bad batch
        assert await c.position(tp) == 10
        c.seek(tp, 20)
        rest = []
        while len(rest) < 10:
            assert time.monotonic() < deadline + 10
            rest += (await c.getmany(timeout_ms=200)).get(tp, [])
        assert [r.offset for r in rest] == list(range(20, 30))
    finally:
        await c.stop()
