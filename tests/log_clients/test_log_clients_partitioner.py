"""The confluent-style producer's `partitioner`: librdkafka's names, default and exact mapping.

A program that swaps `from confluent_kafka import Producer` for ours must see its keys land
on the same partitions. The expected partitions below were read from confluent-kafka 2.16.1
(librdkafka) delivery reports against its built-in mock cluster (4 partitions); when
confluent-kafka is installed, `test_same_partitions_as_librdkafka` asks it again, for many
keys. The aiokafka-style producer keeps aiokafka's murmur2.
"""

import random
import zlib

import pytest

from clients.log import KafkaException, Producer
from clients.log.partitioner import RANDOM, KeyPartitioner, murmur2

KEYS = [b"a", b"b", b"hello", b"key-1", b"key-2", b"\xff\x80x", b""]
# librdkafka's answers for KEYS with 4 partitions.
LIBRDKAFKA_4 = {
    "consistent": [3, 1, 2, 2, 0, 2, 0],
    "murmur2": [0, 0, 1, 0, 2, 3, 1],
    "fnv1a": [0, 3, 3, 2, 3, 2, 3],
}


def test_key_partitioner_matches_librdkafka_recorded_answers():
    for name, expected in LIBRDKAFKA_4.items():
        assert [KeyPartitioner(name).partition(k, 4) for k in KEYS] == expected, name
        random_variant = KeyPartitioner(name + "_random")
        got = [random_variant.partition(k, 4) for k in KEYS]
        if name == "consistent":  # consistent_random: an empty key is random too
            assert got == expected[:-1] + [RANDOM]
        else:
            assert got == expected
        assert random_variant.null_key_partition(4) == RANDOM
    assert KeyPartitioner("consistent").null_key_partition(4) == 0
    assert KeyPartitioner("murmur2").null_key_partition(4) == 1  # NULL hashed as b""
    assert KeyPartitioner("random").partition(b"k", 4) == RANDOM
    with pytest.raises(ValueError):
        KeyPartitioner("crc64")


def test_same_partitions_as_librdkafka():
    ck = pytest.importorskip("confluent_kafka", reason="confluent-kafka is not installed: no oracle")
    rng = random.Random(7)
    keys = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 24))) for _ in range(150)]
    for name in ("consistent", "consistent_random", "murmur2", "murmur2_random", "fnv1a", "fnv1a_random"):
        real = ck.Producer({"test.mock.num.brokers": 1, "partitioner": name, "linger.ms": 0, "log_level": 0})
        try:
            got = {}
            for i, key in enumerate(keys):
                real.produce("t", b"v", key=key, on_delivery=lambda err, msg, i=i: got.__setitem__(i, msg.partition()))
            assert real.flush(30) == 0
            count = len(real.list_topics("t", timeout=10).topics["t"].partitions)
        finally:
            real.flush(1)
        ours = KeyPartitioner(name)
        assert [ours.partition(k, count) for k in keys] == [got[i] for i in range(len(keys))], name


def _partitions_of(producer, topic, keys):
    got = {}
    for i, key in enumerate(keys):
        producer.produce(topic, b"v", key=key, on_delivery=lambda err, msg, i=i: got.__setitem__(i, msg.partition()))
    assert producer.flush(10) == 0
    return [got[i] for i in range(len(keys))]


def test_producer_defaults_to_consistent_random_and_honours_the_setting(producer, make_topic):
    topic = make_topic(5)
    keys = [b"user-%d" % i for i in range(40)]
    assert _partitions_of(producer(), topic, keys) == [zlib.crc32(k) % 5 for k in keys]
    assert _partitions_of(producer(partitioner="murmur2_random"), topic, keys) == \
        [(murmur2(k) & 0x7FFFFFFF) % 5 for k in keys]
    # A partitioner that maps no key to one partition sends keyless records there.
    assert set(_partitions_of(producer(partitioner="consistent"), topic, [None] * 30)) == {0}
    # The fast path (key= and partition= given) still honours an explicit partition.
    assert _partitions_of(producer(), topic, [b"a"] * 3) == [zlib.crc32(b"a") % 5] * 3
    p = producer()
    got = {}
    for i, part in enumerate((4, 1, 4)):
        p.produce(topic, b"%d" % i, key=b"k", partition=part,
                  on_delivery=lambda err, msg: got.__setitem__(msg.value(), msg.partition()))
    assert p.flush(10) == 0 and got == {b"0": 4, b"1": 1, b"2": 4}


def test_an_unknown_partitioner_is_refused_at_construction(bootstrap):
    with pytest.raises(KafkaException):
        Producer({"bootstrap.servers": bootstrap, "partitioner": "crc64"})
