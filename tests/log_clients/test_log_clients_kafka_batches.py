"""Records that Kafka clients produce, read by this project's confluent-style client over the msgpack
protocol (and the other way round), through a real server.

The Kafka batches enter through the core (`LogBroker.produce(..., fmt=KAFKA)`) as the Kafka
front door hands them over; what is tested is the server's storage and conversion, seen from
real msgpack-protocol clients: key, value, headers, timestamp and offset intact.
"""

from clients import kafka_batch as kb
from clients.log import TopicPartition
from log_client_helpers import drain
from minilog.batch_formats import KAFKA


def kafka_produce(server, topic, records, **kw):
    return server.call(lambda: server.server.broker.produce([[topic, 0, kb.build_batch(records, **kw)]], fmt=KAFKA))


def test_kafka_records_read_through_the_msgpack_consumer(minilog_server, make_topic, consumer):
    topic = make_topic()
    kafka_produce(minilog_server, topic, [(b"k0", b"v0", 1_700_000_000_000, [("trace", b"abc"), ("none", None)]),
                                          (None, b"v1", 1_700_000_000_005, None)])
    kafka_produce(minilog_server, topic, [(b"k2", b"zipped" * 50, 1_700_000_000_010, None)], compression=kb.GZIP)
    c = consumer(**{"group.id": "kafka-batches"})
    c.assign([TopicPartition(topic, 0, 0)])
    got = drain(c, 3)
    assert [m.offset() for m in got] == [0, 1, 2]
    assert [m.key() for m in got] == [b"k0", None, b"k2"]
    assert [m.value() for m in got] == [b"v0", b"v1", b"zipped" * 50]
    assert [m.timestamp()[1] for m in got] == [1_700_000_000_000, 1_700_000_000_005, 1_700_000_000_010]
    assert list(got[0].headers()) == [("trace", b"abc"), ("none", None)]


def test_msgpack_records_read_in_kafka_format(minilog_server, make_topic, producer):
    topic = make_topic()
    p = producer()
    p.produce(topic, b"ours", key=b"k", partition=0, timestamp=1_700_000_000_123, headers=[("h", b"1")])
    p.flush(10)
    kafka_produce(minilog_server, topic, [(b"theirs", b"v", 1_700_000_000_200, None)])
    rows, _ = minilog_server.call(lambda: minilog_server.server.broker.read([(topic, 0, 0, 1 << 20)], 1 << 20, 1, KAFKA))
    records = kb.decode_batches(rows[0][5] if isinstance(rows[0][5], bytes) else rows[0][5].read())
    assert records == [(0, 1_700_000_000_123, b"k", b"ours", (("h", b"1"),)),
                       (1, 1_700_000_000_200, b"theirs", b"v", None)]
