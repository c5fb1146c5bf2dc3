"""RabbitMQ's permission model on minibroker's msgpack front door: each kind of op denied gets
NOT_AUTHORIZED and the connection goes on working; allowed ops work."""

import pytest

from clients import broker as pika
from clients.protocol.errors import BrokerError, ErrorCode
from clients.rpc import RpcConnection
from harness import confirms_of
from serverbase.users import UserStore


@pytest.fixture
def server(start_minibroker, tmp_path):
    data = tmp_path / "mb"
    with UserStore(str(data)).editing() as store:
        store.add("admin", "admin-pw", {"configure": ".*", "write": ".*", "read": ".*"})
        # alice configures only alice-* names, writes to alice-* and the default exchange, reads alice-*.
        store.add("alice", "alice-pw", {"configure": "^alice-", "write": "^(alice-.*|amq\\.default)$",
                                        "read": "^alice-"})
        store.add("nobody", "nobody-pw", None)
    server = start_minibroker(data, auth=True)
    with RpcConnection(server.host, server.port, credentials={"username": "admin", "password": "admin-pw"}) as admin:
        admin.call("exchange_declare", {"exchange": "bob-ex", "type": "fanout"})
        admin.call("exchange_declare", {"exchange": "alice-ex", "type": "fanout"})
        admin.call("queue_declare", {"queue": "bob-q"})
        admin.call("queue_declare", {"queue": "alice-q"})
        admin.call("publish", {"exchange": "", "routing_key": "bob-q", "body": b"secret"})
    return server


def connect(server, user):
    return RpcConnection(server.host, server.port, credentials={"username": user, "password": f"{user}-pw"})


DENIED = [
    ("exchange_declare", {"exchange": "bob-new", "type": "direct"}, "configure", "bob-new"),
    ("exchange_delete", {"exchange": "bob-ex"}, "configure", "bob-ex"),
    ("queue_declare", {"queue": "bob-new"}, "configure", "bob-new"),
    ("queue_declare", {"queue": ""}, "configure", "amq.gen-"),
    ("queue_delete", {"queue": "bob-q"}, "configure", "bob-q"),
    ("queue_purge", {"queue": "bob-q"}, "read", "bob-q"),
    ("queue_bind", {"queue": "bob-q", "exchange": "alice-ex"}, "write", "bob-q"),
    ("queue_bind", {"queue": "alice-q", "exchange": "bob-ex"}, "read", "bob-ex"),
    ("queue_unbind", {"queue": "bob-q", "exchange": "alice-ex"}, "write", "bob-q"),
    ("exchange_bind", {"destination": "bob-ex", "source": "alice-ex"}, "write", "bob-ex"),
    ("exchange_bind", {"destination": "alice-ex", "source": "bob-ex"}, "read", "bob-ex"),
    ("exchange_unbind", {"destination": "alice-ex", "source": "bob-ex"}, "read", "bob-ex"),
    ("consume", {"queue": "bob-q"}, "read", "bob-q"),
    ("get", {"queue": "bob-q"}, "read", "bob-q"),
    ("publish", {"exchange": "bob-ex", "routing_key": "", "body": b"x"}, "write", "bob-ex"),
    ("publish_batch", {"messages": [["bob-ex", "", b"x", None, False]]}, "write", "bob-ex"),
]


@pytest.mark.parametrize("op,args,permission,name", DENIED, ids=[f"{d[0]}-{d[2]}-{d[3]}" for d in DENIED])
def test_each_denied_op_is_not_authorized_and_the_connection_lives_on(server, op, args, permission, name):
    with connect(server, "alice") as conn:
        with pytest.raises(BrokerError) as info:
            conn.call(op, args)
        assert info.value.code == ErrorCode.NOT_AUTHORIZED
        assert permission in info.value.message and name in info.value.message
        assert conn.call("ping", {})["pong"] is True
        conn.call("queue_declare", {"queue": "alice-still-works"})


def test_allowed_ops_work_and_nothing_denied_took_effect(server):
    with connect(server, "alice") as conn:
        conn.call("exchange_declare", {"exchange": "alice-direct", "type": "direct"})
        conn.call("queue_declare", {"queue": "alice-work"})
        conn.call("queue_bind", {"queue": "alice-work", "exchange": "alice-direct", "routing_key": "k"})
        conn.call("publish", {"exchange": "alice-direct", "routing_key": "k", "body": b"one"})
        conn.call("publish", {"exchange": "", "routing_key": "alice-work", "body": b"two"})
        assert conn.call("get", {"queue": "alice-work", "no_ack": True})["body"] == b"one"
        assert conn.call("queue_purge", {"queue": "alice-work"})["message_count"] == 1
        conn.call("queue_declare", {"queue": "bob-q", "passive": True})   # looking needs no permission
        conn.call("queue_delete", {"queue": "alice-work"})
        conn.call("exchange_delete", {"exchange": "alice-direct"})
        for op, args, _, _ in DENIED:
            with pytest.raises(BrokerError):
                conn.call(op, args)
    with connect(server, "admin") as admin:
        assert admin.call("get", {"queue": "bob-q", "no_ack": True})["body"] == b"secret"
        admin.call("exchange_declare", {"exchange": "bob-ex", "type": "fanout", "passive": True})


def test_a_user_without_permissions_may_only_connect(server):
    with connect(server, "nobody") as conn:
        assert conn.call("ping", {})["pong"] is True
        with pytest.raises(BrokerError) as info:
            conn.call("queue_declare", {"queue": "x"})
        assert info.value.code == ErrorCode.NOT_AUTHORIZED


def test_a_partly_refused_batch_publishes_the_rest_and_nacks_the_refused(server):
    with connect(server, "alice") as conn:
        conn.call("queue_bind", {"queue": "alice-q", "exchange": "alice-ex"})
        conn.call("confirm_select", {})
        batch = [["alice-ex", "", b"1", None, False], ["bob-ex", "", b"2", None, False],
                 ["alice-ex", "", b"3", None, False], ["bob-ex", "", b"4", None, False]]
        with pytest.raises(BrokerError) as info:
            conn.call("publish_batch", {"messages": batch})
        assert info.value.code == ErrorCode.NOT_AUTHORIZED and "2 of 4" in info.value.message
        confirms = confirms_of(conn, 4)
        assert confirms == {1: True, 2: False, 3: True, 4: False}
        bodies = [conn.call("get", {"queue": "alice-q", "no_ack": True}).get("body") for _ in range(2)]
        assert bodies == [b"1", b"3"]


def test_pika_style_client_sees_access_refused_and_keeps_its_connection(server):
    params = pika.ConnectionParameters(server.host, server.port, credentials=pika.PlainCredentials("alice", "alice-pw"))
    with pika.BlockingConnection(params) as conn:
        ch = conn.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            ch.queue_declare("bob-other")
        assert info.value.reply_code == 403
        assert conn.is_open
        ch2 = conn.channel()
        assert ch2.queue_declare("alice-fine").method.queue == "alice-fine"
