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
