"""The real pika (BlockingConnection and SelectConnection) against minibroker's AMQP listener,
and against a real RabbitMQ when AMQP_TEST_URL is set: every behaviour and error here must be
the same on both."""

import datetime
import decimal

import pika
import pika.exceptions
import pytest

from harness import wait_until

pytestmark = pytest.mark.timeout(60)


def test_the_seeds_publisher_sends_a_persistent_message_to_a_durable_queue(pika_connect, amqp_broker, unique):
    # The seed's program, with the test port: BlockingConnection(ConnectionParameters(host)).
    queue = unique("task_queue")
    connection = pika.BlockingConnection(pika.ConnectionParameters(amqp_broker.host, amqp_broker.port))
    channel = connection.channel()
    channel.queue_declare(queue=queue, durable=True)
    channel.basic_publish(exchange="", routing_key=queue, body="Hello World!",
                          properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent))
    connection.close()
    ch = pika_connect().channel()
    method, props, body = ch.basic_get(queue, auto_ack=True)
    assert body == b"Hello World!" and props.delivery_mode == 2 and method.redelivered is False
    ch.queue_delete(queue)


def test_publish_consume_ack_with_prefetch(pika_connect, unique):
    ch = pika_connect().channel()
    q = ch.queue_declare(unique(), auto_delete=True).method.queue
    for i in range(20):
        ch.basic_publish("", q, f"m{i}".encode())
    ch.basic_qos(prefetch_count=5)
    got = []

    def on_message(c, method, props, body):
        got.append(body)
        c.basic_ack(method.delivery_tag)
        if len(got) == 20:
            c.stop_consuming()

    ch.basic_consume(q, on_message)
    ch.start_consuming()
    assert got == [f"m{i}".encode() for i in range(20)]


def test_all_fourteen_properties_and_every_header_type_arrive_intact(pika_connect, unique):
    ch = pika_connect().channel()
    q = ch.queue_declare(unique(), auto_delete=True).method.queue
    headers = {"s": "text", "i": 7, "big": 1 << 40, "neg": -3, "t": True, "n": None, "b": b"\x00\xff",
               "list": [1, "two", [3]], "table": {"k": {"deep": "v"}}}
    props = pika.BasicProperties(content_type="application/json", content_encoding="utf-8", headers=headers,
                                 delivery_mode=2, priority=3, correlation_id="c-1", reply_to="replies",
                                 expiration="60000", message_id="m-1", timestamp=1700000000, type="greeting",
                                 user_id="guest", app_id="tests", cluster_id="c")
    ch.basic_publish("", q, b"{}", props)
    _, got, body = ch.basic_get(q, auto_ack=True)
    assert body == b"{}"
    for name in ("content_type", "content_encoding", "delivery_mode", "priority", "correlation_id", "reply_to",
                 "expiration", "message_id", "timestamp", "type", "user_id", "app_id", "cluster_id"):
        assert getattr(got, name) == getattr(props, name), name
    assert got.headers == headers


def test_decimal_and_timestamp_headers(pika_connect, amqp_broker, unique):
    """RabbitMQ hands these back as they came; minibroker stores headers as msgpack values, so a
    decimal comes back as its text and a timestamp as its seconds (docs/amqp.md)."""
    ch = pika_connect().channel()
    q = ch.queue_declare(unique(), auto_delete=True).method.queue
    when = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    ch.basic_publish("", q, b"", pika.BasicProperties(headers={"d": decimal.Decimal("1.25"), "ts": when}))
    headers = ch.basic_get(q, auto_ack=True)[1].headers
    if amqp_broker.name == "rabbitmq":
        assert headers == {"d": decimal.Decimal("1.25"), "ts": when}
    else:
        assert headers == {"d": "1.25", "ts": int(when.timestamp())}


def test_a_large_body_crosses_in_several_frames(pika_connect, unique):
    ch = pika_connect(frame_max=4096).channel()
    q = ch.queue_declare(unique(), auto_delete=True).method.queue
    body = bytes(range(256)) * 2000          # 512 KB, ~125 body frames each way
    ch.basic_publish("", q, body)
    assert ch.basic_get(q, auto_ack=True)[2] == body


def test_get_empty_and_message_count(pika_connect, unique):
    ch = pika_connect().channel()
    q = ch.queue_declare(unique(), auto_delete=True).method.queue
    assert ch.basic_get(q) == (None, None, None)
    for i in range(3):
        ch.basic_publish("", q, b"x")
    method, _, _ = ch.basic_get(q, auto_ack=True)
    assert method.message_count == 2
    assert ch.queue_declare(q, passive=True).method.message_count == 2


def test_nack_and_reject_requeue_or_drop_and_multiple_settles_a_range(pika_connect, unique):
    ch = pika_connect().channel()
    q = ch.queue_declare(unique(), auto_delete=True).method.queue
    for i in range(5):
        ch.basic_publish("", q, str(i).encode())
    tags = [ch.basic_get(q)[0].delivery_tag for _ in range(5)]
    ch.basic_nack(tags[1], multiple=True, requeue=True)        # 0 and 1 back, redelivered
    ch.basic_reject(tags[2], requeue=False)                     # 2 dropped
    ch.basic_ack(tags[4], multiple=True)                        # 3 and 4 acked
    again = [ch.basic_get(q, auto_ack=True) for _ in range(2)]
    assert [(m.redelivered, b) for m, _, b in again] == [(True, b"0"), (True, b"1")]
    assert ch.basic_get(q) == (None, None, None)


def test_recover_requeues_everything_unacked(pika_connect, unique):
    ch = pika_connect().channel()
    q = ch.queue_declare(unique(), auto_delete=True).method.queue
    ch.basic_publish("", q, b"a")
    ch.basic_get(q)
    ch.basic_recover(requeue=True)
    method, _, body = ch.basic_get(q, auto_ack=True)
    assert body == b"a" and method.redelivered


def test_unacked_messages_return_when_the_channel_closes(pika_connect, unique):
    conn = pika_connect()
    ch = conn.channel()
    q = ch.queue_declare(unique(), auto_delete=False).method.queue
    ch.basic_publish("", q, b"a")
    ch.basic_get(q)
    ch.close()
    ch2 = conn.channel()
    method, _, body = ch2.basic_get(q, auto_ack=True)
    assert body == b"a" and method.redelivered
    ch2.queue_delete(q)


def test_publisher_confirms_and_mandatory_returns(pika_connect, unique):
    ch = pika_connect().channel()
    ch.confirm_delivery()
    q = ch.queue_declare(unique(), auto_delete=True).method.queue
    ch.basic_publish("", q, b"kept", mandatory=True)           # confirmed, no exception
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish("", unique("nowhere"), b"lost", mandatory=True)
    assert ch.basic_get(q, auto_ack=True)[2] == b"kept"


def test_exchanges_route_by_type_and_exchange_to_exchange(pika_connect, unique):
    ch = pika_connect().channel()
    topic, fanout, headers = unique("topic"), unique("fanout"), unique("headers")
    ch.exchange_declare(topic, "topic", auto_delete=True)
    ch.exchange_declare(fanout, "fanout", auto_delete=True)
    ch.exchange_declare(headers, "headers", auto_delete=True)
    ch.exchange_bind(destination=fanout, source=topic, routing_key="kern.#")
    qt = ch.queue_declare("", exclusive=True).method.queue
    qf = ch.queue_declare("", exclusive=True).method.queue
    qh = ch.queue_declare("", exclusive=True).method.queue
    assert qt.startswith("amq.gen-")
    ch.queue_bind(qt, topic, "*.critical")
    ch.queue_bind(qf, fanout)
    ch.queue_bind(qh, headers, arguments={"x-match": "any", "level": "high"})
    ch.basic_publish(topic, "kern.critical", b"both")
    ch.basic_publish(topic, "app.critical", b"topic only")
    ch.basic_publish(headers, "", b"by header", pika.BasicProperties(headers={"level": "high"}))
    got = lambda q: [ch.basic_get(q, auto_ack=True)[2] for _ in range(3)]
    assert got(qt) == [b"both", b"topic only", None]
    assert got(qf) == [b"both", None, None]
    assert got(qh) == [b"by header", None, None]
    ch.exchange_unbind(destination=fanout, source=topic, routing_key="kern.#")
    ch.basic_publish(topic, "kern.critical", b"again")
    assert ch.basic_get(qf, auto_ack=True)[2] is None


def test_purge_and_delete_report_counts_and_deleting_twice_is_fine(pika_connect, unique):
    ch = pika_connect().channel()
    q = ch.queue_declare(unique()).method.queue
    for _ in range(3):
        ch.basic_publish("", q, b"x")
    assert ch.queue_purge(q).method.message_count == 3
    ch.basic_publish("", q, b"x")
    assert ch.queue_delete(q).method.message_count == 1
    assert ch.queue_delete(q).method.message_count == 0
    ex = unique("ex")
    ch.exchange_declare(ex, "direct")
    ch.exchange_delete(ex)
    ch.exchange_delete(ex)


def test_server_side_cancel_reaches_the_consumer(pika_connect, unique):
    conn = pika_connect()
    ch = conn.channel()
    q = ch.queue_declare(unique()).method.queue
    cancelled = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    tag = ch.basic_consume(q, lambda *a: None)
    pika_connect().channel().queue_delete(q)
    wait_until(lambda: conn.process_data_events(0.01) or cancelled, message="basic.cancel from the server")
    assert cancelled == [tag]


def test_client_cancel_stops_deliveries(pika_connect, unique):
    ch = pika_connect().channel()
    q = ch.queue_declare(unique(), auto_delete=False).method.queue
    tag = ch.basic_consume(q, lambda *a: None, consumer_tag="mine")
    assert tag == "mine"
    ch.basic_cancel(tag)
    ch.basic_publish("", q, b"after")
    assert ch.basic_get(q, auto_ack=True)[2] == b"after"
    ch.queue_delete(q)


def test_consume_from_a_missing_queue_is_404(pika_connect, unique):
    ch = pika_connect().channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.basic_consume(unique("missing"), lambda *a: None)
        ch.start_consuming()
    assert err.value.reply_code == 404 and err.value.reply_text.startswith("NOT_FOUND - no queue")


@pytest.mark.parametrize("operation, code", [
    (lambda ch, u: ch.queue_declare(u("missing"), passive=True), 404),
    (lambda ch, u: ch.exchange_declare(u("missing"), passive=True), 404),
    (lambda ch, u: ch.basic_publish(u("no-exchange"), "k", b"x") or ch.queue_declare("", exclusive=True), 404),
    (lambda ch, u: ch.queue_declare("amq.reserved"), 403),
    (lambda ch, u: ch.exchange_declare("amq.reserved", "direct"), 403),
    (lambda ch, u: ch.basic_ack(99), 406),
    (lambda ch, u: (ch.exchange_declare(u("internal"), "fanout", auto_delete=True, internal=True),
                    ch.basic_publish(u("internal"), "", b"x")), 403),
    (lambda ch, u: ch.basic_publish("", "q", b"x", pika.BasicProperties(expiration="soon")), 406),
    (lambda ch, u: (ch.queue_declare(u("full"), auto_delete=True), ch.basic_publish("", u("full"), b"x"),
                    ch.queue_declare(u("full"), passive=True), ch.queue_delete(u("full"), if_empty=True)), 406),
    (lambda ch, u: (ch.queue_declare(u("used"), auto_delete=True), ch.basic_consume(u("used"), lambda *a: None),
                    ch.queue_delete(u("used"), if_unused=True)), 406),
    (lambda ch, u: (ch.exchange_declare(u("bound"), "fanout", auto_delete=False),
                    ch.queue_bind(ch.queue_declare("", exclusive=True).method.queue, u("bound")),
                    ch.exchange_delete(u("bound"), if_unused=True)), 406),
    (lambda ch, u: (ch.queue_declare(u("q") + "x", durable=False, auto_delete=True),
                    ch.queue_declare(u("q") + "x", durable=True, auto_delete=True)), 406),
])
def test_channel_errors_close_the_channel_with_rabbitmqs_reply_code(pika_connect, unique, operation, code):
    conn = pika_connect()
    ch = conn.channel()
    names = {}
    stable = lambda prefix="t": names.setdefault(prefix, unique(prefix))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        operation(ch, stable)
        ch.queue_declare("", exclusive=True)       # a round trip, for the asynchronous errors
    assert err.value.reply_code == code
    assert conn.is_open                             # only the channel closed
    assert conn.channel().queue_declare("", exclusive=True).method.queue


def test_an_exclusive_queue_of_another_connection_is_locked(pika_connect, unique):
    q = pika_connect().channel().queue_declare(unique(), exclusive=True).method.queue
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        pika_connect().channel().queue_declare(q, passive=True)
    assert err.value.reply_code == 405


def test_reusing_a_consumer_tag_is_a_connection_error(pika_connect, unique):
    conn = pika_connect()
    ch = conn.channel()
    q = ch.queue_declare(unique(), auto_delete=True).method.queue
    ch.basic_consume(q, lambda *a: None, consumer_tag="dup")
    with pytest.raises((pika.exceptions.ConnectionClosedByBroker, pika.exceptions.ChannelWrongStateError,
                        pika.exceptions.DuplicateConsumerTag)):
        ch.basic_consume(q, lambda *a: None, consumer_tag="dup")


def test_a_transaction_publishes_and_acks_only_on_commit(pika_connect, unique):
    ch = pika_connect().channel()
    q = ch.queue_declare(unique(), auto_delete=True).method.queue
    ch.basic_publish("", q, b"first")
    ch.tx_select()
    ch.basic_publish("", q, b"in tx")
    assert ch.queue_declare(q, passive=True).method.message_count == 1     # not yet
    ch.tx_commit()
    assert ch.queue_declare(q, passive=True).method.message_count == 2
    method, _, body = ch.basic_get(q)
    ch.basic_ack(method.delivery_tag)
    ch.basic_publish("", q, b"rolled back")
    ch.tx_rollback()                                                        # the ack and the publish are gone
    assert ch.queue_declare(q, passive=True).method.message_count == 1
    ch.basic_ack(method.delivery_tag)
    ch.tx_commit()
    assert [ch.basic_get(q, auto_ack=True)[2] for _ in range(2)] == [b"in tx", None]
    assert body == b"first"


def test_a_channel_is_either_transactional_or_in_confirm_mode(pika_connect):
    conn = pika_connect()
    ch = conn.channel()
    ch.tx_select()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.confirm_delivery()
    assert err.value.reply_code == 406
    ch = conn.channel()
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.tx_select()
    assert err.value.reply_code == 406
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        conn.channel().tx_commit()
    assert err.value.reply_code == 406


def test_wrong_credentials_raise_pikas_authentication_error(start_minibroker):
    thread = start_minibroker(amqp_port=0, credentials={"alice": "secret"})
    port = thread.server.listener("amqp").port
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port,
                                                          credentials=pika.PlainCredentials("alice", "wrong")))
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port,
                                                             credentials=pika.PlainCredentials("alice", "secret")))
    assert conn.channel().queue_declare("", exclusive=True).method.queue
    conn.close()


def test_heartbeat_is_negotiated_and_kept_up(pika_connect):
    conn = pika_connect(heartbeat=1)
    ch = conn.channel()
    conn.sleep(2.5)        # pika answers heartbeats while it sleeps; both sides stay up
    assert conn.is_open and ch.queue_declare("", exclusive=True).method.queue


def test_select_connection_publishes_and_consumes(amqp_broker, unique):
    """pika's callback-style SelectConnection, driven by its own ioloop."""
    queue = unique()
    received = []
    state = {}

    def on_open(conn):
        conn.channel(on_open_callback=on_channel)

    def on_channel(ch):
        state["ch"] = ch
        ch.queue_declare(queue, auto_delete=True, callback=on_declared)

    def on_declared(frame):
        ch = state["ch"]
        ch.basic_consume(queue, on_message)
        for i in range(10):
            ch.basic_publish("", queue, f"s{i}".encode())

    def on_message(ch, method, props, body):
        received.append(body)
        ch.basic_ack(method.delivery_tag)
        if len(received) == 10:
            state["conn"].close()

    conn = pika.SelectConnection(amqp_broker.pika_params(), on_open_callback=on_open,
                                 on_open_error_callback=lambda c, e: c.ioloop.stop(),
                                 on_close_callback=lambda c, r: c.ioloop.stop())
    state["conn"] = conn
    timer = conn.ioloop.call_later(20, conn.ioloop.stop)
    conn.ioloop.start()
    conn.ioloop.remove_timeout(timer)
    assert received == [f"s{i}".encode() for i in range(10)]


def test_prefetch_per_consumer_and_per_channel(pika_connect, unique):
    """basic.qos global=false limits each consumer created after it; global=true the channel."""
    conn = pika_connect()
    ch = conn.channel()
    q1 = ch.queue_declare(unique("a"), auto_delete=True).method.queue
    q2 = ch.queue_declare(unique("b"), auto_delete=True).method.queue
    for q in (q1, q2):
        for i in range(10):
            ch.basic_publish("", q, b"x")
    got = {q1: 0, q2: 0}

    def counter(q):
        def on_message(c, method, props, body):
            got[q] += 1
        return on_message

    ch.basic_qos(prefetch_count=3, global_qos=False)
    ch.basic_consume(q1, counter(q1))
    ch.basic_consume(q2, counter(q2))
    wait_until(lambda: conn.process_data_events(0.01) or got == {q1: 3, q2: 3}, message="3 per consumer")
    ch2 = conn.channel()
    got2 = {"n": 0}
    q3 = ch2.queue_declare(unique("c"), auto_delete=True).method.queue
    q4 = ch2.queue_declare(unique("d"), auto_delete=True).method.queue
    for q in (q3, q4):
        for i in range(10):
            ch2.basic_publish("", q, b"x")
    ch2.basic_qos(prefetch_count=4, global_qos=True)
    for q in (q3, q4):
        ch2.basic_consume(q, lambda c, m, p, b: got2.__setitem__("n", got2["n"] + 1))
    wait_until(lambda: conn.process_data_events(0.01) or got2["n"] == 4, message="4 for the channel")
    ch2.queue_declare(q3, passive=True)            # a round trip: nothing more was sent
    conn.process_data_events(0)
    assert got2["n"] == 4 and got == {q1: 3, q2: 3}


def test_an_exclusive_consumer_keeps_others_out(pika_connect, unique):
    ch = pika_connect().channel()
    q = ch.queue_declare(unique(), auto_delete=True).method.queue
    ch.basic_consume(q, lambda *a: None, exclusive=True)
    other = pika_connect().channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        other.basic_consume(q, lambda *a: None)
        other.queue_declare("", exclusive=True)
    assert err.value.reply_code == 403


def test_dead_lettered_messages_carry_x_death(pika_connect, unique):
    ch = pika_connect().channel()
    dlx, dead = unique("dlx"), unique("dead")
    ch.exchange_declare(dlx, "fanout", auto_delete=True)
    ch.queue_declare(dead, auto_delete=True)
    ch.queue_bind(dead, dlx)
    q = ch.queue_declare(unique("work"), auto_delete=True, arguments={"x-dead-letter-exchange": dlx}).method.queue
    ch.basic_publish("", q, b"doomed")
    method, _, _ = ch.basic_get(q)
    ch.basic_reject(method.delivery_tag, requeue=False)
    got = wait_until(lambda: ch.basic_get(dead, auto_ack=True)[1], message="the dead-lettered message")
    (death,) = got.headers["x-death"]
    assert death["reason"] == "rejected" and death["queue"] == q and death["count"] == 1


def test_queue_arguments_length_limit_and_message_ttl(pika_connect, unique):
    ch = pika_connect().channel()
    capped = ch.queue_declare(unique("capped"), auto_delete=True, arguments={"x-max-length": 2}).method.queue
    for i in range(3):
        ch.basic_publish("", capped, str(i).encode())
    assert [ch.basic_get(capped, auto_ack=True)[2] for _ in range(3)] == [b"1", b"2", None]   # drop-head
    dlx, dead = unique("expired"), unique("dead")
    ch.exchange_declare(dlx, "fanout", auto_delete=True)
    ch.queue_declare(dead, auto_delete=True)
    ch.queue_bind(dead, dlx)
    short = ch.queue_declare(unique("ttl"), auto_delete=True,
                             arguments={"x-message-ttl": 50, "x-dead-letter-exchange": dlx}).method.queue
    ch.basic_publish("", short, b"gone soon")
    got = []

    def dead_lettered():
        _, props, body = ch.basic_get(dead, auto_ack=True)
        if body is not None:
            got.append((props, body))
        return got

    ((props, body),) = wait_until(dead_lettered, timeout=10, message="the expired message in the dead-letter queue")
    assert body == b"gone soon" and props.headers["x-death"][0]["reason"] == "expired"
    assert ch.basic_get(short, auto_ack=True)[2] is None


def test_a_priority_queue_delivers_the_highest_priority_first(pika_connect, unique):
    ch = pika_connect().channel()
    q = ch.queue_declare(unique(), auto_delete=True, arguments={"x-max-priority": 5}).method.queue
    for body, prio in ((b"low", 1), (b"high", 5), (b"mid", 3)):
        ch.basic_publish("", q, body, pika.BasicProperties(priority=prio))
    assert [ch.basic_get(q, auto_ack=True)[2] for _ in range(3)] == [b"high", b"mid", b"low"]


def test_queue_unbind_stops_routing(pika_connect, unique):
    ch = pika_connect().channel()
    ex = unique("direct")
    ch.exchange_declare(ex, "direct", auto_delete=True)
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, ex, "k")
    ch.queue_bind(q, ex, "keep")       # keeps the auto-delete exchange alive after the unbind
    ch.basic_publish(ex, "k", b"routed")
    ch.queue_unbind(q, ex, "k")
    ch.basic_publish(ex, "k", b"not routed")
    assert [ch.basic_get(q, auto_ack=True)[2] for _ in range(2)] == [b"routed", None]
