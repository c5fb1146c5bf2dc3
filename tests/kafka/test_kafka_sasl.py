"""SASL PLAIN on the Kafka door when the server has --user credentials."""

import pytest

from minilog.kafka.messages import METADATA

from kafka_wire import KafkaWire

ck = pytest.importorskip("confluent_kafka")



@pytest.fixture
def secured(start_minilog):
    srv = start_minilog(kafka_port=0, credentials={"alice": "s3cret"})
    srv.bootstrap = f"127.0.0.1:{srv.server.listener('kafka').port}"
    return srv


def _producer(bootstrap, password):
    return ck.Producer({"bootstrap.servers": bootstrap, "security.protocol": "SASL_PLAINTEXT",
                        "sasl.mechanism": "PLAIN", "sasl.username": "alice", "sasl.password": password})


def test_the_right_password_produces(secured):
    p = _producer(secured.bootstrap, "s3cret")
    p.produce("secure", b"hello")
    assert p.flush(15) == 0


def test_a_wrong_password_is_refused(secured):
    errors, reports = [], []
    p = ck.Producer({"bootstrap.servers": secured.bootstrap, "security.protocol": "SASL_PLAINTEXT",
                     "sasl.mechanism": "PLAIN", "sasl.username": "alice", "sasl.password": "wrong",
                     "error_cb": errors.append, "message.timeout.ms": 2000})
    p.produce("secure", b"never", on_delivery=lambda err, msg: reports.append(err))
    p.flush(10)
    assert len(reports) == 1 and reports[0] is not None   # not delivered
    assert any(e.code() == ck.KafkaError._AUTHENTICATION for e in errors), errors


def test_requests_before_authentication_close_the_connection(secured):
    wire = KafkaWire(secured.server.listener("kafka").port)
    try:
        wire.send(METADATA, 1, {"topics": None})
        assert wire.closed_by_peer()
    finally:
        wire.close()
