"""A request pipelined behind create_topics on the same connection runs once the topics exist,
as Kafka handles one connection's requests in order; other connections are served meanwhile."""

import threading

from harness import wait_until
from minilog_wire_helpers import batch, connect


def held_requests(server):
    return server.call(lambda: sum(len(c._held or ()) for c in server.server.connections.values()))


def test_a_produce_pipelined_behind_create_topics_finds_the_topic(server):
    gate = threading.Event()
    # The creation thread is busy until the gate opens: the create stays pending as long as we like.
    blocker = server.call(lambda: server.server.broker._create_executor.submit(gate.wait, 60))
    try:
        with connect(server, "creator") as creator, connect(server, "other") as other:
            create_rid = creator.send("create_topics", {"topics": [{"name": "fresh", "num_partitions": 2}]})
            produce_rid = creator.send("produce", {"data": [["fresh", 1, batch([b"first"])]]})
            creator.flush()
            wait_until(lambda: held_requests(server) == 1, message="the produce held behind the pending create")
            # Another connection is not held behind it.
            assert other.call("ping")["pong"] is True
            gate.set()
            assert creator.wait(create_rid)["results"] == {"fresh": None}
            (row,) = creator.wait(produce_rid)["results"]
            assert row[:4] == ["fresh", 1, 0, None]
            assert held_requests(server) == 0
            # The connection reads again and answers in order as before.
            assert creator.call("ping")["pong"] is True
    finally:
        gate.set()
        blocker.result(60)


def test_a_create_that_fails_at_once_holds_nothing(server):
    with connect(server) as c:
        create_rid = c.send("create_topics", {"topics": [{"name": "bad/name"}]})
        produce_rid = c.send("produce", {"data": [["nowhere-yet", 0, batch([b"x"])]]})
        c.flush()
        assert c.wait(create_rid)["results"]["bad/name"][0] == "BAD_REQUEST"
        (row,) = c.wait(produce_rid)["results"]
        assert row[3] is None   # auto-created, as before
