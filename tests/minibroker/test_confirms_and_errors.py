"""Publisher confirms, mandatory returns, and errors that leave the connection usable."""

import pytest

from clients.protocol.errors import BrokerError


def test_every_publish_is_confirmed_with_coalesced_multiple_acks(client):
    client.call("queue_declare", queue="q")
    client.call("confirm_select", ch=1)
    for _ in range(5):
        client.send("publish_batch", ch=1, messages=[["", "q", b"x", None, False]] * 200)
    client.wait(lambda: len(client.confirmed()) == 1000, message="1000 confirms")
    assert all(client.confirmed().values())
    assert len(client.confirms) <= 10    # far fewer pushes than messages
    assert client.confirms[-1][2] == 1000


def test_unroutable_messages_are_confirmed_too(client):
    client.call("confirm_select", ch=1)
    client.send("publish", ch=1, exchange="amq.direct", routing_key="nowhere", body=b"x")
    client.wait(lambda: client.confirmed() == {1: True}, message="confirm of an unroutable message")


def test_mandatory_unroutable_message_returns_before_its_confirm(client):
    client.call("confirm_select", ch=1)
    client.call("ping")
    client.send("publish", ch=1, exchange="amq.direct", routing_key="nowhere", body=b"lost",
                properties={"message_id": "m1"}, mandatory=True)
    client.call("ping")
    client.wait(lambda: client.returns and client.confirms, message="return and confirm")
    assert client.returns == [[1, 312, "NO_ROUTE", "amq.direct", "nowhere", b"lost", {"message_id": "m1"}]]


def test_return_push_precedes_confirm_push_on_the_wire(client):
    client.call("confirm_select", ch=1)
    client.send("publish", ch=1, exchange="", routing_key="nowhere", body=b"x", mandatory=True)
    client.flush()
    order = []
    while len(order) < 2:
        client.conn.read(5)
        order.extend(p.event for p in client.conn.pushes)
        client.conn.pushes.clear()
    assert order == ["return", "confirm"]


def test_publish_to_missing_exchange_errors_with_the_channel_and_nacks_under_confirms(client):
    client.call("queue_declare", queue="q")
    client.call("confirm_select", ch=3)
    client.send("publish", ch=3, routing_key="q", body=b"ok")
    client.send("publish", ch=3, exchange="ghost", routing_key="q", body=b"lost")
    client.send("publish", ch=3, routing_key="q", body=b"ok")
    error = client.async_error()
    assert error.code == "NOT_FOUND" and "channel 3" in error.message and "ghost" in error.message
    client.wait(lambda: len(client.confirmed()) == 3, message="3 confirms")
    assert client.confirmed() == {1: True, 2: False, 3: True}
    assert client.call("queue_declare", queue="q", passive=True)["message_count"] == 2


def test_publish_batch_with_a_bad_entry_publishes_the_rest_and_reports_one_error(client):
    client.call("queue_declare", queue="q")
    client.call("confirm_select", ch=1)
    client.send("publish_batch", ch=1, messages=[["", "q", b"1", None, False], ["ghost", "q", b"2", None, False],
                                                 ["ghost", "q", b"3", None, False], ["", "q", b"4", None, False]])
    error = client.async_error()
    assert error.code == "NOT_FOUND" and "2 of 4" in error.message
    client.wait(lambda: len(client.confirmed()) == 4, message="4 confirms")
    assert client.confirmed() == {1: True, 2: False, 3: False, 4: True}
    assert client.conn.async_errors == type(client.conn.async_errors)()   # one error, not one per message


def test_publish_with_a_reply_id_gets_an_error_reply(client):
    with pytest.raises(BrokerError) as err:
        client.call("publish", exchange="ghost", routing_key="q", body=b"x")
    assert err.value.code == "NOT_FOUND"


@pytest.mark.parametrize("args", [
    {"routing_key": "q", "body": "text not bin"},
    {"routing_key": "q", "body": b"x", "properties": {"priority": 999}},
    {"routing_key": "q", "body": b"x", "properties": {"expiration": "soon"}},
    {"routing_key": "q", "body": b"x", "properties": {"headers": [1]}},
])
def test_bad_publish_arguments_are_bad_request(client, args):
    client.call("queue_declare", queue="q")
    with pytest.raises(BrokerError) as err:
        client.call("publish", **args)
    assert err.value.code == "BAD_REQUEST"
    client.call("ping")


def test_errors_keep_the_connection_usable(client):
    failures = [
        ("publish", {"exchange": "ghost", "routing_key": "x", "body": b"x"}, "NOT_FOUND"),
        ("consume", {"queue": "ghost"}, "NOT_FOUND"),
        ("ack", {"delivery_tag": 42}, "PRECONDITION_FAILED"),
        ("exchange_declare", {"exchange": "amq.topic", "type": "direct"}, "PRECONDITION_FAILED"),
        ("exchange_declare", {"exchange": "e", "type": "nonsense"}, "BAD_REQUEST"),
        ("queue_bind", {"queue": "ghost", "exchange": "amq.direct"}, "NOT_FOUND"),
        ("basic_qos", {"prefetch_count": -1}, "BAD_REQUEST"),
        ("queue_declare", {"queue": "amq.mine"}, "PRECONDITION_FAILED"),
        ("channel_open", {"ch": 0}, "BAD_REQUEST"),
        ("publish_batch", {"messages": [["only-one"]]}, "BAD_REQUEST"),
    ]
    for op, args, code in failures:
        with pytest.raises(BrokerError) as err:
            client.call(op, **args)
        assert err.value.code == code, (op, err.value)
    client.call("queue_declare", queue="fine")
    client.call("publish", routing_key="fine", body=b"x")
    assert client.call("get", queue="fine", no_ack=True)["body"] == b"x"


def test_channels_are_independent(client):
    client.call("queue_declare", queue="q")
    client.call("publish", routing_key="q", body=b"x")
    got = client.call("get", ch=2, queue="q")
    with pytest.raises(BrokerError):
        client.call("ack", ch=1, delivery_tag=got["delivery_tag"])
    client.call("ack", ch=2, delivery_tag=got["delivery_tag"])


def test_server_info_lists_the_ops(client):
    info = client.call("server_info")
    for name in ("queue_declare", "publish_batch", "consume", "ack", "confirm_select", "exchange_bind"):
        assert name in info["ops"]
    assert info["queues"] == 0


def test_publish_batch_routes_each_run_of_one_key_and_keeps_every_semantic_inside_it(client):
    # Broker.publish_batch looks a route up once per run of entries with the same exchange and
    # routing key; entries inside a run that need the general path (properties, a bad body, a
    # bounded queue) must still get exactly what a lone publish gets, in order.
    client.call("queue_declare", queue="a")
    client.call("queue_declare", queue="b")
    client.call("queue_declare", queue="short", arguments={"x-max-length": 1})
    client.call("exchange_declare", exchange="d", type="direct")
    client.call("queue_bind", queue="b", exchange="d", routing_key="k")
    client.call("confirm_select", ch=1)
    e = None
    client.send("publish_batch", ch=1, messages=[
        ["", "a", b"a1", e, False], ["", "a", b"a2", e, False],
        ["", "a", b"a3", {"content_type": "text/plain"}, False],  # properties inside the run
        ["", "a", "not bytes", e, False],                         # refused inside the run
        ["", "a", b"a4", e, False],
        ["d", "k", b"b1", e, False], ["d", "k", b"b2", e, False],  # same key, other exchange
        ["", "k", b"lost", e, False],                             # same key, default exchange: no queue k
        ["d", "k", b"b3", e, False],
        ["", "short", b"s1", e, False], ["", "short", b"s2", e, False],   # max-length keeps the last
        ["", "a", b"a5", e, False],
    ])
    error = client.async_error()
    assert error.code == "BAD_REQUEST"
    client.wait(lambda: len(client.confirmed()) == 12, message="12 confirms")
    assert [n for n, ok in client.confirmed().items() if not ok] == [4]

    def drain(queue):
        got = []
        while (g := client.call("get", queue=queue, no_ack=True)) is not None:
            got.append(g)
        return got

    a = drain("a")
    assert [m["body"] for m in a] == [b"a1", b"a2", b"a3", b"a4", b"a5"]
    assert a[2]["properties"] == {"content_type": "text/plain"} and not a[0]["properties"]
    assert all(m["exchange"] == "" and m["routing_key"] == "a" for m in a)
    b = drain("b")
    assert [(m["body"], m["exchange"], m["routing_key"]) for m in b] == [(b"b1", "d", "k"), (b"b2", "d", "k"),
                                                                        (b"b3", "d", "k")]
    assert [m["body"] for m in drain("short")] == [b"s2"]


def test_publish_batch_messages_with_properties_keep_priority_expiry_headers_routing_and_checks(client):
    # Broker.publish_batch inlines a message with properties only when they ask for neither expiry
    # nor storing and the route does not read them; the rest must behave as a lone publish.
    client.call("queue_declare", queue="p", arguments={"x-max-priority": 5})
    client.call("queue_declare", queue="every")
    client.call("queue_declare", queue="k1")
    client.call("exchange_declare", exchange="h", type="headers")
    client.call("queue_bind", queue="every", exchange="h", arguments={"x-match": "all"})   # matches all
    client.call("queue_bind", queue="k1", exchange="h", arguments={"x-match": "all", "k": 1})
    client.call("confirm_select", ch=1)
    client.send("publish_batch", ch=1, messages=[
        ["", "p", b"low", {"priority": 1, "content_type": "text/plain"}, False],
        ["", "p", b"high", {"priority": 5}, False],
        ["", "p", b"plain", None, False],
        ["", "p", b"gone", {"expiration": "0"}, False],          # expires at once: never delivered
        ["", "p", b"bad", {"priority": 999}, False],             # refused inside the run
        ["h", "", b"no headers", None, False],                # the route without properties: "every"
        ["h", "", b"match", {"headers": {"k": 1}}, False],     # same run, properties add "k1"
        ["h", "", b"no match", {"headers": {"k": 2}}, False],
    ])
    error = client.async_error()
    assert error.code == "BAD_REQUEST" and "priority" in error.message
    client.wait(lambda: len(client.confirmed()) == 8, message="8 confirms")
    assert [n for n, ok in client.confirmed().items() if not ok] == [5]
    got = []
    while (g := client.call("get", queue="p", no_ack=True)) is not None:
        got.append(g)
    assert [m["body"] for m in got] == [b"high", b"low", b"plain"]
    assert got[1]["properties"] == {"priority": 1, "content_type": "text/plain"}
    assert client.call("get", queue="k1", no_ack=True)["body"] == b"match"
    assert client.call("get", queue="k1", no_ack=True) is None
    assert [client.call("get", queue="every", no_ack=True)["body"] for _ in range(3)] == [
        b"no headers", b"match", b"no match"]
