"""The pieces the clients build without a server: murmur2, batch rows, messages, errors."""

from unittest.mock import patch

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from clients.log import KafkaError, KafkaException, TopicPartition, message
from clients.log.partitioner import KeyPartitioner, murmur2
from clients.record_batch import HEADER_SIZE, pack_batch, decode_batch


def test_murmur2_matches_kafka_java_client_vectors():
    # From Kafka's UtilsTest (signed 32-bit results).
    vectors = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536,
               b"a-little-bit-longer-string": -1486304829,
               b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971, b"abc": 479470107}
    for key, expected in vectors.items():
        h = murmur2(key)
        assert (h - (1 << 32) if h >= 1 << 31 else h) == expected, key


@given(st.binary(max_size=64), st.integers(1, 50))
def test_key_partitioner_is_stable_and_in_range(key, n):
    kp = KeyPartitioner()
    p = kp.partition(key, n)
    assert 0 <= p < n and kp.partition(key, n) == p == (murmur2(key) & 0x7FFFFFFF) % n


@given(st.lists(st.tuples(st.none() | st.binary(max_size=20), st.none() | st.binary(max_size=50),
                          st.integers(-10_000, 10_000),
                          st.none() | st.lists(st.tuples(st.text(max_size=5), st.binary(max_size=5)), max_size=2)),
                min_size=1, max_size=40))
def test_producer_rows_decode_with_the_shared_batch_codec(records):
    """The producer packs rows itself; the storage codec and the consumer's decoder must agree."""
    first = 1_700_000_000_000
    rows = [(i, td, k, v, h) for i, (k, v, td, h) in enumerate(records)]
    max_ts = max(first, max(first + td for _, td, *_ in rows))
    batch = bytearray(pack_batch(msgpack.packb(rows, use_bin_type=True), len(rows), first, max_ts, 0, 0))
    batch[0:8] = (500).to_bytes(8, "big")  # the broker writes the base offset (outside the CRC)
    header, decoded = decode_batch(bytes(batch))
    assert header.record_count == len(rows)
    assert [(o, ts, k, v) for o, ts, k, v, _ in decoded] == \
        [(500 + i, first + td, k, v) for i, td, k, v, _ in rows]
    # The consumer's decoder, both ways: msgspec into a class per batch (large batches) and
    # the plain Message tuples (small ones).
    for threshold in (1, 10**9):
        with patch.object(message, "_CLASS_PER_BATCH", threshold):
            msgs = message.MessageBuilder().records("t", 3, header, memoryview(bytes(batch))[HEADER_SIZE:], 500)
        assert len(msgs) == len(rows)
        check_messages(msgs, rows, first)


def check_messages(msgs, rows, first):
    for m, (i, td, k, v, h) in zip(msgs, rows):
        assert (m.topic(), m.partition(), m.offset(), m.timestamp()[1], m.key(), m.value()) == \
            ("t", 3, 500 + i, first + td, k, v)
        assert m.headers() == (None if h is None else [tuple(x) for x in h])
        assert m.error() is None


def test_kafka_error_and_topic_partition_behave_like_confluent():
    e = KafkaError(KafkaError._PARTITION_EOF)
    assert e.code() == -191 and e.name() == "_PARTITION_EOF" and e == KafkaError._PARTITION_EOF
    exc = KafkaException(KafkaError(KafkaError.ILLEGAL_GENERATION, "stale"))
    assert exc.args[0].code() == 22 and "stale" in str(exc)
    assert TopicPartition("t", 1, 5) == TopicPartition("t", 1) and len({TopicPartition("t", 1), TopicPartition("t", 1)}) == 1
    assert TopicPartition("t").partition == -1 and TopicPartition("t").offset == -1001


def test_bad_configuration_raises_kafka_exception_invalid_arg():
    import pytest

    from clients.log import Consumer, Producer
    for make, conf in [(Consumer, {"auto.offset.reset": "sometimes"}), (Producer, {"acks": 2}),
                       (Consumer, {"partition.assignment.strategy": "alphabetical"}),
                       (Producer, {"linger.ms": "soon"}), (Consumer, {"bootstrap.servers": "no-port"})]:
        conf.setdefault("bootstrap.servers", "127.0.0.1:1")
        with pytest.raises(KafkaException) as exc:
            make(conf)
        assert exc.value.args[0].code() == KafkaError._INVALID_ARG, conf
