"""Acknowledgements: ack, multiple, nack, reject, requeue order, redelivery when a consumer dies."""

import pytest

from clients.protocol.errors import BrokerError


def fill(c, queue, n):
    c.send("publish_batch", ch=1, messages=[["", queue, b"%d" % i, None, False] for i in range(n)])
    c.call("ping")


def bodies(entries):
    return [int(e[5]) for e in entries]


def ready(c, queue):
    return c.call("queue_declare", queue=queue, passive=True)["message_count"]


def test_ack_multiple_settles_everything_up_to_the_tag(client):
    client.call("queue_declare", queue="q")
    fill(client, "q", 10)
    client.call("consume", ch=1, queue="q")
    got = client.take_deliveries(10)
    client.call("ack", ch=1, delivery_tag=got[6][1], multiple=True)
    client.call("channel_close", ch=1)    # returns only the 3 still unacked
    assert ready(client, "q") == 3


def test_nack_with_requeue_puts_messages_back_in_original_order_marked_redelivered(client):
    client.call("queue_declare", queue="q")
    fill(client, "q", 6)
    got = [client.call("get", queue="q") for _ in range(6)]
    # give back 3, 1 and 0 (out of order), ack the rest
    client.call("reject", delivery_tag=got[3]["delivery_tag"], requeue=True)
    client.call("nack", delivery_tag=got[1]["delivery_tag"], multiple=False, requeue=True)
    client.call("nack", delivery_tag=got[0]["delivery_tag"], multiple=False, requeue=True)
    again = [client.call("get", queue="q", no_ack=True) for _ in range(3)]
    assert [int(g["body"]) for g in again] == [0, 1, 3]
    assert all(g["redelivered"] is True for g in again)
    assert client.call("get", queue="q") is None


def test_requeued_messages_go_before_never_delivered_ones(client):
    client.call("queue_declare", queue="q")
    fill(client, "q", 5)
    got = client.call("get", queue="q")
    client.call("nack", delivery_tag=got["delivery_tag"], requeue=True)
    assert client.call("get", queue="q", no_ack=True)["body"] == b"0"


def test_reject_without_requeue_drops_the_message(client):
    client.call("queue_declare", queue="q")
    fill(client, "q", 1)
    got = client.call("get", queue="q")
    client.call("reject", delivery_tag=got["delivery_tag"], requeue=False)
    client.call("channel_close", ch=1)
    assert ready(client, "q") == 0


def test_nack_multiple_without_requeue(client):
    client.call("queue_declare", queue="q")
    fill(client, "q", 4)
    client.call("consume", ch=1, queue="q")
    got = client.take_deliveries(4)
    client.call("nack", ch=1, delivery_tag=got[2][1], multiple=True, requeue=False)
    client.call("channel_close", ch=1)
    assert ready(client, "q") == 1


def test_no_ack_consumer_needs_no_acks(client):
    client.call("queue_declare", queue="q")
    fill(client, "q", 5)
    client.call("consume", ch=1, queue="q", no_ack=True)
    client.take_deliveries(5)
    client.call("channel_close", ch=1)
    assert ready(client, "q") == 0


@pytest.mark.parametrize("op,args", [("ack", {"delivery_tag": 99}), ("ack", {"delivery_tag": 99, "multiple": True}),
                                     ("nack", {"delivery_tag": 7}), ("reject", {"delivery_tag": 5})])
def test_unknown_delivery_tag_is_a_clear_error_and_the_connection_lives(client, op, args):
    with pytest.raises(BrokerError) as err:
        client.call(op, ch=1, **args)
    assert err.value.code == "PRECONDITION_FAILED"
    assert "unknown delivery tag" in err.value.message
    client.call("queue_declare", queue="still-works")


def test_double_ack_is_refused(client):
    client.call("queue_declare", queue="q")
    fill(client, "q", 1)
    got = client.call("get", queue="q")
    client.call("ack", delivery_tag=got["delivery_tag"])
    with pytest.raises(BrokerError) as err:
        client.call("ack", delivery_tag=got["delivery_tag"])
    assert err.value.code == "PRECONDITION_FAILED"


def test_unacked_messages_of_a_dead_connection_go_to_another_consumer_redelivered(wire):
    producer, doomed, survivor = wire(), wire(), wire()
    producer.call("queue_declare", queue="jobs")
    doomed.call("basic_qos", ch=1, prefetch_count=5)
    doomed.call("consume", ch=1, queue="jobs")
    fill(producer, "jobs", 5)
    held = doomed.take_deliveries(5)
    doomed.call("ack", ch=1, delivery_tag=held[0][1])
    doomed.close()   # dies holding 4 unacked
    survivor.call("consume", ch=1, queue="jobs")
    again = survivor.take_deliveries(4)
    assert bodies(again) == [1, 2, 3, 4]
    assert all(e[2] is True for e in again)
    survivor.expect_no_deliveries()


def test_closing_a_channel_requeues_its_unacked_messages(client):
    client.call("queue_declare", queue="q")
    fill(client, "q", 3)
    client.call("consume", ch=2, queue="q")
    client.take_deliveries(3)
    assert ready(client, "q") == 0
    client.call("channel_close", ch=2)
    assert ready(client, "q") == 3
