"""Auto-creation (metadata with allow_auto_create, as every producer asks before its first
record) makes the topic's files on the creation thread, as create_topics does: the loop goes on
serving, and the answer comes once the topic exists, with its partitions."""

import threading

from harness import wait_until
from minilog_wire_helpers import connect


def test_auto_creation_runs_on_the_creation_thread_and_answers_when_done(server):
    gate = threading.Event()
    broker = server.server.broker
    blocker = server.call(lambda: broker._create_executor.submit(gate.wait, 60))
    try:
        with connect(server, "producer") as producer, connect(server, "other") as other:
            rid = producer.send("metadata", {"topics": ["auto-made"], "allow_auto_create": True})
            producer.flush()
            # Claimed on the loop, its files waiting for the creation thread (busy until the gate).
            wait_until(lambda: server.call(lambda: broker.logs.is_being_created("auto-made")),
                       message="the auto-created topic waiting for the creation thread")
            assert other.call("ping")["pong"] is True
            gate.set()
            info = producer.wait(rid)["topics"]["auto-made"]
            assert info["error"] is None and [p["partition"] for p in info["partitions"]] == [0]
    finally:
        gate.set()
        blocker.result(60)
