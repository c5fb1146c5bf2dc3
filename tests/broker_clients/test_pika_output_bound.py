"""Publishes and acks reach the wire within a small bound whatever the program does next.

pika writes a publish or an ack to the socket before the call returns; our client batches
them and has a background flusher write what is buffered within `flush_delay` (1 ms by
default). Here the program makes a burst, then blocks in something that is not the connection
(a threading.Event), and the broker must see all of it meanwhile.
"""

import threading
import time

from harness import wait_until

from clients import broker as pika


def _queue(server, name):
    return server.call(lambda: server.server.broker.queues[name])


def _in_thread(target):
    done = threading.Event()
    errors = []

    def run():
        try:
            target(done)
        except BaseException as exc:  # surfaced by the test below
            errors.append(exc)
            done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return done, thread, errors


def test_a_burst_of_publishes_is_sent_while_the_program_waits(minibroker_server, pika_params):
    setup = pika.BlockingConnection(pika_params)
    setup.channel().queue_declare("burst")

    def publisher(done):
        conn = pika.BlockingConnection(pika_params)
        ch = conn.channel()
        props = pika.BasicProperties(content_type="text/plain")
        for i in range(1500):
            ch.basic_publish("", "burst", b"m%04d" % i + b"." * 250, properties=props if i % 2 else None)
        done.wait(30)  # not the connection: pika has sent everything by now, so must we
        conn.close()

    done, thread, errors = _in_thread(publisher)
    try:
        wait_until(lambda: len(_queue(minibroker_server, "burst").ready) == 1500, timeout=10,
                   message="all 1500 publishes reach the broker while the publisher waits")
        assert not errors
    finally:
        done.set()
        thread.join(10)
        setup.close()


def test_acks_are_sent_while_the_program_waits(minibroker_server, pika_params):
    setup = pika.BlockingConnection(pika_params)
    setup_ch = setup.channel()
    setup_ch.queue_declare("acks")
    for i in range(300):
        setup_ch.basic_publish("", "acks", b"%d" % i)
    setup.process_data_events(0)
    wait_until(lambda: len(_queue(minibroker_server, "acks").ready) == 300, timeout=10)
    got = threading.Event()

    def consumer(done):
        conn = pika.BlockingConnection(pika_params)
        ch = conn.channel()
        tags = []
        for _ in range(300):
            method, _, _ = ch.basic_get("acks")
            tags.append(method.delivery_tag)
        for tag in tags:
            ch.basic_ack(tag)
        got.set()
        done.wait(30)
        conn.close()

    done, thread, errors = _in_thread(consumer)
    try:
        assert got.wait(20) and not errors
        wait_until(lambda: _queue(minibroker_server, "acks").unacked == 0, timeout=10,
                   message="every ack reaches the broker while the consumer waits")
    finally:
        done.set()
        thread.join(10)
        setup.close()


def test_flush_delay_is_configurable_and_checked(minibroker_server):
    import pytest
    with pytest.raises(ValueError):
        pika.ConnectionParameters("127.0.0.1", minibroker_server.port, flush_delay=-1)
    url = pika.URLParameters(f"amqp://127.0.0.1:{minibroker_server.port}/?flush_delay=0.0005")
    assert url.flush_delay == 0.0005
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", minibroker_server.port, flush_delay=0))
    try:
        ch = conn.channel()
        ch.queue_declare("zero-delay")
        for i in range(50):
            ch.basic_publish("", "zero-delay", b"x")
        wait_until(lambda: len(_queue(minibroker_server, "zero-delay").ready) == 50, timeout=5)
    finally:
        conn.close()


def test_no_publish_is_lost_or_doubled_while_the_flusher_races_the_program(minibroker_server):
    """basic_publish appends without a lock while the flusher takes batches from the same
    list: with a tiny flush_delay the two meet all the time; every message arrives once, in order."""
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", minibroker_server.port,
                                                             flush_delay=0.00005))
    try:
        ch = conn.channel()
        ch.queue_declare("race")
        for i in range(20_000):
            ch.basic_publish("", "race", b"%d" % i)
            if i % 997 == 0:
                time.sleep(0.0002)  # let the flusher in mid-burst
        wait_until(lambda: len(_queue(minibroker_server, "race").ready) >= 20_000, timeout=20)
        bodies = [m.body for m in _queue(minibroker_server, "race").ready]
        assert bodies == [b"%d" % i for i in range(20_000)]
    finally:
        conn.close()
