"""A client that pipelines fetches and does not read the replies holds the server to one reply."""

import os

from harness import wait_until
from minilog_wire_helpers import batch, connect, create, fetch, produce

REPLY = 4 << 20  # each fetch asks for 4 MiB


def buffered(server):
    """(largest transport write buffer, fetches waiting) over the server's connections."""
    def look():
        conns = list(server.server.connections.values())
        return (max((c.transport.get_write_buffer_size() for c in conns if c.transport), default=0),
                sum(len(c.state.get("minilog.pending_fetches") or ()) for c in conns))
    return server.call(look)


def test_twenty_pipelined_fetches_hold_one_reply_not_twenty(start_minilog):
    server = start_minilog()
    with connect(server) as c:
        create(c, "big", config={"retention.ms": -1, "max.message.bytes": 2 << 20})
        for _ in range(6):
            produce(c, "big", 0, batch([os.urandom(1000) for _ in range(1000)]))
    reader = connect(server, "slow-reader")
    rids = [reader.send("fetch", {"max_bytes": REPLY, "partitions": [["big", 0, 0, REPLY]]}) for _ in range(20)]
    reader.flush()  # one write: the server reads all twenty requests at once
    wait_until(lambda: buffered(server)[0] >= REPLY // 2, message="a reply waiting in the server's buffer")
    held, waiting = buffered(server)
    assert held < 2 * REPLY, f"{held} bytes of replies held for a client that reads nothing"
    assert waiting >= 15  # the rest wait as requests, their records not yet read
    for rid in rids:  # and once the client reads, every fetch is answered, in full
        (row,) = reader.wait(rid, timeout=60)["results"]
        assert row[2] is None and len(row[5]) > REPLY // 2
    assert buffered(server) == (0, 0)
    reader.close()
    with connect(server) as c:
        assert fetch(c, "big", 0, 5_000)[0] is None
