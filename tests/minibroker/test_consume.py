"""Push consumers and get: round-robin, prefetch, batching, single active consumer, backpressure."""

import pytest

from clients.protocol.errors import BrokerError


def fill(c, queue, n, size=8, priority=None):
    props = {"priority": priority} if priority is not None else None
    msgs = [["", queue, b"%d" % i + b"." * max(size - 6, 0), props, False] for i in range(n)]
    for i in range(0, n, 500):
        c.send("publish_batch", ch=1, messages=msgs[i:i + 500])
    c.call("ping")


def body_index(entry):
    return int(entry[5].split(b".")[0])


def test_competing_consumers_share_work_without_loss_or_duplication(wire):
    producer = wire()
    producer.call("queue_declare", queue="work")
    consumers = [wire() for _ in range(3)]
    for c in consumers:
        c.call("basic_qos", ch=1, prefetch_count=10)
        c.call("consume", ch=1, queue="work")
    fill(producer, "work", 600)
    seen = []
    counts = []
    share = {id(c): 0 for c in consumers}
    remaining = 600
    while remaining:
        progressed = False
        for c in consumers:
            c.pump(0.01)
            if c.deliveries:
                got = [e for _, e in c.deliveries]
                c.deliveries.clear()
                seen.extend(body_index(e) for e in got)
                c.send("ack", ch=1, delivery_tag=got[-1][1], multiple=True)
                c.flush()
                remaining -= len(got)
                share[id(c)] += len(got)
                progressed = True
        assert remaining >= 0
        if not progressed:
            counts.append(0)
            assert len(counts) < 500, "consumers stopped receiving"
    assert sorted(seen) == list(range(600))
    assert all(n >= 100 for n in share.values()), share
    assert producer.call("queue_declare", queue="work", passive=True)["message_count"] == 0


def test_round_robin_alternates_between_consumers(wire):
    a, b = wire(), wire()
    a.call("queue_declare", queue="rr")
    a.call("consume", queue="rr", no_ack=True)
    b.call("consume", queue="rr", no_ack=True)
    fill(a, "rr", 10)
    got_a = [body_index(e) for e in a.take_deliveries(5)]
    got_b = [body_index(e) for e in b.take_deliveries(5)]
    assert sorted(got_a + got_b) == list(range(10))
    assert got_a in ([0, 2, 4, 6, 8], [1, 3, 5, 7, 9])


def test_prefetch_count_limits_unacked_deliveries_per_consumer(client):
    client.call("queue_declare", queue="q")
    fill(client, "q", 20)
    client.call("basic_qos", ch=1, prefetch_count=3)
    client.call("consume", ch=1, queue="q")
    first = client.take_deliveries(3)
    client.expect_no_deliveries()
    client.send("ack", ch=1, delivery_tag=first[1][1], multiple=True)   # frees two
    assert [body_index(e) for e in client.take_deliveries(2)] == [3, 4]
    client.expect_no_deliveries()


def test_deliveries_come_in_batches_up_to_the_prefetch(client):
    client.call("queue_declare", queue="q")
    fill(client, "q", 1000)
    client.call("basic_qos", ch=1, prefetch_count=1000)
    client.call("consume", ch=1, queue="q")
    client.take_deliveries(1000)
    assert client.deliver_frames <= 3


def test_global_prefetch_is_shared_by_the_channels_consumers(client):
    for q in ("a", "b"):
        client.call("queue_declare", queue=q)
        fill(client, q, 10)
    client.call("basic_qos", ch=1, prefetch_count=4, **{"global": True})
    client.call("consume", ch=1, queue="a")
    client.call("consume", ch=1, queue="b")
    client.take_deliveries(4)
    client.expect_no_deliveries()


def test_qos_without_global_applies_to_consumers_created_after(client):
    client.call("queue_declare", queue="q")
    fill(client, "q", 10)
    client.call("basic_qos", ch=1, prefetch_count=2)
    client.call("consume", ch=1, queue="q")
    client.call("basic_qos", ch=1, prefetch_count=5)   # does not change the existing consumer
    client.take_deliveries(2)
    client.expect_no_deliveries()


def test_get_pulls_one_message_and_reports_the_rest(client):
    client.call("queue_declare", queue="q")
    assert client.call("get", queue="q") is None
    fill(client, "q", 3)
    got = client.call("get", queue="q", no_ack=False)
    assert got["body"].startswith(b"0") and got["message_count"] == 2 and got["redelivered"] is False
    assert got["routing_key"] == "q" and got["exchange"] == ""
    client.call("ack", delivery_tag=got["delivery_tag"])
    got = client.call("get", queue="q", no_ack=True)
    assert got["body"].startswith(b"1")


def test_cancel_stops_deliveries_and_keeps_unacked_messages_ackable(client):
    client.call("queue_declare", queue="q")
    client.call("basic_qos", ch=1, prefetch_count=1)
    tag = client.call("consume", ch=1, queue="q")["consumer_tag"]
    fill(client, "q", 3)
    (first,) = client.take_deliveries(1)
    client.call("cancel", ch=1, consumer_tag=tag)
    client.call("ack", ch=1, delivery_tag=first[1])
    client.expect_no_deliveries()
    assert client.call("queue_declare", queue="q", passive=True)["message_count"] == 2


def test_consumer_tags_are_unique_per_channel(client):
    client.call("queue_declare", queue="q")
    assert client.call("consume", queue="q", consumer_tag="mine") == {"consumer_tag": "mine"}
    with pytest.raises(BrokerError) as err:
        client.call("consume", queue="q", consumer_tag="mine")
    assert err.value.code == "PRECONDITION_FAILED"


def test_exclusive_consumer_refuses_company(wire):
    a, b = wire(), wire()
    a.call("queue_declare", queue="q")
    a.call("consume", queue="q", exclusive=True)
    with pytest.raises(BrokerError) as err:
        b.call("consume", queue="q")
    assert err.value.code == "RESOURCE_LOCKED"


def test_single_active_consumer_gets_everything_until_it_goes(wire):
    a, b = wire(), wire()
    a.call("queue_declare", queue="sac", arguments={"x-single-active-consumer": True})
    tag_a = a.call("consume", queue="sac", no_ack=True)["consumer_tag"]
    b.call("consume", queue="sac", no_ack=True)
    fill(a, "sac", 10)
    assert len(a.take_deliveries(10)) == 10
    b.expect_no_deliveries()
    a.call("cancel", consumer_tag=tag_a)
    fill(a, "sac", 5)
    assert len(b.take_deliveries(5)) == 5


def test_deliver_frames_stay_under_the_clients_max_frame(wire):
    c, producer = wire(max_frame=64 * 1024), wire()
    c.call("queue_declare", queue="big")
    fill(producer, "big", 40, size=10_000)
    c.call("consume", queue="big", no_ack=True)
    assert len(c.take_deliveries(40)) == 40
    assert c.deliver_frames >= 7     # 400 kB in frames of at most 64 KiB


def test_a_message_larger_than_the_clients_max_frame_is_rejected_not_looped(wire):
    small, producer = wire(max_frame=4096), wire()
    producer.call("queue_declare", queue="q", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"})
    producer.call("queue_declare", queue="dlq")
    producer.call("publish", routing_key="q", body=b"x" * 10_000)
    small.call("consume", queue="q")
    error = small.async_error()
    assert error.code == "MESSAGE_TOO_LARGE"
    got = producer.call("get", queue="dlq", no_ack=True)
    assert got["properties"]["headers"]["x-death"][0]["reason"] == "rejected"


def test_consume_from_a_missing_queue_is_not_found_and_connection_lives(client):
    with pytest.raises(BrokerError) as err:
        client.call("consume", queue="ghost")
    assert err.value.code == "NOT_FOUND"
    assert client.call("ping")["pong"] is True


def test_backpressure_pauses_a_consumer_that_does_not_read(wire, broker):
    producer, slow = wire(), wire()
    producer.call("queue_declare", queue="flood")
    slow.call("consume", queue="flood", no_ack=True)
    body = b"x" * 60_000
    for _ in range(20):
        producer.send("publish_batch", ch=1, messages=[["", "flood", body, None, False]] * 50)
        producer.call("ping")
    # The slow client never read: the server stopped pushing and kept the rest queued.
    left = producer.call("queue_declare", queue="flood", passive=True)["message_count"]
    assert left > 0
    total = 1000
    got = 0
    while got < total:
        slow.pump(1.0)
        got += len(slow.deliveries)
        slow.deliveries.clear()
    assert got == total
