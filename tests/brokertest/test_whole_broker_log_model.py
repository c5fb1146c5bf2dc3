"""The whole-broker log model (brokertest/log_model.py) through: the real confluent-kafka on
minilog's Kafka door, this project's confluent-style client on minilog's msgpack door, and,
when KAFKA_TEST_BOOTSTRAP names one, the real confluent-kafka on another Kafka-protocol broker
(tansu, Kafka) without the restart rule. The model's consumer group (members joining, leaving
and timing out) runs in all three."""

import os

import pytest
from hypothesis import settings

from brokertest.log_model import log_model


def _run(machine):
    from hypothesis.stateful import run_state_machine_as_test
    run_state_machine_as_test(machine, settings=settings(max_examples=settings().max_examples // 12 or 1,
                                                         stateful_step_count=12, deadline=None))


def test_the_real_confluent_kafka_on_minilogs_kafka_door_agrees_with_the_model(minilog):
    kafka = pytest.importorskip("confluent_kafka")
    import confluent_kafka.admin
    _run(log_model(kafka, lambda: {"bootstrap.servers": minilog.kafka_bootstrap},
                   restart=minilog.restart, admin=confluent_kafka.admin))


def test_our_confluent_style_client_on_the_msgpack_door_agrees_with_the_model(minilog):
    from clients import log as kafka_like
    from clients.log import admin
    _run(log_model(kafka_like, lambda: {"bootstrap.servers": minilog.address},
                   restart=minilog.restart, admin=admin))


# Group rebalances take seconds on tansu (about 2 minutes for the quick profile's run), and
# the timing-out member keeps Kafka's least session timeout (group.min.session.timeout.ms).
@pytest.mark.timeout(900)
@pytest.mark.skipif(not os.environ.get("KAFKA_TEST_BOOTSTRAP"),
                    reason="KAFKA_TEST_BOOTSTRAP names no other Kafka-protocol broker to compare with")
def test_the_real_confluent_kafka_on_another_kafka_broker_agrees_with_the_model():
    import confluent_kafka
    import confluent_kafka.admin
    _run(log_model(confluent_kafka, lambda: {"bootstrap.servers": os.environ["KAFKA_TEST_BOOTSTRAP"]},
                   admin=confluent_kafka.admin, session_timeout_ms=6000))
