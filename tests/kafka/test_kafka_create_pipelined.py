"""The Kafka door handles a connection's requests in order, as Kafka does: a Produce pipelined
behind a CreateTopics on the same connection waits for the create's answer and finds the topic."""

import threading

import pytest

from harness import wait_until
from kafka_wire import KafkaWire
from minilog.kafka.codec import encode_request
from minilog.kafka.messages import CREATE_TOPICS, PRODUCE

kafka_batch = pytest.importorskip("clients.kafka_batch")


def held_frames(srv):
    return srv.call(lambda: sum(len(getattr(c, "_held", None) or ()) for c in srv.server.connections.values()))


def test_a_produce_pipelined_behind_create_topics_finds_the_topic(kafka_minilog):
    gate = threading.Event()
    # The creation thread is busy until the gate opens: the create stays pending meanwhile.
    blocker = kafka_minilog.call(lambda: kafka_minilog.server.broker._create_executor.submit(gate.wait, 60))
    wire = KafkaWire(kafka_minilog.server.listener("kafka").port)
    try:
        topic = {"name": "fresh", "num_partitions": 1, "replication_factor": 1, "assignments": [], "configs": []}
        records = kafka_batch.build_batch([(None, b"first", None, [])])
        create, produce = 1, 2
        # One write: the server reads both requests at once (the produce is then seen waiting).
        wire.sock.sendall(
            encode_request(CREATE_TOPICS, 5, create, "t", {"topics": [topic], "timeout_ms": 10000,
                                                           "validate_only": False})
            + encode_request(PRODUCE, 8, produce, "t", {"transactional_id": None, "acks": 1, "timeout_ms": 5000,
                                                        "topic_data": [{"name": "fresh", "partition_data": [
                                                            {"index": 0, "records": records}]}]}))
        wait_until(lambda: held_frames(kafka_minilog) == 1, message="the produce held behind the pending create")
        gate.set()
        cid, created = wire.recv(CREATE_TOPICS, 5)
        assert cid == create and created["topics"][0]["error_code"] == 0
        cid, produced = wire.recv(PRODUCE, 8)
        (row,) = produced["responses"][0]["partition_responses"]
        assert cid == produce and row["error_code"] == 0 and row["base_offset"] == 0
        assert held_frames(kafka_minilog) == 0
    finally:
        gate.set()
        blocker.result(60)
        wire.close()
