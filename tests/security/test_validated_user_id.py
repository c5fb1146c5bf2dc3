"""Validated user-id, as RabbitMQ has it: a message whose `user_id` property is set must name the
user the connection logged in as, on every publish path (msgpack publish and publish_batch, the
fast path and the general one, and AMQP basic.publish through the real pika); otherwise it is
refused with PRECONDITION_FAILED (406), nacked under confirms, and nothing is queued."""

import pytest

from clients import broker as pika_style
from clients.protocol.errors import BrokerError, ErrorCode
from clients.rpc import RpcConnection
from harness import confirms_of
from serverbase.users import UserStore

ALL = {"configure": ".*", "write": ".*", "read": ".*"}
REFUSAL = "user_id property set to 'bob' but authenticated user was 'alice'"


@pytest.fixture
def server(start_minibroker, tmp_path):
    data = tmp_path / "mb"
    with UserStore(str(data)).editing() as store:
        store.add("alice", "alice-pw", ALL)
        store.add("bob", "bob-pw", ALL)
    server = start_minibroker(data, auth=True, amqp_port=0)
    with connect(server, "alice") as conn:
        conn.call("queue_declare", {"queue": "q"})
        conn.call("exchange_declare", {"exchange": "hx", "type": "headers"})
        conn.call("queue_bind", {"queue": "q", "exchange": "hx", "arguments": {"x-match": "any", "k": "v"}})
    return server


def connect(server, user):
    return RpcConnection(server.host, server.port, credentials={"username": user, "password": f"{user}-pw"})


def drain(conn):
    bodies = []
    while (got := conn.call("get", {"queue": "q", "no_ack": True})) is not None:
        bodies.append((got["body"], (got.get("properties") or {}).get("user_id")))
    return bodies


def test_msgpack_publish_refuses_another_users_id_and_nacks_it(server):
    with connect(server, "alice") as conn:
        conn.call("confirm_select", {})
        conn.call("publish", {"exchange": "", "routing_key": "q", "body": b"mine",
                              "properties": {"user_id": "alice"}})
        for exchange, props in [("", {"user_id": "bob"}),                            # the default exchange
                                ("", {"user_id": "bob", "expiration": "60000"}),     # the general path
                                ("hx", {"user_id": "bob", "headers": {"k": "v"}})]:  # routed by properties
            with pytest.raises(BrokerError) as info:
                conn.call("publish", {"exchange": exchange, "routing_key": "q", "body": b"forged",
                                      "properties": props})
            assert info.value.code == ErrorCode.PRECONDITION_FAILED and REFUSAL in info.value.message
        conn.call("publish", {"exchange": "", "routing_key": "q", "body": b"no id"})
        assert confirms_of(conn, 5) == {1: True, 2: False, 3: False, 4: False, 5: True}
        assert drain(conn) == [(b"mine", "alice"), (b"no id", None)]


def test_publish_batch_publishes_the_rest_and_nacks_the_forged_ones(server):
    with connect(server, "alice") as conn:
        conn.call("confirm_select", {})
        batch = [["", "q", b"1", {"user_id": "alice"}, False],
                 ["", "q", b"2", {"user_id": "bob"}, False],                          # the inlined path
                 ["", "q", b"3", None, False],
                 ["hx", "", b"4", {"user_id": "bob", "headers": {"k": "v"}}, False],  # the general path
                 ["", "q", b"5", {"user_id": "alice", "delivery_mode": 2}, False]]
        with pytest.raises(BrokerError) as info:
            conn.call("publish_batch", {"messages": batch})
        assert info.value.code == ErrorCode.PRECONDITION_FAILED and "2 of 5" in info.value.message
        assert REFUSAL in info.value.message
        assert confirms_of(conn, 5) == {1: True, 2: False, 3: True, 4: False, 5: True}
        assert [body for body, _ in drain(conn)] == [b"1", b"3", b"5"]
    with connect(server, "bob") as conn:   # bob's own id is his to send
        conn.call("publish_batch", {"messages": [["", "q", b"6", {"user_id": "bob"}, False]]})
        assert drain(conn) == [(b"6", "bob")]


def test_pika_style_client_gets_406_and_keeps_its_connection(server):
    params = pika_style.ConnectionParameters(server.host, server.port,
                                             credentials=pika_style.PlainCredentials("alice", "alice-pw"))
    with pika_style.BlockingConnection(params) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        with pytest.raises(pika_style.exceptions.ChannelClosedByBroker) as info:
            ch.basic_publish("", "q", b"forged", pika_style.BasicProperties(user_id="bob"))
        assert info.value.reply_code == 406 and REFUSAL in info.value.reply_text
        assert conn.is_open
        ch = conn.channel()
        ch.basic_publish("", "q", b"mine", pika_style.BasicProperties(user_id="alice"))
        _, props, body = ch.basic_get("q", auto_ack=True)
        assert (body, props.user_id) == (b"mine", "alice")


def test_amqp_door_with_real_pika_closes_the_channel_406_as_rabbitmq(server):
    pika = pytest.importorskip("pika")
    params = pika.ConnectionParameters("127.0.0.1", server.amqp_port,
                                       credentials=pika.PlainCredentials("alice", "alice-pw"))
    with pika.BlockingConnection(params) as conn:
        for confirms in (False, True):
            ch = conn.channel()
            if confirms:
                ch.confirm_delivery()
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
                ch.basic_publish("", "q", b"forged", pika.BasicProperties(user_id="bob"))
                # Without confirms the close comes back while the next call waits on the channel.
                ch.queue_declare("q", passive=True)
            assert info.value.reply_code == 406
            assert info.value.reply_text == f"PRECONDITION_FAILED - {REFUSAL}"
            assert conn.is_open
        ch = conn.channel()
        ch.basic_publish("", "q", b"mine", pika.BasicProperties(user_id="alice"))
        _, props, body = ch.basic_get("q", auto_ack=True)
        assert (body, props.user_id) == (b"mine", "alice")
        assert ch.basic_get("q", auto_ack=True) == (None, None, None)
