"""The memory alarm: a producer outrunning everyone is paused (TCP backpressure), nothing is lost."""

import threading

from harness import ServerThread, wait_until
from minibroker.server import MinibrokerServer
from minibroker_test_wire import Wire


TOTAL = 4000   # messages of 10 kB


class SmallMemoryBroker(MinibrokerServer):
    max_queued_bytes = 200_000


def test_a_flooding_producer_is_paused_until_consumers_catch_up(tmp_path):
    server = ServerThread(SmallMemoryBroker, tmp_path / "mb").start()
    try:
        producer, consumer = Wire(server), Wire(server)
        producer.call("queue_declare", queue="q")
        batch = [["", "q", b"x" * 10_000, None, False]] * 10          # 100 kB per batch
        done = threading.Event()

        def flood():
            for _ in range(TOTAL // 10):                                # 40 MB in all
                producer.send("publish_batch", ch=1, messages=batch)
                producer.flush()
            producer.conn.call("ping", {}, timeout=60)
            done.set()

        thread = threading.Thread(target=flood, daemon=True)
        thread.start()
        wait_until(lambda: server.call(lambda: bool(server.server.flow_control.blocked)), message="the alarm")
        queued = server.call(server.server.flow_control.queued_bytes)
        # Bounded by the limit plus what arrives between two checks (one tick), far below the flood.
        assert queued < TOTAL * 10_000 // 2
        assert not done.is_set()
        consumer.call("consume", queue="q", no_ack=True)
        got = 0
        while got < TOTAL:
            consumer.pump(1.0)
            got += len(consumer.deliveries)
            consumer.deliveries.clear()
        assert done.wait(30)
        thread.join(5)
        assert got == TOTAL
        producer.close()
        consumer.close()
    finally:
        server.stop()


def test_empty_messages_count_what_they_cost_and_trip_the_alarm(tmp_path):
    # 20,000 empty messages: zero body bytes, but about 5 MB of broker memory.
    server = ServerThread(SmallMemoryBroker, tmp_path / "mb").start()
    try:
        producer, consumer = Wire(server), Wire(server)
        producer.call("queue_declare", queue="q")
        for _ in range(20):
            producer.send("publish_batch", ch=1, messages=[["", "q", b"", None, False]] * 1000)
        producer.flush()
        wait_until(lambda: server.call(lambda: bool(server.server.flow_control.blocked)), message="the alarm")
        assert server.call(server.server.flow_control.queued_bytes) > SmallMemoryBroker.max_queued_bytes
        consumer.call("consume", queue="q", no_ack=True)
        consumer.wait(lambda: len(consumer.deliveries) >= 20_000, timeout=30, message="every message")
        producer.conn.call("ping", {}, timeout=30)     # unblocked once the queue drained
        producer.close()
        consumer.close()
    finally:
        server.stop()


def test_a_publisher_that_also_consumes_cannot_bypass_the_alarm(tmp_path):
    server = ServerThread(SmallMemoryBroker, tmp_path / "mb").start()
    try:
        producer, consumer = Wire(server), Wire(server)
        producer.call("queue_declare", queue="q")
        producer.call("queue_declare", queue="side")
        producer.call("consume", ch=2, queue="side", no_ack=True)     # consumes on its connection
        producer.call("confirm_select", ch=1)
        total = 4000                                                  # 10 MB: under the hold limit
        for _ in range(total // 10):
            producer.send("publish_batch", ch=1, messages=[["", "q", b"x" * 2_500, None, False]] * 10)
            producer.flush()
        fc = server.server.flow_control
        # Its publishes are held, not queued; the queue stays near the limit (before, all 10 MB went in).
        assert producer.call("queue_declare", queue="side", passive=True)["queue"] == "side"
        wait_until(lambda: server.call(lambda: bool(fc.holding)), message="its publishes held")
        assert server.call(fc.queued_bytes) < total * 2_500 // 2
        assert len(producer.confirmed()) < total
        # Its deliveries keep coming while its publishes wait.
        consumer.call("publish", routing_key="side", body=b"to the producer")
        producer.wait(lambda: producer.deliveries, message="a delivery to the held publisher")
        consumer.call("consume", queue="q", no_ack=True)
        consumer.wait(lambda: len(consumer.deliveries) >= total, timeout=30, message="every message")
        producer.wait(lambda: len(producer.confirmed()) == total, timeout=30, message="every confirm")
        assert all(producer.confirmed().values())
        wait_until(lambda: server.call(lambda: not fc.holding and not fc.alarm), message="the alarm cleared")
        producer.close()
        consumer.close()
    finally:
        server.stop()
