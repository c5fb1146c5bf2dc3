"""Requests a hostile or buggy client sends: each gets a clear error, and nothing else is hurt.

Arguments nested deep, binary keys, huge maps, long names; publishes that fail inside the broker
under confirms; a topic binding made of hundreds of `#`. Each case was a crash, a lie or a
stall before the validation layer (serverbase/schema.py) and the fixes it came with.
"""

import time

import pytest

from clients.protocol.errors import BrokerError
from minibroker.exchanges.topic import TopicTrie
from minibroker_test_wire import Wire


def nested(depth):
    value = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def refused(client, op, **args):
    with pytest.raises(BrokerError) as err:
        client.call(op, **args)
    return err.value


BAD_ARGUMENTS = {
    "nested 1,021 deep": nested(1021),
    "binary and string keys": {"x-max-length": 10, b"x-bin": 1},
    "huge": {f"k{i}": "v" * 100 for i in range(5000)},
}


@pytest.mark.parametrize("case", list(BAD_ARGUMENTS))
def test_bad_durable_arguments_are_refused_and_other_declares_keep_working(case, start_minibroker):
    broker = start_minibroker()
    client = Wire(broker)
    try:
        err = refused(client, "queue_declare", queue="evil", durable=True, arguments=BAD_ARGUMENTS[case])
        assert err.code == "BAD_REQUEST" and "arguments" in err.message
        err = refused(client, "exchange_declare", exchange="evil-x", type="topic", durable=True,
                      arguments=BAD_ARGUMENTS[case])
        assert err.code == "BAD_REQUEST"
        client.call("queue_declare", queue="kept", durable=True)
        client.call("queue_declare", queue="gone", durable=True)
        err = refused(client, "queue_bind", queue="kept", exchange="amq.headers", arguments=BAD_ARGUMENTS[case])
        assert err.code == "BAD_REQUEST"
        client.call("queue_delete", queue="gone")
    finally:
        client.close()
    broker.restart()
    client = Wire(broker)
    try:
        assert client.call("queue_declare", queue="kept", passive=True)["queue"] == "kept"
        assert refused(client, "queue_declare", queue="gone", passive=True).code == "NOT_FOUND"
        assert refused(client, "queue_declare", queue="evil", passive=True).code == "NOT_FOUND"
    finally:
        client.close()


@pytest.mark.parametrize("op, args, words", [
    ("queue_declare", {"queue": ["q"]}, "'queue' must be a string"),
    ("queue_declare", {"queue": "q", "durable": "yes"}, "'durable' must be a boolean"),
    ("queue_declare", {"queue": "€" * 86}, "258 bytes of UTF-8; the limit is 255"),
    ("exchange_declare", {"exchange": "x" * 256}, "limit is 255"),
    ("queue_bind", {"queue": "q", "exchange": "amq.topic", "routing_key": "k" * 256}, "limit is 255"),
    ("basic_qos", {"prefetch_count": 70000}, "0..65535"),
    ("basic_qos", {"prefetch_count": True}, "got boolean"),
    ("ack", {"delivery_tag": -1}, "must be an integer in 0.."),
    ("consume", {"queue": "q", "consumer_tag": {"t": 1}}, "'consumer_tag' must be a string"),
    ("get", {"queue": "q", "ch": 0}, "'ch' must be an integer in 1..65535"),
    ("channel_open", {"ch": 1, "frobs": 2}, "unknown argument 'frobs'"),
    ("publish_batch", {"messages": {"not": "a list"}}, "'messages' must be an array"),
])
def test_every_field_is_type_checked(client, op, args, words):
    client.call("queue_declare", queue="q")
    err = refused(client, op, **args)
    assert err.code == "BAD_REQUEST"
    if words:
        assert words in err.message, err.message
    assert client.call("ping")["pong"] is True


def test_a_headers_binding_with_a_binary_key_is_refused_and_publishes_still_confirm_truthfully(client):
    client.call("queue_declare", queue="hq")
    err = refused(client, "queue_bind", queue="hq", exchange="amq.headers", arguments={b"k": "v"})
    assert err.code == "BAD_REQUEST"
    client.call("queue_bind", queue="hq", exchange="amq.headers", arguments={"k": "v"})
    client.call("confirm_select")
    client.send("publish", exchange="amq.headers", routing_key="", body=b"m", properties={"headers": {"k": "v"}})
    client.wait(lambda: client.confirmed() == {1: True}, message="the ack of a routed message")
    assert client.call("queue_declare", queue="hq", passive=True)["message_count"] == 1


def test_an_absurd_expiration_is_nacked_not_acked(client):
    client.call("queue_declare", queue="q")
    client.call("confirm_select")
    client.send("publish", routing_key="q", body=b"a", properties={"expiration": "1" + "0" * 400})
    client.send("publish", routing_key="q", body=b"b", properties={"expiration": "60000"})
    client.wait(lambda: len(client.confirmed()) == 2, message="two confirms")
    assert client.confirmed() == {1: False, 2: True}
    assert client.async_error().code == "BAD_REQUEST"
    assert client.call("queue_declare", queue="q", passive=True)["message_count"] == 1


def test_a_publish_with_a_mistyped_field_takes_its_sequence_number_as_a_nack(client):
    client.call("queue_declare", queue="q")
    client.call("confirm_select")
    client.send("publish", routing_key="q", body=b"a")
    client.send("publish", routing_key=["q"], body=b"b")
    client.send("publish", routing_key="q", body=b"c", mandatory="yes")
    client.send("publish", routing_key="q", body=b"d")
    client.wait(lambda: len(client.confirmed()) == 4, message="four confirms")
    assert client.confirmed() == {1: True, 2: False, 3: False, 4: True}


def test_publish_batch_gives_every_entry_after_a_bad_one_its_sequence_number(client):
    client.call("queue_declare", queue="q")
    client.call("confirm_select")
    batch = [["", "q", b"1", None, False],
             ["", "q", b"2", {"expiration": "1" + "0" * 400}, False],
             ["", "q", b"3", None, False],
             ["", "q", b"4", {"headers": nested(100)}, False],
             ["", "q" * 300, b"5", None, False],
             ["", "q", b"6", None, False]]
    client.send("publish_batch", messages=batch)
    client.wait(lambda: len(client.confirmed()) == 6, message="six confirms")
    assert client.confirmed() == {1: True, 2: False, 3: True, 4: False, 5: False, 6: True}
    assert client.call("queue_declare", queue="q", passive=True)["message_count"] == 3


def test_routing_keys_over_255_bytes_are_refused_at_publish(client):
    client.call("queue_declare", queue="q")
    client.call("confirm_select")
    client.send("publish", exchange="amq.topic", routing_key="a." * 128, body=b"x")
    client.wait(lambda: client.confirmed() == {1: False}, message="a nack")
    assert "limit is 255" in client.async_error().message


def test_topic_matching_is_polynomial_in_hash_words():
    trie = TopicTrie()
    trie.add(".".join(["#"] * 500), "all")
    trie.add(".".join(["#"] * 500) + ".never", "none")
    started = time.perf_counter()
    assert trie.match(".".join(["w"] * 501)) == ["all"]
    assert time.perf_counter() - started < 10   # about 0.4 s on a loaded 2-core machine; was minutes


def test_a_topic_binding_of_127_hashes_routes_a_128_word_key_quickly(client):
    client.call("queue_declare", queue="q")
    client.call("queue_bind", queue="q", exchange="amq.topic", routing_key=".".join(["#"] * 127))
    client.call("confirm_select")
    started = time.monotonic()
    client.send("publish", exchange="amq.topic", routing_key=".".join(["w"] * 128), body=b"x")
    client.wait(lambda: client.confirmed() == {1: True}, timeout=10, message="the confirm")
    assert time.monotonic() - started < 5
    assert client.call("queue_declare", queue="q", passive=True)["message_count"] == 1
