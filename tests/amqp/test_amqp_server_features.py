"""minibroker-side AMQP behaviour that needs a look inside the server or a restart: the memory
alarm's connection.blocked / unblocked, channel.flow, and durability through a restart."""

import pika
import pytest

from harness import wait_until

pytestmark = pytest.mark.timeout(60)


def _params(thread, **kwargs):
    return pika.ConnectionParameters(thread.host, thread.server.listener("amqp").port, **kwargs)


def test_the_memory_alarm_blocks_and_unblocks_an_amqp_publisher(start_minibroker):
    thread = start_minibroker(amqp_port=0)

    def small_limit():
        fc = thread.server.flow_control
        fc.limit, fc.resume_below = 100_000, 80_000
    thread.call(small_limit)
    conn = pika.BlockingConnection(_params(thread))
    events = []
    conn.add_on_connection_blocked_callback(lambda c, frame: events.append("blocked"))
    conn.add_on_connection_unblocked_callback(lambda c, frame: events.append("unblocked"))
    ch = conn.channel()
    ch.queue_declare("filling")
    for _ in range(200):
        ch.basic_publish("", "filling", b"x" * 1000)
    wait_until(lambda: conn.process_data_events(0.01) or "blocked" in events, message="connection.blocked")
    other = pika.BlockingConnection(_params(thread))
    other.channel().queue_purge("filling")
    wait_until(lambda: conn.process_data_events(0.01) or "unblocked" in events, message="connection.unblocked")
    assert events == ["blocked", "unblocked"]
    other.close()
    conn.close()


def test_channel_flow_stops_and_restarts_deliveries(start_minibroker):
    thread = start_minibroker(amqp_port=0)
    conn = pika.BlockingConnection(_params(thread))
    ch = conn.channel()
    ch.queue_declare("flowing")
    got = []
    ch.basic_consume("flowing", lambda c, m, p, b: got.append(b), auto_ack=True)
    ch.flow(False)
    ch.basic_publish("", "flowing", b"held")
    ch.queue_declare("flowing", passive=True)     # a round trip: the publish was applied
    # The server's delivery pass runs on its loop right after; by the time this call runs there,
    # the message would have left the queue if flow(False) had not stopped it.
    assert thread.call(lambda: len(thread.server.broker.queues["flowing"].ready)) == 1
    conn.process_data_events(0)
    assert got == []
    ch.flow(True)
    wait_until(lambda: conn.process_data_events(0.01) or got, message="delivery after flow(True)")
    assert got == [b"held"]
    conn.close()


def test_persistent_messages_published_over_amqp_survive_a_restart(start_minibroker, tmp_path):
    thread = start_minibroker(tmp_path / "data", amqp_port=0)
    conn = pika.BlockingConnection(_params(thread))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("kept", durable=True)
    for i in range(3):
        ch.basic_publish("", "kept", f"m{i}".encode(), pika.BasicProperties(delivery_mode=2, headers={"i": i}))
    conn.close()
    thread.restart()
    conn = pika.BlockingConnection(_params(thread))
    ch = conn.channel()
    got = [ch.basic_get("kept", auto_ack=True) for _ in range(3)]
    assert [(b, p.headers, p.delivery_mode) for _, p, b in got] == [(f"m{i}".encode(), {"i": i}, 2) for i in range(3)]
    conn.close()


def test_a_blocked_publisher_is_not_taken_for_a_silent_peer(start_minibroker):
    """While the memory alarm stops reading from a publisher, its heartbeats wait unread in the
    socket: the server must not close it for missing them."""
    thread = start_minibroker(amqp_port=0)

    def small_limit():
        fc = thread.server.flow_control
        fc.limit, fc.resume_below = 100_000, 80_000
    thread.call(small_limit)
    conn = pika.BlockingConnection(_params(thread, heartbeat=1))
    blocked = []
    conn.add_on_connection_blocked_callback(lambda c, frame: blocked.append(True))
    ch = conn.channel()
    ch.queue_declare("full")
    for _ in range(200):
        ch.basic_publish("", "full", b"x" * 1000)
    wait_until(lambda: conn.process_data_events(0.01) or blocked, message="connection.blocked")
    conn.sleep(3)                     # three heartbeat periods of unread heartbeats
    assert conn.is_open
    other = pika.BlockingConnection(_params(thread))
    other.channel().queue_purge("full")
    other.close()
    assert ch.queue_declare("full", passive=True).method.queue == "full"    # read again, served
    conn.close()
