"""A log connection waits for data in the receive itself (`RpcConnection.receive_within`): the
socket's receive timeout (SO_RCVTIMEO) bounds a blocking recv, instead of a poll() followed by
a recv. A wait still lasts its whole timeout when nothing comes, and a blocking call made after
such a wait (whose socket still has the timeout set) still waits for its reply."""

import time

import pytest

from clients.log import TopicPartition
from clients.log.connection import LogConnection, parse_bootstrap
from clients.rpc import KERNEL_WAIT_MIN


def test_a_poll_with_nothing_to_read_lasts_its_timeout_and_waits_in_the_receive(consumer, make_topic):
    topic = make_topic(1)
    c = consumer()
    c.assign([TopicPartition(topic, 0, 0)])
    assert c.poll(0.2) is None
    started = time.monotonic()
    assert c.poll(0.3) is None
    waited = time.monotonic() - started
    # Not early: the receive's timeout is rounded down, and poll() waits out the rest.
    assert 0.3 <= waited < 2.0, waited
    assert c._conn._recv_timeout is not None   # the wait was made in the receive


def test_a_receive_within_ends_within_its_timeout_when_nothing_comes(bootstrap, make_topic):
    conn = LogConnection(*parse_bootstrap(bootstrap))
    try:
        for timeout in (KERNEL_WAIT_MIN, 0.1):
            started = time.monotonic()
            with pytest.raises(BlockingIOError):
                conn.receive_within(timeout)
            waited = time.monotonic() - started
            assert timeout - 0.015 <= waited <= timeout + 0.5, (timeout, waited)
    finally:
        conn.close()


def test_a_call_without_timeout_after_a_kernel_wait_waits_for_its_reply(bootstrap, make_topic):
    topic = make_topic(1)
    conn = LogConnection(*parse_bootstrap(bootstrap))
    try:
        with pytest.raises(BlockingIOError):
            conn.receive_within(KERNEL_WAIT_MIN)   # leaves a ~10 ms receive timeout on the socket
        # A long poll answered after 300 ms: a receive bounded by that timeout would give up.
        result = conn.call("fetch", {"partitions": [[topic, 0, 0]], "max_wait_ms": 300}, timeout=None)
        assert result["results"][0][:2] == [topic, 0]
    finally:
        conn.close()


def test_a_wait_longer_than_any_socket_timeout_still_gets_its_reply(bootstrap):
    conn = LogConnection(*parse_bootstrap(bootstrap))
    try:
        got = []
        conn.send_with("metadata", {}, lambda result, error: got.append((result, error)))
        # A timeout past what poll() or SO_RCVTIMEO can hold (a consumer's poll(1e20)).
        while not got:
            assert conn.pump(1e20)
        assert got[0][1] is None
    finally:
        conn.close()
