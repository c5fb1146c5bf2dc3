"""A replaying `consume(n)` keeps the cyclic GC paused while fetch replies arrive in pieces.

`Consumer._consume` pauses the collector while it builds a batch of Messages (each is a
GC-tracked object, and a gen-0 pass over 100,000 young Messages costs milliseconds) and lets
it run again only once a wait brought nothing for 50 ms (`Consumer._arrived`). A 1 MiB fetch
reply comes in many reads; a read that brings part of one is data arriving, not idling. Here
the consumer's socket buffer is made small so every reply comes in pieces, as it does on a
busy machine.
"""

import gc
import socket
import time

import pytest

from clients.log import TopicPartition

RECORDS = 30_000


def test_consume_keeps_the_gc_paused_while_a_large_reply_arrives_in_pieces(producer, consumer, make_topic):
    topic = make_topic(1)
    p = producer(**{"linger.ms": 50})
    for i in range(RECORDS):
        p.produce(topic, b"%0100d" % i, partition=0)
    assert p.flush(30) == 0
    c = consumer()
    c._conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    c.assign([TopicPartition(topic, 0, 0)])
    assert len(c.consume(1, 10)) == 1  # the position is resolved and the first fetch is in

    idle = []
    wait = c._wait

    def timed_wait(deadline, cap=None):
        start = time.monotonic()
        wait(deadline, cap)
        if time.monotonic() - start >= 0.04:
            idle.append(time.monotonic() - start)
    c._wait = timed_wait
    collections = []

    def on_gc(phase, info):
        if phase == "start":
            collections.append(info["generation"])
    gc.callbacks.append(on_gc)
    try:
        got = c.consume(RECORDS - 1, 30)
    finally:
        gc.callbacks.remove(on_gc)
    assert [m.offset() for m in got] == list(range(1, RECORDS))
    if idle:
        pytest.skip(f"the server left the consumer idle for {max(idle) * 1000:.0f} ms (a busy machine): "
                    "the collector was allowed to run")
    assert collections == []
