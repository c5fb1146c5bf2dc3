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


def rows(c, kind, key):
    return {row[key]: row for row in c.call("list", kind=kind)["rows"]}


@pytest.mark.parametrize("spanning", [False, True], ids=["one consumer", "two consumers, two queues"])
def test_ack_multiple_frees_each_consumers_prefetch_and_counts_each_queue(client, spanning):
    """`ack multiple` has a one-pass path for the usual case (one queue, one consumer) and the
    general one for anything else: both must free exactly the acked messages' credit."""
    client.call("basic_qos", ch=1, prefetch_count=4)
    for q in ("a", "b"):
        client.call("queue_declare", queue=q)
        fill(client, q, 6)
    client.call("consume", ch=1, queue="a", consumer_tag="ca")
    first = client.take_deliveries(4)
    if spanning:
        client.call("consume", ch=1, queue="b", consumer_tag="cb")
        first += client.take_deliveries(4)
    client.call("ack", ch=1, delivery_tag=first[-2][1], multiple=True)   # all but the last one
    # Each consumer is refilled up to its prefetch of 4 from the 2 its queue still holds.
    more = client.take_deliveries(4 if spanning else 2)
    assert sorted((e[0], int(e[5])) for e in more) == \
        ([("ca", 4), ("ca", 5), ("cb", 4), ("cb", 5)] if spanning else [("ca", 4), ("ca", 5)])
    client.expect_no_deliveries()
    queues = rows(client, "queues", "name")
    consumers = rows(client, "consumers", "consumer_tag")
    assert queues["a"]["messages_unacknowledged"] == consumers["ca"]["unacknowledged"] == (2 if spanning else 3)
    if spanning:
        assert queues["b"]["messages_unacknowledged"] == consumers["cb"]["unacknowledged"] == 3
    client.call("ack", ch=1, delivery_tag=more[-1][1], multiple=True)
    assert sum(q["messages_unacknowledged"] for q in rows(client, "queues", "name").values()) == 0
    assert sum(q["messages"] for q in rows(client, "queues", "name").values()) == (0 if spanning else 6)
