"""The whole-broker queue model (brokertest/queue_model.py) through three client/broker pairs:
the real pika on minibroker's AMQP door, this project's pika-style client on minibroker's
msgpack door, and, when AMQP_TEST_URL names one, the real pika on a real RabbitMQ. Each first
takes the model's fixed tour through every feature (`tour`), then hypothesis's random runs."""

import os

import pytest
from hypothesis import settings

from brokertest.queue_model import queue_model, tour


def _run(machine):
    from hypothesis.stateful import run_state_machine_as_test
    tour(machine)
    run_state_machine_as_test(machine, settings=settings(max_examples=settings().max_examples // 3 or 1,
                                                         stateful_step_count=30, deadline=None))


def test_the_real_pika_on_minibrokers_amqp_door_agrees_with_the_model(minibroker):
    pika = pytest.importorskip("pika")
    _run(queue_model(pika, lambda: pika.URLParameters(minibroker.amqp_url)))


def test_our_pika_style_client_on_the_msgpack_door_agrees_with_the_model(minibroker):
    from clients import broker as pika_like
    _run(queue_model(pika_like, lambda: pika_like.ConnectionParameters(minibroker.host, minibroker.port)))


@pytest.mark.skipif(not os.environ.get("AMQP_TEST_URL"),
                    reason="AMQP_TEST_URL names no RabbitMQ to run the same model against")
def test_the_real_pika_on_rabbitmq_agrees_with_the_model():
    import pika
    _run(queue_model(pika, lambda: pika.URLParameters(os.environ["AMQP_TEST_URL"])))
