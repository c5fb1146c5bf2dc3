"""Fetch sessions on the msgpack door: a fetch with a nil offset continues where the session's
previous fetch ended (minilog/fetch_sessions.py), so a client keeps one parked at all times."""

import time

import pytest

from clients.protocol.errors import BrokerError, ErrorCode
from clients.record_batch import decode_batches
from minilog_wire_helpers import batch, connect, create, produce, values


def session_fetch(conn, parts, session=1, max_wait_ms=0, **extra):
    """Send one session fetch of `[[topic, partition, offset or None, max_bytes], ...]`; its id."""
    return conn.send("fetch", dict({"session": session, "max_wait_ms": max_wait_ms, "partitions": parts}, **extra))


def rows_of(conn, rid, timeout=10):
    """{(topic, partition): (start, error, [offsets])} of a session fetch's reply."""
    out = {}
    for row in conn.wait(rid, timeout)["results"]:
        assert len(row) == 7, row
        out[(row[0], row[1])] = (row[6], row[2], [r[0] for r in decode_batches(row[5])])
    return out


def test_the_server_says_it_keeps_fetch_sessions(server):
    with connect(server) as c:
        assert "fetch-session" in c.state.server_info["features"]


def test_a_nil_offset_continues_where_the_previous_fetch_of_the_session_ended(server):
    with connect(server) as c:
        produce(c, "t", 0, [batch(values(3)), batch(values(2))])
        first = rows_of(c, session_fetch(c, [["t", 0, 1, 1 << 20]]))
        assert first == {("t", 0): (1, None, [0, 1, 2, 3, 4])}   # the batch holding 1 comes whole
        produce(c, "t", 0, batch(values(4)))
        assert rows_of(c, session_fetch(c, [["t", 0, None, 1 << 20]])) == {("t", 0): (5, None, [5, 6, 7, 8])}
        assert rows_of(c, session_fetch(c, [["t", 0, None, 1 << 20]])) == {("t", 0): (9, None, [])}
        # A fetch without a session is answered as before: six fields a row.
        row, = c.call("fetch", {"partitions": [["t", 0, 0, 1 << 20]]})["results"]
        assert len(row) == 6


def test_a_continued_fetch_is_parked_while_the_one_before_it_waits(server):
    """The always-parked fetch: two fetches in flight at the end of the log; each append is
    answered by the one parked, and the next is already waiting behind it."""
    with connect(server) as c, connect(server, "producer") as p:
        create(c, "t")
        first = session_fetch(c, [["t", 0, 0, 1 << 20]], max_wait_ms=20_000)
        second = session_fetch(c, [["t", 0, None, 1 << 20]], max_wait_ms=20_000)
        c.flush()
        produce(p, "t", 0, batch(values(2)))
        assert rows_of(c, first) == {("t", 0): (0, None, [0, 1])}
        third = session_fetch(c, [["t", 0, None, 1 << 20]], max_wait_ms=20_000)
        c.flush()
        produce(p, "t", 0, batch(values(1)))
        assert rows_of(c, second) == {("t", 0): (2, None, [2])}
        produce(p, "t", 0, batch(values(3)))
        assert rows_of(c, third) == {("t", 0): (3, None, [3, 4, 5])}


def test_an_explicit_offset_answers_the_parked_fetches_of_the_session_at_once(server):
    with connect(server) as c:
        produce(c, "t", 0, batch(values(5)))
        parked = session_fetch(c, [["t", 0, 5, 1 << 20]], max_wait_ms=60_000)
        behind = session_fetch(c, [["t", 0, None, 1 << 20]], max_wait_ms=60_000)
        began = time.monotonic()
        seek = session_fetch(c, [["t", 0, 2, 1 << 20]], max_wait_ms=60_000)
        assert rows_of(c, parked) == {("t", 0): (5, None, [])}
        assert rows_of(c, behind) == {("t", 0): (5, None, [])}
        assert rows_of(c, seek) == {("t", 0): (2, None, [0, 1, 2, 3, 4])}
        assert time.monotonic() - began < 30   # not the long polls' 60 s


def test_a_reply_cut_by_max_bytes_continues_at_the_next_batch_across_segments(start_minilog):
    """Replay through a chain of continued fetches, each cut short by max bytes, over several
    segments: every record once, in order."""
    server = start_minilog()
    with connect(server) as c:
        create(c, "t", config={"segment.bytes": "2000"})
        for i in range(40):
            produce(c, "t", 0, batch([b"x%03d" % (i * 3 + j) + b"." * 60 for j in range(3)]))
        one = len(batch([b"x000" + b"." * 60 for _ in range(3)]))
        seen = []
        offset = 0
        while len(seen) < 120:
            (start, error, offsets), = rows_of(c, session_fetch(c, [["t", 0, offset, one * 2 + 7]])).values()
            assert error is None
            seen += [o for o in offsets if o >= start]
            offset = None
        assert seen == list(range(120))


def test_session_fetches_with_several_partitions_keep_each_position(server):
    with connect(server) as c:
        create(c, "m", partitions=2)
        produce(c, "m", 0, batch(values(2)))
        produce(c, "m", 1, batch(values(3)))
        got = rows_of(c, session_fetch(c, [["m", 0, 0, 1 << 20], ["m", 1, 1, 1 << 20]], session=7))
        assert got == {("m", 0): (0, None, [0, 1]), ("m", 1): (1, None, [0, 1, 2])}
        produce(c, "m", 1, batch(values(1)))
        # Another session on the same connection has positions of its own.
        other = rows_of(c, session_fetch(c, [["m", 1, 0, 1 << 20]], session=8))
        assert other == {("m", 1): (0, None, [0, 1, 2, 3])}
        got = rows_of(c, session_fetch(c, [["m", 0, None, 1 << 20], ["m", 1, None, 1 << 20]], session=7))
        assert got == {("m", 0): (2, None, []), ("m", 1): (3, None, [3])}


def test_an_error_row_leaves_the_position_where_it_was(server):
    with connect(server) as c:
        produce(c, "t", 0, batch(values(3)))
        got = rows_of(c, session_fetch(c, [["t", 0, 9, 1 << 20]]))
        assert got[("t", 0)][:2] == (9, [ErrorCode.OFFSET_OUT_OF_RANGE, got[("t", 0)][1][1]])
        # The position stays at 9: the next continued fetch meets the same error.
        again = rows_of(c, session_fetch(c, [["t", 0, None, 1 << 20]]))
        assert again[("t", 0)][0] == 9 and again[("t", 0)][1][0] == ErrorCode.OFFSET_OUT_OF_RANGE


def test_bad_session_fetches_are_refused_and_the_connection_stays_usable(server):
    with connect(server) as c:
        produce(c, "t", 0, batch(values(1)))
        with pytest.raises(BrokerError) as exc:   # nil offset outside a session
            c.call("fetch", {"partitions": [["t", 0, None, 1000]]})
        assert exc.value.code == ErrorCode.BAD_REQUEST
        with pytest.raises(BrokerError) as exc:   # nil offset for a partition the session never fetched
            c.wait(session_fetch(c, [["t", 0, None, 1000]], session=3))
        assert exc.value.code == ErrorCode.BAD_REQUEST and "no position" in exc.value.message
        with pytest.raises(BrokerError) as exc:
            c.call("fetch", {"session": True, "partitions": [["t", 0, 0, 1000]]})
        assert exc.value.code == ErrorCode.BAD_REQUEST
        for s in range(100, 115):   # with session 3, 16 sessions: the bound
            rows_of(c, session_fetch(c, [["t", 0, 0, 1000]], session=s))
        with pytest.raises(BrokerError) as exc:
            c.wait(session_fetch(c, [["t", 0, 0, 1000]], session=999))
        assert exc.value.code == ErrorCode.BAD_REQUEST
        # Unanswered fetches of one session are bounded too.
        rids = [session_fetch(c, [["t", 0, 1, 1000]], session=3, max_wait_ms=60_000)]
        rids += [session_fetch(c, [["t", 0, None, 1000]], session=3, max_wait_ms=60_000) for _ in range(17)]
        with pytest.raises(BrokerError) as exc:
            c.wait(rids[-1])
        assert exc.value.code == ErrorCode.BAD_REQUEST
        assert rows_of(c, session_fetch(c, [["t", 0, 0, 1000]], session=100)) == {("t", 0): (0, None, [0])}
