"""The pika-style client's synchronous API, end to end against a real minibroker.

Written as a pika user writes them: `from clients import broker as pika`, then pika's names.
"""

import pytest

from clients import broker as pika
from clients.broker import spec
from harness import wait_until

pytestmark = pytest.mark.timeout(30)


def test_defaults_follow_pika_with_minibroker_port():
    params = pika.ConnectionParameters()
    assert (params.host, params.port) == ("127.0.0.1", 5673)
    url = pika.URLParameters("amqp://alice:s%40cret@localhost:6000/%2F?connection_attempts=3&socket_timeout=5")
    assert (url.host, url.port, url.credentials.username, url.credentials.password) == ("localhost", 6000, "alice", "s@cret")
    assert url.connection_attempts == 3 and url.socket_timeout == 5.0
    assert spec.PERSISTENT_DELIVERY_MODE == 2 and pika.DeliveryMode.Persistent.value == 2
    assert pika.DeliveryMode.Transient.value == 1


def test_connection_and_channel_state_and_context_managers(connect):
    with connect() as conn:
        assert conn.is_open and not conn.is_closed
        with conn.channel() as ch:
            assert ch.is_open and ch.channel_number == 1
            second = conn.channel()
            assert second.channel_number == 2
        assert ch.is_closed
        with pytest.raises(pika.exceptions.ChannelWrongStateError):
            ch.queue_declare("after-close")
        # the freed number is reused, as pika does
        assert conn.channel().channel_number == 1
    assert conn.is_closed
    with pytest.raises(pika.exceptions.ConnectionWrongStateError):
        conn.channel()


def test_connect_refused_raises_amqp_connection_error():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))


def test_credentials_and_probable_authentication_error(start_minibroker):
    server = start_minibroker(credentials={"alice": "secret"})
    good = pika.ConnectionParameters(server.host, server.port, credentials=pika.PlainCredentials("alice", "secret"))
    with pika.BlockingConnection(good) as conn:
        conn.channel().queue_declare("q")
    bad = pika.ConnectionParameters(server.host, server.port, credentials=pika.PlainCredentials("alice", "wrong"))
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(bad)
    url = pika.URLParameters(f"amqp://alice:secret@127.0.0.1:{server.port}/")
    with pika.BlockingConnection(url) as conn:
        assert conn.is_open


def test_declare_results_bind_unbind_purge_delete(connect):
    conn = connect()
    ch = conn.channel()
    declared = ch.queue_declare(queue="work", durable=False)
    assert isinstance(declared, pika.frame.Method)
    assert (declared.method.queue, declared.method.message_count, declared.method.consumer_count) == ("work", 0, 0)
    named = ch.queue_declare(queue="", exclusive=True)
    assert named.method.queue  # server-named
    assert ch.exchange_declare(exchange="jobs", exchange_type="direct").method.NAME == "Exchange.DeclareOk"
    ch.exchange_declare("fan", pika.ExchangeType.fanout)
    ch.queue_bind(queue="work", exchange="jobs", routing_key="a")
    ch.queue_bind("work", "fan")
    for i in range(3):
        ch.basic_publish(exchange="jobs", routing_key="a", body=f"m{i}")
    ch.basic_publish(exchange="fan", routing_key="anything", body=b"f")
    assert ch.queue_declare("work", passive=True).method.message_count == 4
    ch.queue_unbind(queue="work", exchange="jobs", routing_key="a")
    ch.basic_publish("jobs", "a", b"unrouted now")
    assert ch.queue_declare("work", passive=True).method.message_count == 4
    assert ch.queue_purge("work").method.message_count == 4
    ch.basic_publish("", "work", b"x")
    assert ch.queue_delete("work").method.message_count == 1
    ch.exchange_delete("jobs")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.exchange_declare("jobs", passive=True)
    assert err.value.reply_code == 404


def test_exchange_to_exchange_binding(connect):
    ch = connect().channel()
    ch.exchange_declare("upstream", "topic")
    ch.exchange_declare("downstream", "fanout")
    ch.exchange_bind(destination="downstream", source="upstream", routing_key="a.*")
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, "downstream")
    ch.basic_publish("upstream", "a.b", b"in")
    ch.basic_publish("upstream", "b.b", b"out")
    method, _, body = ch.basic_get(q, auto_ack=True)
    assert body == b"in" and method.message_count == 0
    ch.exchange_unbind(destination="downstream", source="upstream", routing_key="a.*")
    ch.basic_publish("upstream", "a.b", b"gone")
    assert ch.basic_get(q) == (None, None, None)


def test_properties_round_trip_with_pika_names(connect):
    ch = connect().channel()
    ch.queue_declare("props")
    props = pika.BasicProperties(content_type="application/json", content_encoding="utf-8",
                                 headers={"k": "v", "n": 3, "nested": {"a": [1, 2]}},
                                 delivery_mode=pika.DeliveryMode.Persistent, priority=5, correlation_id="c-1",
                                 reply_to="replies", expiration="60000", message_id="m-1", timestamp=1700000000,
                                 type="t", user_id="u", app_id="app")
    ch.basic_publish(exchange="", routing_key="props", body="héllo", properties=props)
    method, got, body = ch.basic_get("props")
    assert body == "héllo".encode()  # str bodies travel as UTF-8, arrive as bytes
    assert isinstance(method, spec.Basic.GetOk) and method.routing_key == "props" and method.exchange == ""
    assert got.delivery_mode == spec.PERSISTENT_DELIVERY_MODE
    for name in ("content_type", "content_encoding", "headers", "priority", "correlation_id", "reply_to",
                 "expiration", "message_id", "timestamp", "type", "user_id", "app_id"):
        assert getattr(got, name) == getattr(props, name), name
    assert got.cluster_id is None
    ch.basic_ack(method.delivery_tag)


def test_basic_get_empty_and_message_count(connect):
    ch = connect().channel()
    ch.queue_declare("g")
    assert ch.basic_get("g") == (None, None, None)
    for i in range(3):
        ch.basic_publish("", "g", str(i))
    method, _, body = ch.basic_get(queue="g", auto_ack=True)
    assert (body, method.message_count, method.redelivered) == (b"0", 2, False)


def test_missing_exchange_under_confirms_closes_channel_404(connect):
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.basic_publish(exchange="no-such-exchange", routing_key="k", body=b"x")
    assert err.value.reply_code == 404 and "no-such-exchange" in err.value.reply_text
    assert ch.is_closed
    with pytest.raises(pika.exceptions.ChannelWrongStateError):
        ch.basic_publish("", "k", b"x")
    # the connection is fine: a new channel works
    assert conn.channel().queue_declare("ok").method.queue == "ok"


def test_missing_exchange_without_confirms_surfaces_on_next_call(connect):
    conn = connect()
    ch = conn.channel()
    ch.basic_publish(exchange="no-such-exchange", routing_key="k", body=b"x")  # no round trip
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        for _ in range(50):  # the error reaches us once the publish is flushed and answered
            conn.process_data_events(time_limit=0.05)
            ch.queue_declare("q")
    assert err.value.reply_code == 404


def test_consume_missing_queue_404(connect):
    ch = connect().channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.basic_consume(queue="nope", on_message_callback=lambda *a: None)
    assert err.value.reply_code == 404
    assert ch.is_closed


def test_conflicting_declare_406(connect):
    conn = connect()
    ch = conn.channel()
    ch.queue_declare("dur", durable=True)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.queue_declare("dur", durable=False)
    assert err.value.reply_code == 406
    ch2 = conn.channel()
    ch2.exchange_declare("ex", "direct")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch2.exchange_declare("ex", "fanout")
    assert err.value.reply_code == spec.PRECONDITION_FAILED


def test_other_connections_exclusive_queue_405(connect):
    owner = connect().channel()
    owner.queue_declare("mine", exclusive=True)
    other = connect().channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        other.basic_consume("mine", lambda *a: None)
    assert err.value.reply_code == 405


def test_passive_declare_of_missing_queue_404(connect):
    ch = connect().channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.queue_declare("ghost", passive=True)
    assert err.value.reply_code == 404
    assert isinstance(err.value, pika.exceptions.AMQPChannelError)


def test_queue_delete_if_empty_and_if_unused_406(connect):
    conn = connect()
    ch = conn.channel()
    ch.queue_declare("busy")
    ch.basic_publish("", "busy", b"x")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.queue_delete("busy", if_empty=True)
    assert err.value.reply_code == 406
    ch = conn.channel()
    ch.basic_consume("busy", lambda *a: None)
    other = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        other.queue_delete("busy", if_unused=True)
    assert err.value.reply_code == 406


def test_unknown_delivery_tag_ack_closes_channel_406(connect):
    conn = connect()
    ch = conn.channel()
    ch.basic_ack(delivery_tag=999)  # id 0: the error comes back asynchronously
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        for _ in range(50):
            conn.process_data_events(time_limit=0.05)
            ch.queue_declare("q")
    assert err.value.reply_code == 406


def test_publish_batching_keeps_order_across_many_messages(connect):
    conn = connect()
    ch = conn.channel()
    ch.queue_declare("order")
    n = 5000
    for i in range(n):
        ch.basic_publish("", "order", str(i).encode())
    assert ch.queue_declare("order", passive=True).method.message_count == n  # flushed before the declare
    bodies = []
    for method, _, body in ch.consume("order", auto_ack=True, inactivity_timeout=2):
        if method is None:
            break
        bodies.append(body)
        if len(bodies) == n:
            break
    assert bodies == [str(i).encode() for i in range(n)]
    ch.cancel()


def test_close_sends_publishes_still_buffered(connect):
    conn = connect()
    ch = conn.channel()
    ch.queue_declare("flushed")
    for i in range(10):
        ch.basic_publish("", "flushed", str(i))  # buffered: no round trip yet
    conn.close()
    assert connect().channel().queue_declare("flushed", passive=True).method.message_count == 10


def test_server_going_away_raises_stream_lost_error(start_minibroker):
    server = start_minibroker()
    conn = pika.BlockingConnection(pika.ConnectionParameters(server.host, server.port))
    ch = conn.channel()
    ch.queue_declare("q")
    server.stop()
    with pytest.raises(pika.exceptions.StreamLostError):
        ch.queue_declare("q2")
    assert conn.is_closed and ch.is_closed
    with pytest.raises(pika.exceptions.ChannelWrongStateError):
        ch.basic_publish("", "q", b"x")
    with pytest.raises(pika.exceptions.ConnectionWrongStateError):
        conn.process_data_events()


def test_basic_recover_requeues_unacked(connect):
    ch = connect().channel()
    ch.queue_declare("rec")
    for i in range(3):
        ch.basic_publish("", "rec", str(i))
    for _ in range(3):
        ch.basic_get("rec")
    ch.basic_recover(requeue=True)
    method, _, body = ch.basic_get("rec", auto_ack=True)
    assert method.redelivered and body == b"0" and method.message_count == 2


def test_async_error_closes_the_channel_it_names(connect):
    conn = connect()
    bad = conn.channel()
    good = conn.channel()
    good.queue_declare("fine")
    bad.basic_publish("no-such-exchange", "k", b"x")
    good.basic_publish("", "fine", b"y")  # the last id-0 request came from `good`
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):
        for _ in range(50):
            conn.process_data_events(time_limit=0.05)
            bad.queue_declare("q")
    assert good.is_open
    assert good.queue_declare("fine", passive=True).method.message_count == 1


def test_a_lone_publish_is_sent_at_once(connect):
    """A program that publishes once and then does something else (here: nothing with this
    connection) must not have its message wait in a buffer."""
    producer = connect().channel()
    producer.queue_declare("lone")
    consumer = connect().channel()
    producer.basic_publish("", "lone", b"now")  # no further call on the producer's connection
    wait_until(lambda: consumer.queue_declare("lone", passive=True).method.message_count == 1, 5,
               message="the lone message in the queue")


def test_works_with_descriptor_numbers_above_1024(connect):
    """select() cannot wait on descriptors >= 1024; a busy program has them."""
    import os
    import resource
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        pytest.skip(f"the descriptor limit ({soft}) is too low to push past 1024")
    fillers = []
    try:
        while not fillers or fillers[-1] < 1030:
            fillers.append(os.open(os.devnull, os.O_RDONLY))
        conn = connect()
        assert conn._sock.fileno() > 1024
        ch = conn.channel()
        ch.queue_declare("high-fd")
        ch.basic_publish("", "high-fd", b"x")
        conn.process_data_events(time_limit=0.01)
        method, _, body = ch.basic_get("high-fd", auto_ack=True)
        assert body == b"x"
    finally:
        for fd in fillers:
            os.close(fd)


def test_a_lone_ack_is_sent_at_once(connect):
    """An ack made outside a callback, with nothing else going on, reaches the broker even if
    the program then dies without touching the connection again."""
    import socket
    conn = connect()
    ch = conn.channel()
    ch.queue_declare("lone-ack")
    ch.basic_publish("", "lone-ack", b"x")
    method, _, _ = ch.basic_get("lone-ack")
    ch.basic_ack(method.delivery_tag)  # and then no further call on this connection
    observer = connect()

    def connections():
        return observer._rpc.call("server_info")["connections"]

    before = connections()
    conn._sock.shutdown(socket.SHUT_RDWR)  # the program dies without a goodbye
    wait_until(lambda: connections() == before - 1, 5, message="the server to drop the dead connection")
    # had the ack not left, closing the connection would have requeued the message
    assert observer.channel().queue_declare("lone-ack", passive=True).method.message_count == 0
