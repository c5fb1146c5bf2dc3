"""Producing and consuming as a confluent-kafka program does: order, keys, replay, EOF, long poll."""

import threading
import time
import zlib

import pytest
from harness import wait_until
from log_client_helpers import drain

from clients.log import (OFFSET_BEGINNING, Producer, KafkaError, KafkaException, TopicPartition, TIMESTAMP_CREATE_TIME)


def test_delivery_reports_carry_offsets_in_order(producer, make_topic):
    topic = make_topic(1)
    p = producer(**{"linger.ms": 2})
    reports = []
    for i in range(250):
        p.produce(topic, value=f"v{i}", on_delivery=lambda err, msg: reports.append((err, msg)))
    assert len(p) == 250
    assert p.flush(10) == 0
    assert len(p) == 0
    assert [e for e, _ in reports] == [None] * 250
    assert [m.offset() for _, m in reports] == list(range(250))
    assert [m.value() for _, m in reports] == [f"v{i}".encode() for i in range(250)]
    assert {m.topic() for _, m in reports} == {topic}


def test_config_on_delivery_and_poll_serves_reports(producer, make_topic):
    topic = make_topic(1)
    seen = []
    p = producer(on_delivery=lambda err, msg: seen.append(msg.offset()), **{"linger.ms": 0})
    p.produce(topic, b"a")
    p.produce(topic, b"b")
    deadline = time.monotonic() + 10
    served = 0
    while served < 2 and time.monotonic() < deadline:
        served += p.poll(0.5)
    assert served == 2 and seen == [0, 1]


def test_order_per_partition_and_key(producer, consumer, make_topic):
    topic = make_topic(4)
    p = producer(**{"batch.num.messages": 7})  # many small batches, many requests in flight
    keys = [f"user-{k}" for k in range(10)]
    for i in range(600):
        p.produce(topic, value=str(i), key=keys[i % 10])
    assert p.flush(10) == 0
    c = consumer(**{"group.id": "order"})
    c.subscribe([topic])
    msgs = drain(c, 600)
    by_key, by_partition = {}, {}
    for m in msgs:
        by_key.setdefault(m.key(), []).append(int(m.value()))
        by_partition.setdefault(m.partition(), []).append(m.offset())
        # librdkafka's default partitioner (consistent_random: CRC32 of the key) places it here.
        assert m.partition() == zlib.crc32(m.key()) % 4
    for k, values in by_key.items():
        assert values == sorted(values), f"key {k} out of order"
        assert len(values) == 60
    for offsets in by_partition.values():
        assert offsets == list(range(len(offsets)))


def test_keyless_records_spread_over_partitions_in_sticky_batches(producer, consumer, make_topic):
    topic = make_topic(3)
    p = producer(**{"batch.num.messages": 50, "linger.ms": 1000})
    for i in range(600):
        p.produce(topic, value=str(i))
    assert p.flush(10) == 0
    c = consumer()
    c.assign([TopicPartition(topic, i, OFFSET_BEGINNING) for i in range(3)])
    msgs = drain(c, 600)
    counts = {}
    for m in msgs:
        counts[m.partition()] = counts.get(m.partition(), 0) + 1
    assert len(counts) >= 2, counts  # 12 batches of 50 over 3 partitions, never all on one
    assert all(n % 50 == 0 for n in counts.values()), counts  # whole batches stick together


def test_message_fields_headers_timestamp_and_str_encoding(producer, consumer, make_topic):
    topic = make_topic(1)
    p = producer()
    before = int(time.time() * 1000)
    p.produce(topic, value="héllo", key="k", headers=[("h1", b"x"), ("h2", "y")])
    p.produce(topic, value=None, key=b"tombstone", timestamp=1_600_000_000_000)
    p.produce(topic, b"bytes", headers={"a": b"1"})
    assert p.flush(10) == 0
    c = consumer()
    c.assign([TopicPartition(topic, 0, 0)])
    m1, m2, m3 = drain(c, 3)
    assert (m1.value(), m1.key(), m1.topic(), m1.partition(), m1.offset()) == ("héllo".encode(), b"k", topic, 0, 0)
    assert m1.headers() == [("h1", b"x"), ("h2", b"y")]
    kind, ts = m1.timestamp()
    assert kind == TIMESTAMP_CREATE_TIME and before - 5000 <= ts <= int(time.time() * 1000) + 5000
    assert m1.error() is None and len(m1) == len("héllo".encode())
    assert m2.value() is None and m2.timestamp() == (TIMESTAMP_CREATE_TIME, 1_600_000_000_000)
    assert m3.headers() == [("a", b"1")]


def test_produce_rejects_bad_input_clearly(producer, make_topic):
    topic = make_topic(2)
    p = producer()
    with pytest.raises(TypeError):
        p.produce(topic, value=12345)
    with pytest.raises(KafkaException) as exc:
        p.produce(topic, b"x", partition=7)
    assert exc.value.args[0].code() == KafkaError._UNKNOWN_PARTITION
    p.produce(topic, b"still fine")
    assert p.flush(10) == 0


def test_first_produce_to_a_new_topic_creates_it_when_the_server_allows(producer, admin):
    p = producer()
    reports = []
    p.produce("created-on-first-use", b"x", on_delivery=lambda err, msg: reports.append((err, msg)))
    assert p.flush(10) == 0
    [(err, msg)] = reports
    assert err is None and msg.offset() == 0
    assert "created-on-first-use" in admin.list_topics().topics


def test_unknown_topic_reported_through_delivery_callback_when_auto_create_is_off(start_minilog):
    server = start_minilog(auto_create_topics=False)
    p = Producer({"bootstrap.servers": f"{server.host}:{server.port}", "linger.ms": 1})
    try:
        errors = []
        p.produce("no-such-topic-xyz", b"x", on_delivery=lambda err, msg: errors.append(err))
        assert p.flush(10) == 0
        assert len(errors) == 1 and errors[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    finally:
        p.close(5)


def test_replay_from_zero_and_from_timestamp_after_reading_everything(producer, consumer, make_topic):
    topic = make_topic(1)
    p = producer()
    for i in range(100):
        p.produce(topic, value=str(i), timestamp=1_700_000_000_000 + i * 1000)
    assert p.flush(10) == 0
    c = consumer(**{"group.id": "replayer"})
    c.subscribe([topic])
    first = drain(c, 100)
    assert [int(m.value()) for m in first] == list(range(100))
    assert c.poll(0.2) is None  # at the end
    tp = TopicPartition(topic, 0)
    c.seek(TopicPartition(topic, 0, 0))
    again = drain(c, 100)
    assert [m.offset() for m in again] == list(range(100))
    # From a timestamp: offsets_for_times then seek.
    (found,) = c.offsets_for_times([TopicPartition(topic, 0, 1_700_000_000_000 + 42_500)])
    assert found.offset == 43
    c.seek(found)
    tail = drain(c, 57)
    assert [int(m.value()) for m in tail] == list(range(43, 100))
    assert c.position([tp])[0].offset == 100
    # Past the last record: -1, as Kafka answers.
    (late,) = c.offsets_for_times([TopicPartition(topic, 0, 1_800_000_000_000)])
    assert late.offset == -1
    # A second consumer can start at a timestamp's offset with assign().
    c2 = consumer()
    c2.assign([TopicPartition(topic, 0, found.offset)])
    assert [int(m.value()) for m in drain(c2, 57)] == list(range(43, 100))


def test_watermarks(producer, consumer, make_topic):
    topic = make_topic(1)
    p = producer()
    for i in range(5):
        p.produce(topic, b"x")
    p.flush(10)
    c = consumer()
    assert c.get_watermark_offsets(TopicPartition(topic, 0)) == (0, 5)


def test_partition_eof_once_per_catch_up(producer, consumer, make_topic):
    topic = make_topic(2)
    p = producer()
    for i in range(3):
        p.produce(topic, str(i), partition=0)
    p.flush(10)
    c = consumer(**{"enable.partition.eof": True})
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING), TopicPartition(topic, 1, OFFSET_BEGINNING)])
    data, eofs = [], []
    deadline = time.monotonic() + 10
    while len(eofs) < 2 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            assert m.error().code() == KafkaError._PARTITION_EOF
            eofs.append((m.partition(), m.offset()))
        else:
            data.append(m.offset())
    assert data == [0, 1, 2]
    assert sorted(eofs) == [(0, 3), (1, 0)]
    assert c.poll(0.3) is None  # EOF is reported once, not on every empty fetch
    p.produce(topic, b"more", partition=1)
    p.flush(10)
    m = c.poll(5)
    assert m is not None and m.error() is None and m.value() == b"more"
    m = c.poll(5)
    assert m is not None and m.error().code() == KafkaError._PARTITION_EOF and m.offset() == 1


def test_long_poll_delivers_a_later_record_promptly(producer, consumer, make_topic, minilog_server):
    topic = make_topic(1)
    # A long max wait, so that "woken by the append" and "answered at max_wait" stay seconds
    # apart however loaded the machine is.
    c = consumer(**{"fetch.wait.max.ms": 20_000})
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    assert c.poll(0.3) is None  # waiting at the end: the fetch is parked on the server
    got = {}

    def wait():
        got["msg"] = c.poll(30)
        got["at"] = time.monotonic()

    t = threading.Thread(target=wait)
    t.start()
    # The record must find a fetch parked on the server: only a wake-up on append answers it
    # before max_wait. (Whether the thread is inside poll() yet does not matter: the assertion
    # is on how soon the record arrives after it is sent.)
    wait_until(lambda: len(minilog_server.server.broker.waiters) > 0, message="a fetch parked on the server")
    p = producer(**{"linger.ms": 0})
    sent = time.monotonic()
    p.produce(topic, b"late")
    p.flush(10)
    t.join(30)
    assert got["msg"] is not None and got["msg"].value() == b"late"
    assert got["at"] - sent < 10, "a parked fetch must answer when data arrives, not at max_wait_ms (20 s)"


def test_consume_batches_and_len(producer, consumer, make_topic):
    topic = make_topic(1)
    p = producer()
    for i in range(1000):
        p.produce(topic, b"%d" % i)
    p.flush(10)
    c = consumer()
    c.assign([TopicPartition(topic, 0, 0)])
    msgs = []
    deadline = time.monotonic() + 10
    while len(msgs) < 1000 and time.monotonic() < deadline:
        batch = c.consume(300, 1.0)
        assert len(batch) <= 300
        msgs += batch
    assert [int(m.value()) for m in msgs] == list(range(1000))


def test_linger_zero_holds_records_behind_an_unanswered_request_and_poll_releases_them(
        producer, consumer, make_topic):
    # linger.ms 0: the first record leaves at once; those produced while its reply is
    # outstanding gather in the next batch. poll() alone (no flush) must send that batch
    # and serve every report, in order.
    topic = make_topic(1)
    offsets = []
    p = producer(on_delivery=lambda err, msg: offsets.append((err, msg.offset())), **{"linger.ms": 0})
    for i in range(2000):
        p.produce(topic, b"%d" % i)
    deadline = time.monotonic() + 20
    while len(offsets) < 2000 and time.monotonic() < deadline:
        p.poll(0.5)
    assert offsets == [(None, i) for i in range(2000)]
    assert len(p) == 0
    c = consumer()
    c.assign([TopicPartition(topic, 0, 0)])
    assert [int(m.value()) for m in drain(c, 2000)] == list(range(2000))


def test_linger_zero_sends_each_of_a_few_records_at_once_without_a_later_call(producer, consumer, make_topic):
    # linger.ms 0 holds records only behind four unanswered requests (Producer._held): three
    # records produced back to back are each on the wire when produce() returns, although the
    # producer is never called again (a window of one request held the second and third until
    # the program's next call).
    topic = make_topic(1)
    c = consumer()
    c.assign([TopicPartition(topic, 0, 0)])
    p = producer(**{"linger.ms": 0})
    for i in range(3):
        p.produce(topic, b"%d" % i)
    assert [int(m.value()) for m in drain(c, 3)] == [0, 1, 2]
    assert p.flush(10) == 0


def test_pause_resume(producer, consumer, make_topic):
    topic = make_topic(1)
    p = producer()
    for i in range(10):
        p.produce(topic, b"%d" % i)
    p.flush(10)
    c = consumer()
    tp = TopicPartition(topic, 0, 0)
    c.assign([tp])
    first = drain(c, 3)
    c.pause([tp])
    assert c.consume(10, 0.3) == []
    c.resume([tp])
    rest = drain(c, 7)
    assert [int(m.value()) for m in first + rest] == list(range(10))


def test_acks_zero_and_all(producer, consumer, make_topic):
    topic = make_topic(1)
    p0 = producer(acks=0)
    pall = producer(acks="all")
    for i in range(50):
        p0.produce(topic, b"zero")
    assert p0.flush(10) == 0
    offsets = []
    for i in range(50):
        pall.produce(topic, b"all", on_delivery=lambda e, m: offsets.append(m.offset()))
    assert pall.flush(10) == 0
    assert offsets == list(range(50, 100))
    c = consumer()
    c.assign([TopicPartition(topic, 0, 0)])
    assert len(drain(c, 100)) == 100


def test_buffer_error_when_queue_full_then_poll_frees_it(producer, make_topic):
    topic = make_topic(1)
    p = producer(**{"queue.buffering.max.messages": 100, "linger.ms": 10_000, "batch.num.messages": 1000})
    for i in range(100):
        p.produce(topic, b"x")
    # The first attempt sends what lingers and takes whatever acks are there; a full queue
    # still says BufferError, as confluent-kafka does, until poll() serves the reports.
    deadline = time.monotonic() + 10
    while True:
        try:
            p.produce(topic, b"y")
            break
        except BufferError:
            assert time.monotonic() < deadline
            p.poll(0.1)
    assert p.flush(10) == 0


def test_batches_stay_under_the_servers_limit_and_oversized_records_are_refused(producer, consumer, make_topic):
    topic = make_topic(1)
    # batch.size above what the server takes: batches are still cut to fit max.message.bytes.
    p = producer(**{"batch.size": 8_000_000, "batch.num.messages": 1_000_000, "linger.ms": 10_000})
    errors = []
    sizes = [100, 300_000, 100, 900_000, 50, 500_000] * 3 + [100] * 20_000
    for n in sizes:
        p.produce(topic, b"z" * n, on_delivery=lambda err, msg: err is not None and errors.append(err))
    assert p.flush(20) == 0 and errors == []
    with pytest.raises(KafkaException) as exc:
        p.produce(topic, b"z" * 2_000_000)
    assert exc.value.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE
    c = consumer(**{"max.partition.fetch.bytes": 2_000_000})
    c.assign([TopicPartition(topic, 0, 0)])
    got = drain(c, len(sizes), timeout=20)
    assert [len(m.value()) for m in got] == sizes
