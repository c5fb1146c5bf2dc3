"""Dead-lettering with x-death, TTL (queue and message), length limits and overflow modes, priorities."""

import time

import pytest

import minibroker.server
from harness import wait_until
from minibroker_test_wire import Wire

DLX = {"x-dead-letter-exchange": "dlx"}


@pytest.fixture
def dlq(client):
    """A fanout dead-letter exchange `dlx` feeding queue `dlq`."""
    client.call("exchange_declare", exchange="dlx", type="fanout")
    client.call("queue_declare", queue="dlq")
    client.call("queue_bind", queue="dlq", exchange="dlx")
    return "dlq"


def dead(client, n=1, timeout=5.0):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        g = client.call("get", queue="dlq", no_ack=True)
        if g is not None:
            got.append(g)
        elif time.monotonic() > deadline:
            raise AssertionError(f"only {len(got)} of {n} messages reached the dead-letter queue")
        else:
            time.sleep(0.01)
    return got


def death(msg):
    return msg["properties"]["headers"]["x-death"]


def test_rejected_message_is_dead_lettered_with_x_death(client, dlq):
    client.call("queue_declare", queue="q", arguments=DLX)
    client.call("publish", routing_key="q", body=b"bad", properties={"headers": {"k": 1}})
    got = client.call("get", queue="q")
    client.call("reject", delivery_tag=got["delivery_tag"], requeue=False)
    (msg,) = dead(client)
    assert msg["body"] == b"bad" and msg["exchange"] == "dlx" and msg["routing_key"] == "q"
    headers = msg["properties"]["headers"]
    (entry,) = headers["x-death"]
    assert {k: entry[k] for k in ("queue", "reason", "count", "exchange", "routing-keys")} == \
        {"queue": "q", "reason": "rejected", "count": 1, "exchange": "", "routing-keys": ["q"]}
    assert isinstance(entry["time"], int)
    assert headers["k"] == 1
    assert (headers["x-first-death-queue"], headers["x-first-death-reason"], headers["x-first-death-exchange"]) == \
        ("q", "rejected", "")


def test_dead_letter_routing_key_replaces_the_original(client):
    client.call("queue_declare", queue="dlq")
    client.call("queue_declare", queue="q", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"})
    client.call("publish", routing_key="q", body=b"x")
    got = client.call("get", queue="q")
    client.call("nack", delivery_tag=got["delivery_tag"], requeue=False)
    (msg,) = dead(client)
    assert msg["routing_key"] == "dlq"


def test_x_death_count_grows_for_the_same_queue_and_reason(client):
    # q dead-letters to dlq... which sends rejected messages back to q: a client-driven loop.
    client.call("queue_declare", queue="q", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "back"})
    client.call("queue_declare", queue="back", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "q"})
    client.call("publish", routing_key="q", body=b"x")
    for queue in ("q", "back", "q"):
        got = None
        deadline = time.monotonic() + 5
        while got is None and time.monotonic() < deadline:
            got = client.call("get", queue=queue)
        client.call("reject", delivery_tag=got["delivery_tag"], requeue=False)
    got = client.call("get", queue="back", no_ack=True)
    deaths = death(got)
    assert [(d["queue"], d["count"]) for d in deaths] == [("q", 2), ("back", 1)]
    assert got["properties"]["headers"]["x-first-death-queue"] == "q"


def test_poison_message_stops_at_the_delivery_limit_and_lands_in_the_dlq(client, dlq):
    client.call("queue_declare", queue="q", arguments={**DLX, "x-delivery-limit": 2})
    client.call("publish", routing_key="q", body=b"poison")
    client.call("basic_qos", ch=1, prefetch_count=1)
    client.call("consume", ch=1, queue="q")
    deliveries = 0
    while True:
        entries = client.take_deliveries(1)
        headers = (entries[0][6] or {}).get("headers") or {}
        assert headers.get("x-delivery-count", 0) == deliveries
        deliveries += 1
        client.call("nack", ch=1, delivery_tag=entries[0][1], requeue=True)
        if deliveries == 3:
            break
    client.expect_no_deliveries()
    (msg,) = dead(client)
    assert death(msg)[0]["reason"] == "delivery_limit"
    assert deliveries == 3   # limit 2: two returns allowed, the third return dead-letters it


def test_delivery_limit_also_counts_returns_from_dying_consumers(wire):
    admin = wire()
    admin.call("exchange_declare", exchange="dlx", type="fanout")
    admin.call("queue_declare", queue="dlq")
    admin.call("queue_bind", queue="dlq", exchange="dlx")
    admin.call("queue_declare", queue="q", arguments={**DLX, "x-delivery-limit": 1})
    admin.call("publish", routing_key="q", body=b"crashes-consumers")
    for _ in range(2):
        c = wire()
        c.call("consume", queue="q")
        c.take_deliveries(1)
        c.close()
    (msg,) = dead(admin)
    assert death(msg)[0]["reason"] == "delivery_limit"


def test_queue_ttl_expires_messages_into_the_dlq(client, dlq):
    client.call("queue_declare", queue="q", arguments={**DLX, "x-message-ttl": 50})
    client.call("publish", routing_key="q", body=b"stale")
    (msg,) = dead(client)
    assert death(msg)[0]["reason"] == "expired"
    assert client.call("queue_declare", queue="q", passive=True)["message_count"] == 0


def test_per_message_expiration_is_never_delivered_and_is_dead_lettered(client, dlq):
    client.call("queue_declare", queue="q", arguments=DLX)
    client.call("publish", routing_key="q", body=b"short", properties={"expiration": "30"})
    client.call("publish", routing_key="q", body=b"long", properties={"expiration": "60000"})
    (msg,) = dead(client)  # waits, with a deadline, until the short one has expired
    assert msg["body"] == b"short"
    got = client.call("get", queue="q", no_ack=True)
    assert got["body"] == b"long"
    assert death(msg)[0]["reason"] == "expired"
    assert death(msg)[0]["original-expiration"] == "30"
    assert "expiration" not in msg["properties"]


def test_expired_messages_are_not_pushed_to_a_consumer(monkeypatch, start_minibroker):
    # With the periodic TTL sweep (every 50 ms) the message would usually be gone before the
    # consumer comes, and the check at delivery time would go untested: this server sweeps
    # once an hour.
    monkeypatch.setattr(minibroker.server, "TICK_SECONDS", 3600)
    client = Wire(start_minibroker())
    client.call("queue_declare", queue="q", arguments={"x-message-ttl": 20})
    client.call("publish", routing_key="q", body=b"old")
    # The scenario, not a wait for the broker: the message outlives its 20 ms TTL before a
    # consumer comes (the clock is monotonic, so after 50 ms it is past it).
    time.sleep(0.05)
    assert client.call("queue_declare", queue="q", passive=True)["message_count"] == 1   # not swept
    client.call("consume", queue="q", no_ack=True)
    client.expect_no_deliveries()
    assert client.call("queue_declare", queue="q", passive=True)["message_count"] == 0
    client.close()


def test_sweep_keeps_message_count_true_without_consumers(client):
    client.call("queue_declare", queue="q", arguments={"x-message-ttl": 30})
    for _ in range(5):
        client.call("publish", routing_key="q", body=b"x")
    wait_until(lambda: client.call("queue_declare", queue="q", passive=True)["message_count"] == 0,
               message="TTL sweep")


def test_max_length_drop_head_dead_letters_the_oldest(client, dlq):
    client.call("queue_declare", queue="q", arguments={**DLX, "x-max-length": 2})
    for i in range(4):
        client.call("publish", routing_key="q", body=b"%d" % i)
    assert client.call("queue_declare", queue="q", passive=True)["message_count"] == 2
    dropped = dead(client, 2)
    assert [m["body"] for m in dropped] == [b"0", b"1"]
    assert {death(m)[0]["reason"] for m in dropped} == {"maxlen"}
    assert client.call("get", queue="q", no_ack=True)["body"] == b"2"


def test_max_length_bytes(client):
    client.call("queue_declare", queue="q", arguments={"x-max-length-bytes": 10})
    for body in (b"aaaa", b"bbbb", b"cccc"):
        client.call("publish", routing_key="q", body=body)
    assert client.call("queue_declare", queue="q", passive=True)["message_count"] == 2
    assert client.call("get", queue="q", no_ack=True)["body"] == b"bbbb"


def test_reject_publish_nacks_the_publisher_and_keeps_the_old_messages(client):
    client.call("queue_declare", queue="q", arguments={"x-max-length": 2, "x-overflow": "reject-publish"})
    client.call("confirm_select", ch=1)
    client.send("publish_batch", ch=1, messages=[["", "q", b"%d" % i, None, False] for i in range(4)])
    client.wait(lambda: len(client.confirmed()) == 4, message="4 confirms")
    assert client.confirmed() == {1: True, 2: True, 3: False, 4: False}
    assert client.call("get", queue="q", no_ack=True)["body"] == b"0"


def test_reject_publish_dlx_nacks_and_dead_letters(client, dlq):
    client.call("queue_declare", queue="q", arguments={**DLX, "x-max-length": 1, "x-overflow": "reject-publish-dlx"})
    client.call("confirm_select", ch=1)
    client.send("publish", ch=1, routing_key="q", body=b"kept")
    client.send("publish", ch=1, routing_key="q", body=b"refused")
    client.wait(lambda: len(client.confirmed()) == 2, message="2 confirms")
    assert client.confirmed() == {1: True, 2: False}
    (msg,) = dead(client)
    assert msg["body"] == b"refused" and death(msg)[0]["reason"] == "maxlen"


def test_priority_queue_delivers_higher_priorities_first_fifo_within(client):
    client.call("queue_declare", queue="p", arguments={"x-max-priority": 5})
    order = [(1, b"low-1"), (5, b"high-1"), (3, b"mid"), (5, b"high-2"), (9, b"over-max"), (0, b"none"), (1, b"low-2")]
    for priority, body in order:
        client.call("publish", routing_key="p", body=body, properties={"priority": priority})
    got = [client.call("get", queue="p", no_ack=True)["body"] for _ in order]
    assert got == [b"high-1", b"high-2", b"over-max", b"mid", b"low-1", b"low-2", b"none"]


def test_priority_queue_requeue_keeps_place_within_its_level(client):
    client.call("queue_declare", queue="p", arguments={"x-max-priority": 2})
    for priority, body in ((2, b"a"), (2, b"b"), (1, b"c")):
        client.call("publish", routing_key="p", body=body, properties={"priority": priority})
    first = client.call("get", queue="p")
    client.call("nack", delivery_tag=first["delivery_tag"], requeue=True)
    got = [client.call("get", queue="p", no_ack=True)["body"] for _ in range(3)]
    assert got == [b"a", b"b", b"c"]


def test_expiry_loop_back_into_the_same_queue_is_dropped(client):
    # A queue that dead-letters expired messages to itself: RabbitMQ drops them rather than spin.
    client.call("queue_declare", queue="loop", arguments={"x-message-ttl": 20, "x-dead-letter-exchange": ""})
    client.call("publish", routing_key="loop", body=b"x")
    wait_until(lambda: client.call("queue_declare", queue="loop", passive=True)["message_count"] == 0,
               message="the looping message to be dropped")
    client.expect_no_deliveries()
    assert client.call("get", queue="loop") is None


def test_per_message_expiry_behind_a_live_head_is_swept(client):
    client.call("queue_declare", queue="q")
    client.call("publish", routing_key="q", body=b"live")
    client.call("publish", routing_key="q", body=b"brief", properties={"expiration": "10"})
    wait_until(lambda: client.call("queue_declare", queue="q", passive=True)["message_count"] == 1,
               message="sweep of an expired message behind the head")


def test_priority_queue_with_ttl_expires_messages(client):
    client.call("queue_declare", queue="pq", arguments={"x-max-priority": 3, "x-message-ttl": 20})
    client.call("publish", routing_key="pq", body=b"a", properties={"priority": 1})
    client.call("publish", routing_key="pq", body=b"b", properties={"priority": 3})
    wait_until(lambda: client.call("queue_declare", queue="pq", passive=True)["message_count"] == 0,
               message="priority queue TTL sweep")
