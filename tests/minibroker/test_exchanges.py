"""Exchanges over the wire: each type routes as RabbitMQ's does; declare, delete and bind rules."""

import pytest

from clients.protocol.errors import BrokerError


def declare_bound_queue(c, exchange, routing_key="", arguments=None, queue=""):
    name = c.call("queue_declare", queue=queue)["queue"]
    c.call("queue_bind", queue=name, exchange=exchange, routing_key=routing_key, arguments=arguments or {})
    return name


def publish(c, exchange, routing_key, body=b"m", properties=None):
    c.call("publish", exchange=exchange, routing_key=routing_key, body=body, properties=properties)


def count(c, queue):
    return c.call("queue_declare", queue=queue, passive=True)["message_count"]


def test_default_exchange_routes_by_queue_name(client):
    client.call("queue_declare", queue="orders")
    publish(client, "", "orders")
    publish(client, "", "nobody")
    assert count(client, "orders") == 1


def test_direct_exchange_routes_on_equal_key(client):
    client.call("exchange_declare", exchange="logs", type="direct")
    red = declare_bound_queue(client, "logs", "red")
    blue = declare_bound_queue(client, "logs", "blue")
    publish(client, "logs", "red")
    publish(client, "logs", "red")
    publish(client, "logs", "green")
    assert (count(client, red), count(client, blue)) == (2, 0)


def test_fanout_copies_to_every_bound_queue_ignoring_key(client):
    client.call("exchange_declare", exchange="news", type="fanout")
    queues = [declare_bound_queue(client, "news", "ignored") for _ in range(3)]
    publish(client, "news", "anything")
    assert [count(client, q) for q in queues] == [1, 1, 1]


@pytest.mark.parametrize("pattern,key,matches", [
    ("a.*.c", "a.b.c", True), ("a.*.c", "a.c", False), ("a.#", "a", True), ("a.#", "a.b.c", True),
    ("#", "", True), ("*", "", False), ("#.c", "a.b.c", True), ("a.#.c", "a.c", True), ("*.b.#", "a.b", True),
])
def test_topic_wildcards(client, pattern, key, matches):
    client.call("exchange_declare", exchange="t", type="topic")
    q = declare_bound_queue(client, "t", pattern)
    publish(client, "t", key)
    assert count(client, q) == (1 if matches else 0)


def test_topic_queue_bound_by_two_matching_patterns_gets_one_copy(client):
    q = declare_bound_queue(client, "amq.topic", "a.*")
    client.call("queue_bind", queue=q, exchange="amq.topic", routing_key="#")
    publish(client, "amq.topic", "a.b")
    assert count(client, q) == 1


def test_topic_unbind_stops_routing(client):
    q = declare_bound_queue(client, "amq.topic", "x.#")
    publish(client, "amq.topic", "x.y")
    client.call("queue_unbind", queue=q, exchange="amq.topic", routing_key="x.#")
    publish(client, "amq.topic", "x.y")
    assert count(client, q) == 1


def test_headers_exchange_all_and_any(client):
    all_q = declare_bound_queue(client, "amq.headers", arguments={"x-match": "all", "format": "pdf", "type": "report"})
    any_q = declare_bound_queue(client, "amq.headers", arguments={"x-match": "any", "format": "pdf", "type": "report"})
    publish(client, "amq.headers", "", properties={"headers": {"format": "pdf", "type": "report"}})
    publish(client, "amq.headers", "", properties={"headers": {"format": "pdf"}})
    publish(client, "amq.headers", "", properties={"headers": {"format": "zip"}})
    publish(client, "amq.headers", "")
    assert (count(client, all_q), count(client, any_q)) == (1, 2)


def test_headers_exchange_with_x_modes_count_x_headers(client):
    plain = declare_bound_queue(client, "amq.headers", arguments={"x-match": "all", "x-kind": "a"})
    with_x = declare_bound_queue(client, "amq.headers", arguments={"x-match": "all-with-x", "x-kind": "a"})
    publish(client, "amq.headers", "", properties={"headers": {"x-kind": "b"}})
    # plain `all` ignores x- keys, so it has nothing to compare and matches; all-with-x compares x-kind
    assert (count(client, plain), count(client, with_x)) == (1, 0)


def test_predeclared_amq_exchanges_exist(client):
    for name in ("amq.direct", "amq.fanout", "amq.topic", "amq.headers"):
        client.call("exchange_declare", exchange=name, passive=True)


def test_declare_is_idempotent_and_conflicting_declare_fails(client):
    client.call("exchange_declare", exchange="e", type="topic", durable=True)
    client.call("exchange_declare", exchange="e", type="topic", durable=True)
    for change in ({"type": "direct", "durable": True}, {"type": "topic", "durable": False},
                   {"type": "topic", "durable": True, "auto_delete": True},
                   {"type": "topic", "durable": True, "arguments": {"alternate-exchange": "x"}}):
        with pytest.raises(BrokerError) as err:
            client.call("exchange_declare", exchange="e", **change)
        assert err.value.code == "PRECONDITION_FAILED"
    client.call("ping")


def test_passive_declare_of_missing_exchange_is_not_found(client):
    with pytest.raises(BrokerError) as err:
        client.call("exchange_declare", exchange="ghost", passive=True)
    assert err.value.code == "NOT_FOUND"


def test_delete_if_unused_refuses_bound_exchange(client):
    client.call("exchange_declare", exchange="e", type="fanout")
    declare_bound_queue(client, "e")
    with pytest.raises(BrokerError) as err:
        client.call("exchange_delete", exchange="e", if_unused=True)
    assert err.value.code == "PRECONDITION_FAILED"
    client.call("exchange_delete", exchange="e")
    with pytest.raises(BrokerError) as err:
        client.call("exchange_declare", exchange="e", passive=True)
    assert err.value.code == "NOT_FOUND"


def test_default_exchange_cannot_be_bound_or_deleted(client):
    client.call("queue_declare", queue="q")
    for op, args in (("queue_bind", {"queue": "q", "exchange": ""}), ("exchange_delete", {"exchange": ""}),
                     ("exchange_delete", {"exchange": "amq.topic"})):
        with pytest.raises(BrokerError) as err:
            client.call(op, **args)
        assert err.value.code == "PRECONDITION_FAILED"


def test_exchange_to_exchange_binding_routes_through(client):
    client.call("exchange_declare", exchange="front", type="topic")
    client.call("exchange_declare", exchange="back", type="fanout")
    client.call("exchange_bind", destination="back", source="front", routing_key="a.#")
    q = declare_bound_queue(client, "back")
    publish(client, "front", "a.b")
    publish(client, "front", "b.a")
    assert count(client, q) == 1


def test_auto_delete_exchange_goes_with_its_last_binding(client):
    client.call("exchange_declare", exchange="temp", type="direct", auto_delete=True)
    q = declare_bound_queue(client, "temp", "k")
    client.call("queue_unbind", queue=q, exchange="temp", routing_key="k")
    with pytest.raises(BrokerError):
        client.call("exchange_declare", exchange="temp", passive=True)


def test_internal_exchange_refuses_publish_but_routes_from_exchanges(client):
    client.call("exchange_declare", exchange="inner", type="fanout", internal=True)
    with pytest.raises(BrokerError) as err:
        publish(client, "inner", "")
    assert err.value.code == "PRECONDITION_FAILED"
    client.call("exchange_bind", destination="inner", source="amq.fanout")
    q = declare_bound_queue(client, "inner")
    publish(client, "amq.fanout", "")
    assert count(client, q) == 1
