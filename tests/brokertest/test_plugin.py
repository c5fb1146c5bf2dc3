"""brokertest's pytest plugin, used as a user's test suite uses it: the fixtures come from the
installed entry point, the test talks to the broker through the real pika and confluent-kafka."""

import subprocess
import sys
import textwrap

import pika
import pytest

PIKA_EXAMPLE = '''
import pika


def test_a_job_round_trips(minibroker):
    conn = pika.BlockingConnection(pika.URLParameters(minibroker.amqp_url))
    ch = conn.channel()
    ch.queue_declare(queue="jobs", durable=True)
    ch.basic_publish(exchange="", routing_key="jobs", body=b"resize img-42.png")
    method, properties, body = ch.basic_get(queue="jobs", auto_ack=True)
    assert body == b"resize img-42.png"
    conn.close()
'''


def test_a_users_own_suite_gets_a_minibroker_from_the_plugin(tmp_path):
    (tmp_path / "test_user.py").write_text(PIKA_EXAMPLE)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_user.py"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "1 passed" in run.stdout, run.stdout + run.stderr


def test_the_minilog_fixture_opens_the_kafka_door(minilog):
    pytest.importorskip("confluent_kafka")
    from confluent_kafka.admin import AdminClient
    metadata = AdminClient({"bootstrap.servers": minilog.kafka_bootstrap}).list_topics(timeout=10)
    assert [b.port for b in metadata.brokers.values()] == [int(minilog.kafka_bootstrap.rsplit(":", 1)[1])]
    from clients.log import Producer
    producer = Producer({"bootstrap.servers": minilog.address})
    producer.produce("rides", value=b"position 1")
    assert producer.flush(10) == 0


def test_a_process_broker_survives_kill_9_with_its_confirmed_messages(minibroker_factory):
    broker = minibroker_factory(mode="process", fsync="always")
    conn = pika.BlockingConnection(pika.URLParameters(broker.amqp_url))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare(queue="orders", durable=True)
    ch.basic_publish("", "orders", b"order 1", pika.BasicProperties(delivery_mode=2))
    conn.close()
    broker.kill()
    broker.start()
    conn = pika.BlockingConnection(pika.URLParameters(broker.amqp_url))
    method, properties, body = conn.channel().basic_get(queue="orders", auto_ack=True)
    assert body == b"order 1"
    conn.close()


def test_options_become_server_flags():
    from brokertest.plugin import _flags
    assert _flags({"fsync": "never", "num_partitions": 3, "no_auto_create_topics": True,
                   "user": None}) == ["--fsync", "never", "--num-partitions", "3", "--no-auto-create-topics"]
