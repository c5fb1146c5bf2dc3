"""Kafka error codes and connection rules, seen on the wire: what a client library turns into
the exception it raises against Kafka."""

import time

import pytest

from minilog.kafka import errors as E
from minilog.kafka.messages import FETCH, HEARTBEAT, JOIN_GROUP, LIST_OFFSETS, METADATA, PRODUCE, SYNC_GROUP

from kafka_wire import KafkaWire

kafka_batch = pytest.importorskip("clients.kafka_batch")



@pytest.fixture
def wire(kafka_minilog):
    w = KafkaWire(kafka_minilog.server.listener("kafka").port)
    yield w
    w.close()


def _produce(wire, topic, batch, acks=1, version=8):
    body = {"transactional_id": None, "acks": acks, "timeout_ms": 5000,
            "topic_data": [{"name": topic, "partition_data": [{"index": 0, "records": batch}]}]}
    if acks == 0:
        wire.send(PRODUCE, version, body)
        return None
    return wire.call(PRODUCE, version, body)["responses"][0]["partition_responses"][0]


def _fetch(wire, topic, offset, max_wait_ms=0, session_id=0, version=11):
    return wire.call(FETCH, version, {
        "replica_id": -1, "max_wait_ms": max_wait_ms, "min_bytes": 1, "max_bytes": 1 << 20, "isolation_level": 0,
        "session_id": session_id, "session_epoch": -1,
        "topics": [{"topic": topic, "partitions": [{"partition": 0, "fetch_offset": offset,
                                                   "partition_max_bytes": 1 << 20}]}]})


def _end_offset(wire, topic):
    reply = wire.call(LIST_OFFSETS, 5, {"replica_id": -1, "topics": [
        {"name": topic, "partitions": [{"partition_index": 0, "timestamp": -1}]}]})
    return reply["topics"][0]["partitions"][0]["offset"]


def _batch(n=3):
    return kafka_batch.build_batch([(None, f"v{i}".encode(), None, []) for i in range(n)])


def test_a_batch_with_a_bad_crc_is_corrupt_and_nothing_is_stored(wire):
    good = _produce(wire, "crc", _batch())
    assert good["error_code"] == E.NONE and good["base_offset"] == 0
    bad = bytearray(_batch())
    bad[-1] ^= 0xFF   # a record byte: the CRC no longer matches
    row = _produce(wire, "crc", bytes(bad))
    assert row["error_code"] == E.CORRUPT_MESSAGE and row["error_message"]
    assert _end_offset(wire, "crc") == 3


def test_produce_errors_name_the_partition(wire, kafka_minilog):
    assert _produce(wire, "no/slashes", _batch())["error_code"] == E.INVALID_TOPIC_EXCEPTION
    kafka_minilog.call(lambda: kafka_minilog.server.broker.create_topic("small", 1, {"max.message.bytes": 200}))
    big = kafka_batch.build_batch([(None, b"x" * 500, None, [])])
    assert _produce(wire, "small", big)["error_code"] == E.MESSAGE_TOO_LARGE


def test_fetch_errors(wire):
    _produce(wire, "ranged", _batch())
    assert _fetch(wire, "ranged", 99)["responses"][0]["partitions"][0]["error_code"] == E.OFFSET_OUT_OF_RANGE
    part = _fetch(wire, "nowhere", 0)["responses"][0]["partitions"][0]
    assert part["error_code"] == E.UNKNOWN_TOPIC_OR_PARTITION
    reply = _fetch(wire, "ranged", 0, session_id=12345)
    assert reply["error_code"] == E.FETCH_SESSION_ID_NOT_FOUND
    reply = _fetch(wire, "ranged", 0)
    assert reply["session_id"] == 0 and len(reply["responses"][0]["partitions"][0]["records"]) > 0


def test_replies_keep_request_order_behind_a_long_poll_and_acks_0_gets_none(wire):
    _produce(wire, "ordered", _batch())
    started = time.monotonic()
    first = wire.send(FETCH, 11, {"replica_id": -1, "max_wait_ms": 300, "min_bytes": 1 << 20, "max_bytes": 1 << 20,
                                  "session_id": 0, "session_epoch": -1,
                                  "topics": [{"topic": "ordered", "partitions": [
                                      {"partition": 0, "fetch_offset": 3, "partition_max_bytes": 1 << 20}]}]})
    _produce(wire, "ordered", _batch(), acks=0)   # no reply at all
    second = wire.send(METADATA, 1, {"topics": None})
    assert wire.recv(FETCH, 11)[0] == first
    assert time.monotonic() - started >= 0.25   # the fetch waited for its deadline ...
    assert wire.recv(METADATA, 1)[0] == second   # ... and the metadata reply waited behind it
    assert _end_offset(wire, "ordered") == 6      # the acks=0 batch was stored


def test_group_errors(wire):
    assert wire.call(HEARTBEAT, 3, {"group_id": "g", "generation_id": 1, "member_id": "nobody"})["error_code"] \
        == E.UNKNOWN_MEMBER_ID
    joined = wire.call(JOIN_GROUP, 5, {"group_id": "g", "session_timeout_ms": 10000, "rebalance_timeout_ms": 10000,
                                       "member_id": "", "protocol_type": "consumer",
                                       "protocols": [{"name": "range", "metadata": b""}]})
    assert joined["error_code"] == E.NONE and joined["leader"] == joined["member_id"]
    stale = wire.call(SYNC_GROUP, 3, {"group_id": "g", "generation_id": joined["generation_id"] + 1,
                                      "member_id": joined["member_id"], "assignments": []})
    assert stale["error_code"] == E.ILLEGAL_GENERATION
    bad = wire.call(JOIN_GROUP, 5, {"group_id": "g", "session_timeout_ms": 1, "member_id": "",
                                    "protocol_type": "consumer", "protocols": [{"name": "range", "metadata": b""}]})
    assert bad["error_code"] == E.INVALID_SESSION_TIMEOUT
