"""One broker, two protocols: a message published over AMQP (the real pika) is consumed over
minibroker's msgpack protocol (our pika-style client), and the other way round, with its body,
properties and headers intact."""

import pika
import pytest

from clients import broker as mbpika

pytestmark = pytest.mark.timeout(60)


def _msgpack_channel(amqp_server):
    thread = amqp_server.server
    conn = mbpika.BlockingConnection(mbpika.ConnectionParameters(thread.host, thread.port))
    return conn, conn.channel()


def test_published_over_amqp_consumed_over_msgpack(amqp_server):
    aconn = pika.BlockingConnection(amqp_server.pika_params())
    ach = aconn.channel()
    ach.queue_declare("cross-a", durable=True)
    ach.basic_publish("", "cross-a", b"from amqp", pika.BasicProperties(
        content_type="text/plain", delivery_mode=2, priority=4, correlation_id="c1",
        headers={"n": 1, "s": "two", "nested": {"x": [1, 2]}}))
    mconn, mch = _msgpack_channel(amqp_server)
    method, props, body = mch.basic_get("cross-a", auto_ack=True)
    assert body == b"from amqp"
    assert (props.content_type, props.delivery_mode, props.priority, props.correlation_id) == \
        ("text/plain", 2, 4, "c1")
    assert props.headers == {"n": 1, "s": "two", "nested": {"x": [1, 2]}}
    mconn.close()
    aconn.close()


def test_published_over_msgpack_consumed_over_amqp(amqp_server):
    mconn, mch = _msgpack_channel(amqp_server)
    mch.queue_declare("cross-m")
    mch.basic_publish("", "cross-m", b"from msgpack", mbpika.BasicProperties(
        message_id="m-7", reply_to="answers", headers={"k": "v", "n": 2}))
    aconn = pika.BlockingConnection(amqp_server.pika_params())
    ach = aconn.channel()
    got = []

    def on_message(ch, method, props, body):
        got.append((body, props.message_id, props.reply_to, props.headers))
        ch.basic_ack(method.delivery_tag)
        ch.stop_consuming()

    ach.basic_consume("cross-m", on_message)
    ach.start_consuming()
    assert got == [(b"from msgpack", "m-7", "answers", {"k": "v", "n": 2})]
    mconn.close()
    aconn.close()


def test_a_routing_key_amqp_cannot_carry_is_rejected_not_stuck(amqp_server):
    """A msgpack publisher may use a 300-byte routing key; AMQP's short string holds 255, so that
    delivery is rejected (dead-lettered if the queue says so) and the consumer gets the rest."""
    mconn, mch = _msgpack_channel(amqp_server)
    mch.exchange_declare("wide", "fanout")
    mch.queue_declare("wide-q")
    mch.queue_bind("wide-q", "wide")
    mch.basic_publish("wide", "k" * 300, b"too wide")
    mch.basic_publish("wide", "fine", b"fine")
    aconn = pika.BlockingConnection(amqp_server.pika_params())
    ach = aconn.channel()
    got = []

    def on_message(ch, method, props, body):
        got.append(body)
        ch.basic_ack(method.delivery_tag)
        ch.stop_consuming()

    ach.basic_consume("wide-q", on_message)
    ach.start_consuming()
    assert got == [b"fine"]
    mconn.close()
    aconn.close()
