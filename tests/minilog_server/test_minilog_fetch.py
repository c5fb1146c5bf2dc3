"""The fetch path over the wire: offsets, byte limits, long polls, sendfile replies, list_offsets."""

import threading
import time

import pytest

from clients.log.connection import LogConnection
from clients.protocol.errors import ErrorCode
from clients.record_batch import decode_batches
from harness import wait_until
from minilog_wire_helpers import batch, connect, create, fetch, produce, record_values, values


def test_fetch_from_an_offset_returns_whole_batches_from_the_one_holding_it(server):
    with connect(server) as c:
        produce(c, "t", 0, [batch(values(4)), batch(values(4, b"w"))])
        error, hw, start, records = fetch(c, "t", 0, 5)
        assert error is None and hw == 8 and start == 0
        assert [r[0] for r in records] == [4, 5, 6, 7]     # the batch holding 5 comes whole
        assert record_values(records, 5) == [b"w1", b"w2", b"w3"]


def test_fetch_at_the_end_is_empty_not_an_error(server):
    with connect(server) as c:
        produce(c, "t", 0, batch(values(3)))
        assert fetch(c, "t", 0, 3) == (None, 3, 0, [])


def test_partition_max_bytes_limits_the_reply_but_the_first_batch_always_comes(server):
    with connect(server) as c:
        produce(c, "t", 0, [batch([b"a" * 500]) for _ in range(10)])
        one = len(batch([b"a" * 500]))
        _, _, _, records = fetch(c, "t", 0, 0, max_bytes=one * 3 + 10)
        assert [r[0] for r in records] == [0, 1, 2]
        _, _, _, records = fetch(c, "t", 0, 0, max_bytes=1)
        assert [r[0] for r in records] == [0]


def test_request_max_bytes_caps_the_sum_over_partitions(server):
    with connect(server) as c:
        create(c, "m", partitions=3)
        for p in range(3):
            produce(c, "m", p, [batch([b"z" * 1000]) for _ in range(5)])
        one = len(batch([b"z" * 1000]))
        result = c.call("fetch", {"max_bytes": one * 7, "partitions": [["m", p, 0, 1 << 20] for p in range(3)]})
        counts = [len(decode_batches(row[5])) for row in result["results"]]
        assert counts == [5, 2, 0]
        assert all(row[2] is None and row[3] == 5 for row in result["results"])


def test_offset_out_of_range_per_partition(server):
    with connect(server) as c:
        produce(c, "t", 0, batch(values(3)))
        create(c, "u")
        result = c.call("fetch", {"partitions": [["t", 0, 4, 1000], ["t", 0, -1, 1000], ["t", 0, 1, 1000],
                                                 ["nope", 0, 0, 1000]]})["results"]
        assert result[0][2][0] == ErrorCode.OFFSET_OUT_OF_RANGE and result[0][3] == 3
        assert result[1][2][0] == ErrorCode.OFFSET_OUT_OF_RANGE
        assert result[2][2] is None and len(decode_batches(result[2][5])) == 3
        assert result[3][2][0] == ErrorCode.NOT_FOUND


def test_fetch_does_not_auto_create(server):
    with connect(server) as c:
        assert fetch(c, "ghost", 0, 0)[0][0] == ErrorCode.NOT_FOUND
        assert "ghost" not in c.call("metadata", {})["topics"]


def test_long_poll_returns_as_soon_as_a_produce_arrives(server):
    with connect(server) as consumer, connect(server) as producer:
        create(producer, "live")
        rid = consumer.send("fetch", {"max_wait_ms": 20_000, "min_bytes": 1,
                                      "partitions": [["live", 0, 0, 1 << 20]]})
        consumer.flush()
        # The fetch is parked on the server, waiting for data.
        wait_until(lambda: server.call(lambda: len(server.server.broker.waiters)) == 1, message="the fetch to park")
        started = time.monotonic()
        produce(producer, "live", 0, batch([b"hello"]))
        result = consumer.wait(rid, timeout=30)
        elapsed = time.monotonic() - started
        (_, _, error, hw, _, records), = result["results"]
        assert error is None and hw == 1 and record_values(decode_batches(records)) == [b"hello"]
        assert elapsed < 10   # woken by the append, long before max_wait_ms (20 s)
        assert server.call(lambda: len(server.server.broker.waiters)) == 0


def test_a_parked_fetch_is_answered_inside_the_append_before_the_producers_reply(server):
    """The append that readies a parked fetch writes the fetch's reply there and then
    (`ParkedFetch`), before the produce's own reply: on one connection, the fetch parked first
    is answered first. (Answered from a task on a later turn of the loop, it came second.)"""
    with LogConnection(server.host, server.port) as c:
        create(c, "order")
        arrived = []
        c.send_with("fetch", {"max_wait_ms": 20_000, "partitions": [["order", 0, 0, 1 << 20]]},
                    lambda result, error: arrived.append(("fetch", error, result)))
        c.flush()
        wait_until(lambda: server.call(lambda: len(server.server.broker.waiters)) == 1, message="the fetch to park")
        c.send_with("produce", {"acks": 1, "data": [["order", 0, batch([b"now"])]]},
                    lambda result, error: arrived.append(("produce", error, result)))
        deadline = time.monotonic() + 30
        while len(arrived) < 2 and time.monotonic() < deadline:
            c.pump(1.0)
        assert [(op, error) for op, error, _ in arrived] == [("fetch", None), ("produce", None)]
        (_, _, error, hw, _, records), = arrived[0][2]["results"]
        assert hw == 1 and record_values(decode_batches(records)) == [b"now"]
        assert server.call(lambda: len(server.server.broker.waiters)) == 0


def test_a_parked_fetch_woken_short_of_min_bytes_stays_parked_on_every_partition(server):
    """Woken by an append that leaves it short of min_bytes, a fetch on two partitions waits
    on both again, and an append to the other partition completes it."""
    with connect(server) as consumer, connect(server) as producer:
        create(producer, "two", partitions=2)
        one = len(batch([b"q" * 100]))
        rid = consumer.send("fetch", {"max_wait_ms": 20_000, "min_bytes": one * 2,
                                      "partitions": [["two", 0, 0, 1 << 20], ["two", 1, 0, 1 << 20]]})
        consumer.flush()
        wait_until(lambda: server.call(lambda: len(server.server.broker.waiters)) == 2, message="the fetch to park")
        produce(producer, "two", 0, batch([b"q" * 100]))
        wait_until(lambda: server.call(lambda: server.server.broker.produced_batches) == 1)
        assert server.call(lambda: len(server.server.broker.waiters)) == 2   # parked again on partition 0
        assert rid not in consumer.replies
        produce(producer, "two", 1, batch([b"q" * 100]))
        rows = consumer.wait(rid, timeout=30)["results"]
        assert [len(decode_batches(r[5])) for r in rows] == [1, 1]
        assert server.call(lambda: len(server.server.broker.waiters)) == 0


def test_long_poll_on_several_partitions_wakes_on_any(server):
    with connect(server) as consumer, connect(server) as producer:
        create(producer, "many", partitions=3)
        rid = consumer.send("fetch", {"max_wait_ms": 20_000, "partitions": [["many", p, 0, 1000] for p in range(3)]})
        consumer.flush()
        wait_until(lambda: server.call(lambda: len(server.server.broker.waiters)) == 3)
        produce(producer, "many", 2, batch([b"x"]))
        rows = consumer.wait(rid, timeout=30)["results"]
        assert [len(decode_batches(r[5])) for r in rows] == [0, 0, 1]


def test_long_poll_waits_for_min_bytes(server):
    with connect(server) as consumer, connect(server) as producer:
        create(producer, "mb")
        one = len(batch([b"q" * 100]))
        rid = consumer.send("fetch", {"max_wait_ms": 20_000, "min_bytes": one * 3,
                                      "partitions": [["mb", 0, 0, 1 << 20]]})
        consumer.flush()
        wait_until(lambda: server.call(lambda: len(server.server.broker.waiters)) == 1)
        produce(producer, "mb", 0, batch([b"q" * 100]))
        produce(producer, "mb", 0, batch([b"q" * 100]))
        assert not consumer.read(0.2) or rid not in consumer.replies   # two batches are not enough
        produce(producer, "mb", 0, batch([b"q" * 100]))
        rows = consumer.wait(rid, timeout=30)["results"]
        assert len(decode_batches(rows[0][5])) == 3


def test_long_poll_returns_empty_after_max_wait(server):
    with connect(server) as c:
        create(c, "idle")
        started = time.monotonic()
        error, hw, _, records = fetch(c, "idle", 0, 0, max_wait_ms=300)
        assert error is None and hw == 0 and records == []
        # It waited rather than answering at once. Not to the millisecond: a uvloop (libuv)
        # timer counts from the loop's cached time, which on a loaded machine can lag real
        # time by the length of a loop iteration, so the timer may fire a little early.
        assert time.monotonic() - started >= 0.2


def test_an_idle_fetch_is_answered_at_its_max_wait_while_a_live_consumer_parks_and_is_woken(server):
    """The deadlines share one heap and one timer (`AppendWaiters`): a live consumer parking and
    being woken once per record, its fetches leaving their entries behind, must not delay the
    idle consumer's answer at its own max_wait_ms."""
    with connect(server) as idle, connect(server) as live, connect(server) as producer:
        create(producer, "quiet")
        create(producer, "busy")
        started = time.monotonic()
        rid = idle.send("fetch", {"max_wait_ms": 600, "partitions": [["quiet", 0, 0, 1 << 20]]})
        idle.flush()
        offset = 0
        while time.monotonic() - started < 0.4:   # a record at a time, each fetch parked first
            live_rid = live.send("fetch", {"max_wait_ms": 30_000, "partitions": [["busy", 0, offset, 1 << 20]]})
            live.flush()
            wait_until(lambda: server.call(lambda: len(server.server.broker.waiters)) == 2, message="both parked")
            produce(producer, "busy", 0, batch([b"r"]))
            (_, _, error, hw, _, _), = live.wait(live_rid, timeout=30)["results"]
            assert error is None
            offset = hw
        assert offset > 5
        (_, _, error, hw, _, records), = idle.wait(rid, timeout=30)["results"]
        waited = time.monotonic() - started
        assert error is None and hw == 0 and records == b""
        # At 600 ms, give or take: libuv's timer may run up to a millisecond early, and this
        # machine's load (2 shared cores) may make it late.
        assert 0.59 <= waited < 3.0, waited


def test_a_parked_fetch_does_not_hold_up_other_requests(server):
    with connect(server) as c:
        create(c, "idle")
        rid = c.send("fetch", {"max_wait_ms": 20_000, "partitions": [["idle", 0, 0, 1000]]})
        assert c.call("ping")["pong"]           # answered while the fetch waits
        produce(c, "idle", 0, batch([b"now"]))
        assert c.wait(rid)["results"][0][3] == 1


def test_closing_the_connection_releases_its_parked_fetch(server):
    c = connect(server)
    create(c, "idle")
    c.send("fetch", {"max_wait_ms": 20_000, "partitions": [["idle", 0, 0, 1000]]})
    c.flush()
    from harness import wait_until
    wait_until(lambda: server.call(lambda: len(server.server.broker.waiters)) == 1)
    c.close()
    wait_until(lambda: server.call(lambda: len(server.server.broker.waiters)) == 0, message="the fetch to be dropped")


@pytest.mark.parametrize("sendfile", [True, False])
def test_large_fetches_arrive_whole_with_and_without_sendfile(start_minilog, sendfile):
    server = start_minilog(fetch_sendfile=sendfile)
    with connect(server) as c:
        batches = [batch([b"%06d" % i + b"x" * 994 for i in range(j * 200, j * 200 + 200)]) for j in range(40)]
        produce(c, "big", 0, batches)
        offset, got = 0, []
        # Pipelined fetches interleaved with pings: frames must stay whole and in order.
        while offset < 8000:
            rid = c.send("fetch", {"max_bytes": 3 << 20, "partitions": [["big", 0, offset, 3 << 20]]})
            pid = c.send("ping", {"echo": offset})
            rows = c.wait(rid)["results"]
            assert c.wait(pid)["echo"] == offset
            records = [r for r in decode_batches(rows[0][5]) if r[0] >= offset]
            assert records
            got.extend(records)
            offset = records[-1][0] + 1
        assert [r[0] for r in got] == list(range(8000))
        assert got[1234][3].startswith(b"001234")
        by_sendfile = c.call("server_info")["sendfile_bytes"]
        assert (by_sendfile > 0) == sendfile


def test_slow_reader_gets_every_byte_of_big_replies(server):
    with connect(server) as c:
        produce(c, "big", 0, [batch([b"y" * 900_000]) for _ in range(8)])
        ids = [c.send("fetch", {"partitions": [["big", 0, 0, 8 << 20]]}) for _ in range(5)]
        c.flush()
        # Not reading: the server fills the socket and must queue the rest, in order.
        wait_until(lambda: server.call(lambda: any(conn.transport.get_write_buffer_size() > 0
                                                   for conn in server.server.connections.values())),
                   message="replies to queue in the transport")
        for rid in ids:
            rows = c.wait(rid)["results"]
            assert len(decode_batches(rows[0][5])) == 8


def test_list_offsets_earliest_latest_and_by_time(server):
    with connect(server) as c:
        # Records from 1970 would be deleted by the default retention.ms at the next storage tick.
        create(c, "t", config={"retention.ms": -1})
        produce(c, "t", 0, [batch(values(3), timestamp=1000), batch(values(3), timestamp=2000),
                            batch(values(3), timestamp=3000)])
        rows = c.call("list_offsets", {"partitions": [["t", 0, -2], ["t", 0, -1], ["t", 0, 0], ["t", 0, 2001],
                                                      ["t", 0, 2003], ["t", 0, 9999], ["x", 0, -1]]})["results"]
        assert [r[2] for r in rows[:6]] == [0, 9, 0, 4, 6, -1]
        assert all(r[3] is None for r in rows[:6])
        assert rows[6][3][0] == ErrorCode.NOT_FOUND


def test_concurrent_producers_each_see_dense_offsets(server):
    create_conn = connect(server)
    create(create_conn, "race")
    seen = []

    def run(n):
        with connect(server) as c:
            for i in range(50):
                seen.append(produce(c, "race", 0, batch(values(2)))[0][2])

    threads = [threading.Thread(target=run, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seen) == list(range(0, 300, 2))
    create_conn.close()


def test_retention_moves_the_log_start_and_older_offsets_become_out_of_range(server):
    with connect(server) as c:
        create(c, "short", config={"segment.bytes": 100, "retention.ms": 1000})
        for i in range(5):
            produce(c, "short", 0, batch([b"old-%d" % i + b"x" * 100], timestamp=1_000))

        def log_start():
            return c.call("metadata", {"topics": ["short"]})["topics"]["short"]["partitions"][0]["start_offset"]

        # Every record is older than retention.ms, the active segment's too: it is rolled and
        # deleted with the rest, so the log start offset reaches the log end.
        start = wait_until(lambda: log_start() == 5, timeout=10, interval=0.05,
                           message="retention to delete every old segment") and log_start()
        error, hw, log_start_offset, _ = fetch(c, "short", 0, 0)
        assert error[0] == ErrorCode.OFFSET_OUT_OF_RANGE and log_start_offset == start and hw == 5
        assert c.call("list_offsets", {"partitions": [["short", 0, -2]]})["results"][0][2] == start
        assert fetch(c, "short", 0, start)[3] == []
        assert produce(c, "short", 0, batch([b"new"]))[0][2] == 5
        assert record_values(fetch(c, "short", 0, 5)[3]) == [b"new"]


def test_parked_fetches_answered_from_the_appended_bytes_get_exactly_the_stored_records(server):
    """A fetch parked at the log end is answered from the append's bytes in memory (the log's
    tail): one batch, then one entry of two batches, each arriving whole and with the offsets the
    log gave; a fetch from 0 (read from the file and the tail together) agrees."""
    with connect(server) as consumer, connect(server) as producer:
        create(producer, "tail")
        plog = server.call(lambda: server.server.broker.topics.get_log("tail", 0))
        got = []
        for offset, entry in ((0, batch([b"a"])), (1, batch([b"b"]) + batch([b"c", b"d"]))):
            rid = consumer.send("fetch", {"max_wait_ms": 20_000, "partitions": [["tail", 0, offset, 1 << 20]]})
            consumer.flush()
            wait_until(lambda: server.call(lambda: len(server.server.broker.waiters)) == 1, message="the fetch to park")
            produce(producer, "tail", 0, entry)
            (_, _, error, hw, _, records), = consumer.wait(rid, timeout=30)["results"]
            assert error is None
            got += [(r[0], r[3]) for r in decode_batches(records)]
            assert server.call(lambda: plog.read(offset).data) == records   # it came from memory
        assert got == [(0, b"a"), (1, b"b"), (2, b"c"), (3, b"d")]
        assert [(r[0], r[3]) for r in fetch(consumer, "tail", 0, 0)[3]] == got


def test_a_topic_deleted_and_made_again_never_answers_from_the_old_tail(server):
    with connect(server) as c:
        produce(c, "again", 0, batch([b"old-0"]))
        produce(c, "again", 0, batch([b"old-1"]))
        assert record_values(fetch(c, "again", 0, 1)[3]) == [b"old-1"]
        assert c.call("delete_topics", {"topics": ["again"]})["results"] == {"again": None}
        create(c, "again")
        assert fetch(c, "again", 0, 1)[0][0] == ErrorCode.OFFSET_OUT_OF_RANGE
        rid = c.send("fetch", {"max_wait_ms": 20_000, "partitions": [["again", 0, 0, 1 << 20]]})
        c.flush()
        wait_until(lambda: server.call(lambda: len(server.server.broker.waiters)) == 1, message="the fetch to park")
        produce(c, "again", 0, batch([b"new-0"]))
        produce(c, "again", 0, batch([b"new-1"]))
        (_, _, error, hw, _, records), = c.wait(rid, timeout=30)["results"]
        assert error is None and record_values(decode_batches(records)) == [b"new-0"]
        assert record_values(fetch(c, "again", 0, 1)[3]) == [b"new-1"]
        assert record_values(fetch(c, "again", 0, 0)[3]) == [b"new-0", b"new-1"]
