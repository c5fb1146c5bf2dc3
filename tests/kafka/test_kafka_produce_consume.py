"""Records through the Kafka door with the real clients: produce and consume round trips
(confluent-kafka, aiokafka, kafka-python), headers, gzip, commits and resume, seek by offset
and by time, idempotent produce, and records shared with minilog's own protocol."""

import asyncio
import os
import time

import pytest

from harness import wait_until

ck = pytest.importorskip("confluent_kafka")
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType  # noqa: E402



def _create(bootstrap, topic, partitions=1):
    admin = AdminClient({"bootstrap.servers": bootstrap})   # kept alive until the results are in
    for f in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        f.result(15)


def _consume(consumer, n, timeout=20.0) -> list:
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        for m in consumer.consume(n - len(got), 0.2):
            assert m.error() is None, m.error()
            got.append(m)
    assert len(got) == n, f"got {len(got)} of {n} records"
    return got


def test_confluent_round_trip_keeps_keys_values_headers_and_offsets(bootstrap):
    p = ck.Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "compression.type": "gzip"})
    for i in range(500):
        p.produce("rides", key=f"driver-{i % 7}", value=f"position {i}", headers=[("trace", str(i).encode())])
    assert p.flush(15) == 0
    c = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": "billing", "auto.offset.reset": "earliest"})
    c.subscribe(["rides"])
    got = _consume(c, 500)
    assert [m.offset() for m in got] == list(range(500))
    assert got[42].key() == b"driver-0" and got[42].value() == b"position 42"
    assert got[42].headers() == [("trace", b"42")]
    c.close()


def test_commits_are_kept_and_a_new_member_resumes_after_them(bootstrap):
    _create(bootstrap, "resume")
    p = ck.Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
    for i in range(100):
        p.produce("resume", value=str(i))
    p.flush(15)
    conf = {"bootstrap.servers": bootstrap, "group.id": "resumers", "auto.offset.reset": "earliest",
            "enable.auto.commit": False}
    c = ck.Consumer(conf)
    c.subscribe(["resume"])
    got = _consume(c, 60)
    c.commit(message=got[-1], asynchronous=False)
    c.close()
    c = ck.Consumer(conf)
    c.subscribe(["resume"])
    rest = _consume(c, 40)
    assert rest[0].offset() == 60 and rest[-1].value() == b"99"
    committed = c.committed([ck.TopicPartition("resume", 0)], timeout=10)
    assert committed[0].offset == 60
    c.close()


def test_seek_by_offset_and_by_time(bootstrap):
    _create(bootstrap, "timeline")
    p = ck.Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    base = int(time.time() * 1000) - 100_000
    for i in range(50):
        p.produce("timeline", value=str(i), timestamp=base + i * 1000)
        p.flush(15)   # one batch per record, so the time index has something to find
    c = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": "seekers"})
    c.assign([ck.TopicPartition("timeline", 0, 30)])
    assert _consume(c, 1)[0].value() == b"30"
    found = c.offsets_for_times([ck.TopicPartition("timeline", 0, base + 20_500)], timeout=10)
    assert found[0].offset == 21
    c.seek(ck.TopicPartition("timeline", 0, found[0].offset))
    m = _consume(c, 1)[0]
    assert m.offset() == 21 and m.timestamp()[1] == base + 21_000
    low, high = c.get_watermark_offsets(ck.TopicPartition("timeline", 0), timeout=10)
    assert (low, high) == (0, 50)
    c.close()
    # ListOffsets by time also answers the found record's timestamp (librdkafka does not show
    # it; kafka-python does)
    from kafka import KafkaConsumer, TopicPartition
    kc = KafkaConsumer(bootstrap_servers=bootstrap)
    tp = TopicPartition("timeline", 0)
    found = kc.offsets_for_times({tp: base + 20_500})[tp]
    assert (found.offset, found.timestamp) == (21, base + 21_000)
    assert kc.offsets_for_times({tp: base + 60_000})[tp] is None
    kc.close()


def test_idempotent_producer_writes_each_record_once(bootstrap, kafka_minilog):
    p = ck.Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 2})
    for i in range(2000):
        p.produce("exactly-once", value=str(i))
    assert p.flush(15) == 0
    c = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": "checker", "auto.offset.reset": "earliest"})
    c.subscribe(["exactly-once"])
    values = [m.value() for m in _consume(c, 2000)]
    assert values == [str(i).encode() for i in range(2000)]
    assert c.consume(10, 0.5) == []   # nothing beyond: no duplicate was written
    c.close()


def test_aiokafka_round_trip(bootstrap):
    aiokafka = pytest.importorskip("aiokafka")

    async def run():
        producer = aiokafka.AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type="gzip")
        await producer.start()
        try:
            for i in range(100):
                await producer.send("aio", key=b"k", value=f"v{i}".encode(), headers=[("h", b"1")])
            await producer.flush()
        finally:
            await producer.stop()
        consumer = aiokafka.AIOKafkaConsumer("aio", bootstrap_servers=bootstrap, group_id="aio-group",
                                             auto_offset_reset="earliest")
        await consumer.start()
        try:
            got = []
            while len(got) < 100:
                batches = await asyncio.wait_for(consumer.getmany(timeout_ms=500), 20)
                for records in batches.values():
                    got.extend(records)
            await consumer.commit()
        finally:
            await consumer.stop()
        return got

    got = asyncio.run(run())
    assert [r.value for r in got] == [f"v{i}".encode() for i in range(100)]
    assert got[0].key == b"k" and list(got[0].headers) == [("h", b"1")] and got[-1].offset == 99


def test_kafka_python_round_trip(bootstrap):
    kafka = pytest.importorskip("kafka")
    producer = kafka.KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    for i in range(100):
        producer.send("kp", key=b"k", value=f"v{i}".encode())
    producer.flush(15)
    producer.close()
    consumer = kafka.KafkaConsumer("kp", bootstrap_servers=bootstrap, group_id="kp-group",
                                   auto_offset_reset="earliest", consumer_timeout_ms=10000)
    got = []
    for record in consumer:
        got.append(record)
        if len(got) == 100:
            break
    consumer.close()
    assert [r.value for r in got] == [f"v{i}".encode() for i in range(100)] and got[-1].offset == 99


def test_records_cross_between_the_two_protocols(kafka_minilog):
    from clients.log import Consumer as MinilogConsumer, Producer as MinilogProducer
    native = f"127.0.0.1:{kafka_minilog.port}"
    kafka = kafka_minilog.bootstrap
    mp = MinilogProducer({"bootstrap.servers": native, "linger.ms": 1})
    mp.produce("shared", key=b"from-msgpack", value=b"m0", headers=[("h", b"1")])
    mp.flush(10)
    mp.close(5)
    kp = ck.Producer({"bootstrap.servers": kafka})
    kp.produce("shared", key=b"from-kafka", value=b"k1", headers=[("h", b"2")])
    kp.flush(10)

    kc = ck.Consumer({"bootstrap.servers": kafka, "group.id": "x-kafka", "auto.offset.reset": "earliest"})
    kc.subscribe(["shared"])
    got = _consume(kc, 2)
    assert [(m.offset(), m.key(), m.value(), m.headers()) for m in got] == [
        (0, b"from-msgpack", b"m0", [("h", b"1")]), (1, b"from-kafka", b"k1", [("h", b"2")])]
    kc.close()

    mc = MinilogConsumer({"bootstrap.servers": native, "group.id": "x-native", "auto.offset.reset": "earliest"})
    mc.subscribe(["shared"])
    seen = []
    wait_until(lambda: seen.extend(m for m in [mc.poll(0.2)] if m is not None and m.error() is None)
               or len(seen) >= 2, timeout=20, message="both records through the msgpack protocol")
    assert [(m.offset(), m.key(), m.value()) for m in seen] == [(0, b"from-msgpack", b"m0"),
                                                                (1, b"from-kafka", b"k1")]
    mc.close()


def test_produce_requests_of_megabytes_in_a_row_read_back_intact(bootstrap):
    """Requests over 1 MiB are received into one reused buffer (KafkaFrameSplitter.recycle):
    every record of every request must still read back as produced."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic("big-batches", 1, 1,
                                           config={"max.message.bytes": str(8 << 20)})]).values():
        f.result(15)
    p = ck.Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.size": 4 << 20,
                     "message.max.bytes": 8 << 20})
    values = [bytes([i]) * (200 * 1024) for i in range(40)]
    for round_ in range(4):
        for v in values[round_ * 10:(round_ + 1) * 10]:
            p.produce("big-batches", v)
        assert p.flush(15) == 0
    c = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": "big", "auto.offset.reset": "earliest",
                     "fetch.max.bytes": 16 << 20, "max.partition.fetch.bytes": 16 << 20})
    c.subscribe(["big-batches"])
    got = _consume(c, 40)
    assert [m.value() for m in got] == values
    c.close()


def test_log_append_time_topics_stamp_records_from_both_doors_with_the_broker_clock(kafka_minilog):
    """message.timestamp.type=LogAppendTime: records from either protocol, sent with an old
    CreateTime, read back through both with the broker's time (Kafka's: the type too); the
    produce answer carries the stamp; DescribeConfigs shows the setting."""
    from clients.log import Consumer as MinilogConsumer, Producer as MinilogProducer
    native = f"127.0.0.1:{kafka_minilog.port}"
    kafka = kafka_minilog.bootstrap
    admin = AdminClient({"bootstrap.servers": kafka})
    for f in admin.create_topics([NewTopic("stamped", 1, 1, config={"message.timestamp.type": "LogAppendTime"}),
                                  NewTopic("created", 1, 1)]).values():
        f.result(15)
    bad = admin.create_topics([NewTopic("badly", 1, 1, config={"message.timestamp.type": "WallTime"})])
    with pytest.raises(ck.KafkaException):
        bad["badly"].result(15)
    resource = ConfigResource(ResourceType.TOPIC, "stamped")
    assert admin.describe_configs([resource])[resource].result(15)["message.timestamp.type"].value == "LogAppendTime"

    old = 1_000_000_000_000  # 2001: any stamp the broker gives is far later
    before = int(time.time() * 1000)
    mp = MinilogProducer({"bootstrap.servers": native, "linger.ms": 1})
    for topic in ("stamped", "created"):
        mp.produce(topic, value=b"m0", timestamp=old)
        mp.produce(topic, value=b"m1", timestamp=old + 5)
    mp.flush(10)
    mp.close(5)
    reports = []
    kp = ck.Producer({"bootstrap.servers": kafka, "linger.ms": 5})
    for topic in ("stamped", "created"):
        kp.produce(topic, value=b"k2", timestamp=old + 9, on_delivery=lambda err, msg: reports.append((err, msg)))
    assert kp.flush(10) == 0
    after = int(time.time() * 1000)
    stamped_report = [m for e, m in reports if m.topic() == "stamped"][0]
    kind, when = stamped_report.timestamp()
    assert kind == ck.TIMESTAMP_LOG_APPEND_TIME and before <= when <= after

    for topic, expect_stamped in (("stamped", True), ("created", False)):
        kc = ck.Consumer({"bootstrap.servers": kafka, "group.id": f"lat-{topic}", "auto.offset.reset": "earliest"})
        kc.subscribe([topic])
        got = _consume(kc, 3)
        kc.close()
        assert [m.value() for m in got] == [b"m0", b"m1", b"k2"]
        stamps = [m.timestamp()[1] for m in got]
        if expect_stamped:
            assert all(before <= t <= after for t in stamps), stamps
            assert got[2].timestamp()[0] == ck.TIMESTAMP_LOG_APPEND_TIME
        else:
            assert stamps == [old, old + 5, old + 9]

        mc = MinilogConsumer({"bootstrap.servers": native, "group.id": f"lat-n-{topic}",
                              "auto.offset.reset": "earliest"})
        mc.subscribe([topic])
        seen = []
        wait_until(lambda: seen.extend(m for m in [mc.poll(0.2)] if m is not None and m.error() is None)
                   or len(seen) >= 3, timeout=20, message=f"{topic} through the msgpack protocol")
        mc.close()
        native_stamps = [m.timestamp()[1] for m in seen]
        if expect_stamped:
            assert all(before <= t <= after for t in native_stamps), native_stamps
        else:
            assert native_stamps == [old, old + 5, old + 9]


def test_written_data_behind_the_drop_behind_window_is_on_disk_and_reads_back(start_minilog):
    """`--drop-behind-mib`: past each MiB produced the partition is fsynced off the loop and
    what lies further back leaves the page cache; a consumer from the start still gets it all."""
    from harness import resident_pages
    srv = start_minilog(kafka_port=0, drop_behind_bytes=1 << 20)
    bootstrap = f"127.0.0.1:{srv.server.listener('kafka').port}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic("behind", 1, 1)]).values():
        f.result(15)
    p = ck.Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    values = [bytes([i]) * (200 * 1024) for i in range(40)]
    for v in values:
        p.produce("behind", v)
    assert p.flush(15) == 0
    plog = srv.server.broker.topics.get_log("behind", 0)
    segment = plog.active_segment
    page = os.sysconf("SC_PAGE_SIZE")
    # acks=1 and no flush.* settings: only the drop-behind flushes put these records on disk.
    wait_until(lambda: plog.flushed_offset >= 30, 10)
    wait_until(lambda: not any(resident_pages(segment.log_path)[:(4 << 20) // page]), 10)
    c = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": "behind", "auto.offset.reset": "earliest"})
    c.subscribe(["behind"])
    got = _consume(c, 40)
    assert [m.value() for m in got] == values
    c.close()
