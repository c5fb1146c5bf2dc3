"""Queue declaration, exclusivity, auto-delete, expiry, purge and delete rules over the wire."""

import pytest

from clients.protocol.errors import BrokerError
from harness import wait_until


def test_empty_name_gets_a_server_named_queue(client):
    a = client.call("queue_declare", queue="")
    b = client.call("queue_declare", queue="")
    assert a["queue"].startswith("amq.gen-") and a["queue"] != b["queue"]
    assert a["message_count"] == 0 and a["consumer_count"] == 0


def test_declare_reports_message_and_consumer_counts(client):
    client.call("queue_declare", queue="q")
    for _ in range(3):
        client.call("publish", routing_key="q", body=b"x")
    client.call("consume", ch=1, queue="q", no_ack=False)
    client.call("basic_qos", ch=2, prefetch_count=1)
    info = client.call("queue_declare", queue="q")
    assert info["consumer_count"] == 1
    assert info["message_count"] == 0   # all three went to the consumer (no prefetch limit on ch 1)


def test_passive_declare_of_missing_queue_is_not_found(client):
    with pytest.raises(BrokerError) as err:
        client.call("queue_declare", queue="ghost", passive=True)
    assert err.value.code == "NOT_FOUND"


@pytest.mark.parametrize("change", [{"durable": True}, {"auto_delete": True},
                                    {"arguments": {"x-message-ttl": 1000}}])
def test_redeclare_with_other_settings_fails(client, change):
    client.call("queue_declare", queue="q")
    with pytest.raises(BrokerError) as err:
        client.call("queue_declare", queue="q", **change)
    assert err.value.code == "PRECONDITION_FAILED"
    client.call("queue_declare", queue="q")


def test_invalid_queue_argument_is_refused(client):
    for args in ({"x-max-priority": 300}, {"x-overflow": "sometimes"}, {"x-message-ttl": -1},
                 {"x-single-active-consumer": 1}):
        with pytest.raises(BrokerError) as err:
            client.call("queue_declare", queue="bad", arguments=args)
        assert err.value.code == "PRECONDITION_FAILED"


def test_exclusive_queue_is_locked_to_its_connection_and_deleted_with_it(wire):
    owner, other = wire(), wire()
    name = owner.call("queue_declare", queue="", exclusive=True)["queue"]
    for op, args in (("queue_declare", {"queue": name}), ("queue_declare", {"queue": name, "passive": True}),
                     ("consume", {"queue": name}), ("get", {"queue": name}), ("queue_delete", {"queue": name}),
                     ("queue_bind", {"queue": name, "exchange": "amq.direct"})):
        with pytest.raises(BrokerError) as err:
            other.call(op, **args)
        assert err.value.code == "RESOURCE_LOCKED", op
    # Anyone may still publish to it.
    other.call("publish", routing_key=name, body=b"x")
    assert owner.call("queue_declare", queue=name, passive=True)["message_count"] == 1
    owner.close()
    def gone():
        try:
            other.call("queue_declare", queue=name, passive=True)
        except BrokerError as exc:
            return exc.code == "NOT_FOUND"
    wait_until(gone, message="exclusive queue deleted after its connection closed")


def test_auto_delete_queue_goes_when_last_consumer_cancels(client):
    client.call("queue_declare", queue="auto", auto_delete=True)
    a = client.call("consume", queue="auto")["consumer_tag"]
    b = client.call("consume", queue="auto")["consumer_tag"]
    client.call("cancel", consumer_tag=a)
    assert client.call("queue_declare", queue="auto", passive=True)["consumer_count"] == 1
    client.call("cancel", consumer_tag=b)
    with pytest.raises(BrokerError) as err:
        client.call("queue_declare", queue="auto", passive=True)
    assert err.value.code == "NOT_FOUND"


def test_auto_delete_queue_without_any_consumer_yet_stays(client):
    client.call("queue_declare", queue="auto", auto_delete=True)
    client.call("queue_declare", queue="auto", passive=True, auto_delete=True)


def test_x_expires_deletes_an_unused_queue(client):
    client.call("queue_declare", queue="short", arguments={"x-expires": 200})
    client.call("queue_declare", queue="kept", arguments={"x-expires": 200})
    tag = client.call("consume", queue="kept")["consumer_tag"]

    def short_gone():
        try:
            client.call("queue_declare", queue="short", passive=True)
        except BrokerError as exc:
            return exc.code == "NOT_FOUND"
    wait_until(short_gone, timeout=5, message="x-expires queue deleted")
    client.call("queue_declare", queue="kept", passive=True)   # it has a consumer
    client.call("cancel", consumer_tag=tag)


def test_purge_removes_ready_messages(client):
    client.call("queue_declare", queue="q")
    for _ in range(4):
        client.call("publish", routing_key="q", body=b"x")
    assert client.call("queue_purge", queue="q") == {"message_count": 4}
    assert client.call("queue_declare", queue="q", passive=True)["message_count"] == 0


def test_delete_if_empty_and_if_unused(client):
    client.call("queue_declare", queue="q")
    client.call("publish", routing_key="q", body=b"x")
    with pytest.raises(BrokerError) as err:
        client.call("queue_delete", queue="q", if_empty=True)
    assert err.value.code == "PRECONDITION_FAILED"
    client.call("basic_qos", ch=3, prefetch_count=1)
    client.call("consume", ch=3, queue="q")
    with pytest.raises(BrokerError) as err:
        client.call("queue_delete", queue="q", if_unused=True)
    assert err.value.code == "PRECONDITION_FAILED"
    assert client.call("queue_delete", queue="q") == {"message_count": 0}


def test_deleting_a_queue_cancels_its_consumers_with_a_push(wire):
    consumer, admin = wire(), wire()
    consumer.call("queue_declare", queue="q")
    tag = consumer.call("consume", ch=2, queue="q")["consumer_tag"]
    admin.call("queue_delete", queue="q")
    consumer.wait(lambda: consumer.cancels, message="cancel push")
    assert consumer.cancels == [[2, tag]]


def test_deleted_queue_loses_its_bindings(client):
    client.call("queue_declare", queue="q")
    client.call("queue_bind", queue="q", exchange="amq.fanout")
    client.call("queue_delete", queue="q")
    client.call("queue_declare", queue="q")
    client.call("publish", exchange="amq.fanout", routing_key="", body=b"x")
    assert client.call("queue_declare", queue="q", passive=True)["message_count"] == 0
