"""Broker features through the pika-style client: confirms, dead-lettering (delivery limit, TTL,
max-length), priorities, routing by exchange type."""

import pytest

from clients import broker as pika
from harness import wait_until

pytestmark = pytest.mark.timeout(30)


def drain(ch, queue, expected, timeout=5.0):
    """Consume `expected` messages (acking each) and return (method, properties, body) triples."""
    got = []
    for method, properties, body in ch.consume(queue, inactivity_timeout=timeout):
        assert method is not None, f"only {len(got)} of {expected} messages arrived from {queue}"
        ch.basic_ack(method.delivery_tag)
        got.append((method, properties, body))
        if len(got) == expected:
            break
    ch.cancel()
    return got


def test_confirms_for_every_publish(connect):
    ch = connect().channel()
    ch.confirm_delivery()
    ch.queue_declare("confirmed", durable=True)
    for i in range(300):
        # returns only once the broker confirmed that message; raises otherwise
        assert ch.basic_publish("", "confirmed", f"c{i}",
                                pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)) is None
    assert ch.queue_declare("confirmed", passive=True).method.message_count == 300


def test_unroutable_mandatory_under_confirms_raises_unroutable_error(connect):
    ch = connect().channel()
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.UnroutableError) as err:
        ch.basic_publish(exchange="", routing_key="no-queue", body=b"lost", mandatory=True)
    (returned,) = err.value.messages
    assert returned.method.reply_code == 312 and returned.body == b"lost"
    assert returned.method.routing_key == "no-queue"
    # the channel is still usable, and an unroutable non-mandatory message is simply confirmed
    ch.basic_publish(exchange="", routing_key="no-queue", body=b"dropped quietly")
    assert ch.is_open


def test_reject_publish_overflow_raises_nack_error(connect):
    ch = connect().channel()
    ch.confirm_delivery()
    ch.queue_declare("small", arguments={"x-max-length": 2, "x-overflow": "reject-publish"})
    ch.basic_publish("", "small", b"1")
    ch.basic_publish("", "small", b"2")
    with pytest.raises(pika.exceptions.NackError) as err:
        ch.basic_publish("", "small", b"3")
    assert err.value.messages[0].body == b"3"
    assert ch.queue_declare("small", passive=True).method.message_count == 2


def setup_dead_letter(ch, queue, **arguments):
    ch.exchange_declare("dlx", "direct")
    ch.queue_declare("dead")
    ch.queue_bind("dead", "dlx", routing_key="dead")
    arguments.update({"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "dead"})
    ch.queue_declare(queue, arguments=arguments)


def test_poison_message_hits_delivery_limit_and_is_dead_lettered(connect):
    conn = connect()
    ch = conn.channel()
    setup_dead_letter(ch, "poison", **{"x-delivery-limit": 2})
    ch.basic_publish("", "poison", b"bad", pika.BasicProperties(headers={"origin": "test"}))
    attempts = []

    def on_message(channel, method, properties, body):
        attempts.append(method.redelivered)
        channel.basic_nack(method.delivery_tag, requeue=True)  # the consumer keeps failing on it

    ch.basic_consume("poison", on_message)
    wait_until(lambda: conn.process_data_events(0.05) or ch.queue_declare("dead", passive=True).method.message_count,
               10, message="the poison message in the dead-letter queue")
    assert attempts[0] is False and all(attempts[1:]) and 2 <= len(attempts) <= 3
    method, properties, body = ch.basic_get("dead", auto_ack=True)
    assert body == b"bad"
    (death,) = properties.headers["x-death"]
    assert death["queue"] == "poison" and death["reason"] == "delivery_limit" and death["count"] == 1
    assert properties.headers["origin"] == "test"
    assert properties.headers["x-first-death-reason"] == "delivery_limit"


def test_rejected_message_dead_lettered_with_reason_rejected(connect):
    ch = connect().channel()
    setup_dead_letter(ch, "strict")
    ch.basic_publish("", "strict", b"no")
    method, _, _ = ch.basic_get("strict")
    ch.basic_reject(method.delivery_tag, requeue=False)
    (method, properties, body), = drain(ch, "dead", 1)
    assert body == b"no" and properties.headers["x-death"][0]["reason"] == "rejected"


def test_ttl_expiry_dead_letters_with_reason_expired(connect):
    ch = connect().channel()
    setup_dead_letter(ch, "short-lived", **{"x-message-ttl": 50})
    ch.basic_publish("", "short-lived", b"queue ttl")
    ch.queue_declare("per-message", arguments={"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "dead"})
    ch.basic_publish("", "per-message", b"message ttl", pika.BasicProperties(expiration="50"))
    got = drain(ch, "dead", 2)
    by_body = {body: props.headers["x-death"][0] for _, props, body in got}
    assert by_body[b"queue ttl"]["reason"] == "expired" and by_body[b"queue ttl"]["queue"] == "short-lived"
    assert by_body[b"message ttl"]["reason"] == "expired"
    assert by_body[b"message ttl"]["original-expiration"] == "50"
    assert ch.queue_declare("short-lived", passive=True).method.message_count == 0


def test_max_length_dead_letters_oldest_with_reason_maxlen(connect):
    ch = connect().channel()
    setup_dead_letter(ch, "bounded", **{"x-max-length": 3})
    for i in range(5):
        ch.basic_publish("", "bounded", f"b{i}")
    got = drain(ch, "dead", 2)
    assert [body for _, _, body in got] == [b"b0", b"b1"]
    assert all(props.headers["x-death"][0]["reason"] == "maxlen" for _, props, _ in got)
    assert [body for _, _, body in drain(ch, "bounded", 3)] == [b"b2", b"b3", b"b4"]


def test_priority_queue_delivers_highest_first(connect):
    ch = connect().channel()
    ch.queue_declare("prio", arguments={"x-max-priority": 10})
    for i, priority in enumerate([1, 5, 10, 0, 5, 3]):
        ch.basic_publish("", "prio", f"p{priority}-{i}", pika.BasicProperties(priority=priority))
    bodies = [body for _, _, body in drain(ch, "prio", 6)]
    assert bodies == [b"p10-2", b"p5-1", b"p5-4", b"p3-5", b"p1-0", b"p0-3"]


def test_topic_headers_and_fanout_routing(connect):
    ch = connect().channel()
    ch.exchange_declare("topics", exchange_type="topic")
    ch.exchange_declare("hdrs", exchange_type=pika.ExchangeType.headers)
    for q in ("t-all", "t-kern", "h-q"):
        ch.queue_declare(q)
    ch.queue_bind("t-all", "topics", routing_key="#")
    ch.queue_bind("t-kern", "topics", routing_key="kern.*")
    ch.queue_bind("h-q", "hdrs", arguments={"x-match": "all", "format": "pdf", "type": "report"})
    ch.basic_publish("topics", "kern.critical", b"k")
    ch.basic_publish("topics", "app.info", b"a")
    ch.basic_publish("hdrs", "", b"match", pika.BasicProperties(headers={"format": "pdf", "type": "report"}))
    ch.basic_publish("hdrs", "", b"nomatch", pika.BasicProperties(headers={"format": "pdf"}))
    assert sorted(b for _, _, b in drain(ch, "t-all", 2)) == [b"a", b"k"]
    assert [b for _, _, b in drain(ch, "t-kern", 1)] == [b"k"]
    assert [b for _, _, b in drain(ch, "h-q", 1)] == [b"match"]
