"""kill -9 at random moments while a producer publishes with confirms and a consumer acks.

After the restart, every message that was confirmed and whose ack the consumer had not sent
is in the queue exactly once (possibly flagged redelivered); nothing appears that was never
published, and nothing twice. Three seeds run by default; CRASH_SEEDS=N (or
HYPOTHESIS_PROFILE=deep, which means 25) runs more; one more run each for --fsync interval and
never, whose confirms also promise to survive a process crash.
"""

import os
import random
import threading
import time

import pytest

from clients.protocol.errors import BrokerError
from harness import wait_until
from store_wire import DurableClient

SEEDS = int(os.environ.get("CRASH_SEEDS", "25" if os.environ.get("HYPOTHESIS_PROFILE") == "deep" else "3"))
QUEUE = "crash-q"


class Producer(threading.Thread):
    def __init__(self, host, port, window=200):
        super().__init__(daemon=True)
        self.c = DurableClient(host, port)
        self.c.queue(QUEUE)
        self.c.confirm_select()
        self.window = window
        self.published: dict[int, bytes] = {}   # seq -> body

    def run(self):
        c = self.c
        try:
            while True:
                while c.seq - c._confirmed_upto < self.window:
                    body = b"msg-%d" % (c.seq + 1)
                    self.published[c.publish(QUEUE, body)] = body
                c.conn.flush()
                c.pump(1.0)
        except (BrokerError, OSError):
            pass

    def confirmed_bodies(self) -> set:
        return {self.published[s] for s in self.c.confirmed}


class Consumer(threading.Thread):
    def __init__(self, host, port):
        super().__init__(daemon=True)
        self.c = DurableClient(host, port)
        self.c.queue(QUEUE)
        self.acked: set = set()

    def run(self):
        c = self.c
        try:
            c.consume(QUEUE, prefetch=100)
            while True:
                c.pump(1.0)
                if c.deliveries:
                    batch, c.deliveries = c.deliveries, []
                    c.ack(batch[-1][1], multiple=True)
                    c.conn.flush()
                    self.acked.update(d[5] for d in batch)   # the ack left; it may not have arrived
        except (BrokerError, OSError):
            pass


# Every policy promises that a confirmed message survives kill -9 (docs/minibroker-durability.md 3.3).
# Small journal segments (the last case) make garbage collection and compaction run while the
# server is being killed.
CASES = ([("always", seed, None) for seed in range(SEEDS)]
         + [("interval", 1000, None), ("never", 1001, None), ("always", 1002, 64 * 1024)])


@pytest.mark.parametrize("policy,seed,segment_bytes", CASES)
def test_kill_9_loses_no_confirmed_message(spawn_server, tmp_path, policy, seed, segment_bytes):
    rng = random.Random(seed)
    extra = ["--fsync", policy]
    if segment_bytes:
        extra += ["--journal-segment-bytes", str(segment_bytes)]
    server = spawn_server("minibroker", data_dir=tmp_path / "data", extra_args=extra)
    all_confirmed, all_published, all_acked = set(), set(), set()
    for _round in range(2):
        producer = Producer(server.host, server.port)
        consumer = Consumer(server.host, server.port)
        producer.start()
        consumer.start()
        deadline = time.monotonic() + rng.uniform(0.2, 1.0)
        # Crash at a random moment, but only once something was confirmed.
        while time.monotonic() < deadline or not producer.c.confirmed:
            time.sleep(0.01)
            if time.monotonic() > deadline + 10:
                raise AssertionError("no confirm within 10 s")
        if segment_bytes:
            # With small segments, crash only once the journal's maintenance pass (every second)
            # has deleted or compacted a segment: the crash must land on collected garbage.
            def collected():
                probe = DurableClient(server.host, server.port)
                try:
                    store = probe.conn.call("server_info")["store"]
                finally:
                    probe.close()
                return store["segments_deleted"] + store["compactions"] > 0
            wait_until(collected, timeout=30, interval=0.1, message="a journal segment deleted or compacted")
        server.kill()
        producer.join(10)
        consumer.join(10)
        assert not producer.is_alive() and not consumer.is_alive()
        # Bodies are unique across rounds: prefix them with the round.
        all_published |= {b"%d:" % _round + b for b in producer.published.values()}
        all_confirmed |= {b"%d:" % _round + b for b in producer.confirmed_bodies()}
        all_acked |= {b"%d:" % _round + b for b in consumer.acked}
        server.start()
        # Re-label what is in the queue now by round: drain it, then check.
        c = DurableClient(server.host, server.port)
        c.queue(QUEUE)
        got = c.drain(QUEUE)
        c.close()
        bodies = [b"%d:" % _round + b for b, _ in got]
        assert len(bodies) == len(set(bodies)), "a message was recovered twice"
        assert set(bodies) <= all_published, "a message that was never published appeared"
        missing = (all_confirmed - all_acked) - set(bodies)
        assert not missing, f"{len(missing)} confirmed, unacked messages lost, e.g. {sorted(missing)[:3]}"
        # Everything is drained and acked now; the next round starts from an empty queue.
        all_confirmed -= set(bodies)
        all_confirmed -= all_acked
    log = server.stderr_text()
    assert "recovered" in log and "persistent messages" in log


# --fsync interval with a long interval: journal records reach the kernel only when a confirm
# or the interval asks, so a delivery record that waited for either would die with the process.
SLOW_WRITE_OUT = ("--fsync", "interval", "--fsync-interval-ms", "600000")


@pytest.mark.parametrize("how", ["get", "consume"])
def test_a_message_delivered_before_a_kill_9_comes_back_flagged_redelivered(spawn_server, how):
    """RabbitMQ's promise: a delivery without the redelivered flag has never been seen before.
    So the delivery's record is in the kernel before the delivery leaves the server."""
    server = spawn_server("minibroker", extra_args=SLOW_WRITE_OUT)
    c = DurableClient(server.host, server.port)
    c.queue(QUEUE)
    c.confirm_select()
    c.publish(QUEUE, b"job")
    c.wait_confirms()
    if how == "get":
        assert c.get(QUEUE)["redelivered"] is False
    else:
        c.consume(QUEUE)
        c.wait_for(lambda: c.deliveries, what="the delivery")
        assert c.deliveries[0][2] is False
    server.kill()
    server.start()
    c = DurableClient(server.host, server.port)
    assert c.drain(QUEUE) == [(b"job", True)]
    c.close()
