"""A fetch that asks for several answers (`answers`, in a fetch session): the server parks it
again after each answer, where that answer ended, and each answer says how many more follow
(`more`), so a consumer at the end of a live log gets every append without a fetch per reply
(minilog/fetch_sessions.py, `SessionFetch.next_answer`; docs/PROTOCOL.md, "fetch")."""

import time

import pytest

from clients.protocol.errors import ErrorCode
from clients.record_batch import decode_batches
from minilog import server as minilog_server
from minilog.fetch_sessions import ANSWER_GOES_ON_BELOW, MAX_ANSWERS
from harness import wait_until
from minilog_wire_helpers import batch, connect, create, error_code, produce, values


class Answers:
    """The answers to one streamed fetch: `(more, start, [offsets])` each, in order."""

    def __init__(self, conn, parts, answers, max_wait_ms=60_000, session=1):
        self.conn = conn
        self.got = []
        self.errors = []
        self.rid = conn.send("fetch", {"session": session, "max_wait_ms": max_wait_ms, "answers": answers,
                                       "partitions": parts})
        conn.state.expect(self.rid, self._on_answer)
        conn.flush()

    def _on_answer(self, result, error):
        if error is not None:
            self.errors.append(error)
            return
        (row,) = result["results"]
        self.got.append((result.get("more"), row[6], [r[0] for r in decode_batches(row[5])]))

    def wait_for_records(self, n, timeout=10):
        """The answers once they hold `n` records in all."""
        deadline = time.monotonic() + timeout
        while sum(len(offsets) for _, _, offsets in self.got) < n:
            assert time.monotonic() < deadline, f"fewer than {n} records in {self.got}"
            self.conn.read(0.05)
        return self.got

    def wait_for(self, n, timeout=10):
        deadline = time.monotonic() + timeout
        while len(self.got) < n:
            assert time.monotonic() < deadline, f"{len(self.got)} answers of {n}: {self.got}"
            self.conn.read(0.05)
        return self.got


def test_each_append_is_answered_by_the_same_fetch_until_its_answers_are_used(server):
    with connect(server) as c, connect(server, "producer") as p:
        create(c, "t")
        stream = Answers(c, [["t", 0, 0, 1 << 20]], answers=3)
        for n in (1, 2, 3):
            produce(p, "t", 0, batch(values(n)))
            stream.wait_for(len(stream.got) + 1)
        assert stream.got == [(2, 0, [0]), (1, 1, [1, 2]), (0, 3, [3, 4, 5])]
        assert stream.rid not in c.state.handlers   # the last answer said so: no more come
        # The stream used up, the session goes on where it ended.
        produce(p, "t", 0, batch(values(1)))
        assert Answers(c, [["t", 0, None, 1 << 20]], answers=2).wait_for(1) == [(1, 6, [6])]


def test_a_fetch_of_the_session_waiting_behind_ends_the_stream_at_its_next_answer(server):
    with connect(server) as c, connect(server, "producer") as p:
        create(c, "t")
        stream = Answers(c, [["t", 0, 0, 1 << 20]], answers=10)
        produce(p, "t", 0, batch(values(1)))
        stream.wait_for(1)
        successor = Answers(c, [["t", 0, None, 1 << 20]], answers=10)
        # The server reads a connection's requests in order: once this is answered it holds the
        # successor, whichever connection it reads first afterwards.
        c.call("ping", {})
        produce(p, "t", 0, batch(values(1)))
        produce(p, "t", 0, batch(values(1)))
        successor.wait_for(1)
        assert stream.got == [(9, 0, [0]), (0, 1, [1])]
        assert successor.got == [(9, 2, [2])]


def test_an_explicit_offset_ends_the_stream_at_once(server):
    with connect(server) as c, connect(server, "producer") as p:
        create(c, "t")
        produce(p, "t", 0, batch(values(4)))
        stream = Answers(c, [["t", 0, 4, 1 << 20]], answers=10)
        began = time.monotonic()
        seek = Answers(c, [["t", 0, 1, 1 << 20]], answers=1)
        seek.wait_for(1)
        assert stream.wait_for(1) == [(0, 4, [])]   # answered now, and the last
        assert seek.got == [(None, 1, [0, 1, 2, 3])]  # one answer asked: no `more`
        assert time.monotonic() - began < 30          # not the stream's 60 s long poll


def test_a_large_answer_is_the_last_so_a_consumer_behind_asks_again(server):
    with connect(server) as c:
        create(c, "t")
        big = [b"x" * 1000 for _ in range(ANSWER_GOES_ON_BELOW // 1000 + 10)]
        produce(c, "t", 0, batch(big))
        stream = Answers(c, [["t", 0, 0, 1 << 20]], answers=10)
        (more, start, offsets), = stream.wait_for(1)
        assert (more, start, len(offsets)) == (0, 0, len(big))


def test_an_answer_with_an_error_is_the_last(server):
    with connect(server) as c:
        create(c, "t")
        errors = []
        rid = c.send("fetch", {"session": 1, "max_wait_ms": 60_000, "answers": 10,
                               "partitions": [["t", 0, 5, 1 << 20]]})   # past the end: out of range
        c.state.expect(rid, lambda result, error: errors.append((result["more"], result["results"][0][2][0])))
        c.flush()
        deadline = time.monotonic() + 10
        while not errors:
            assert time.monotonic() < deadline
            c.read(0.05)
        c.call("ping", {})   # anything more for the fetch would have come before this reply
        assert errors == [(0, ErrorCode.OFFSET_OUT_OF_RANGE)] and rid not in c.state.handlers


def test_a_stream_answers_at_max_wait_with_nothing_and_goes_on(server):
    with connect(server) as c, connect(server, "producer") as p:
        create(c, "t")
        stream = Answers(c, [["t", 0, 0, 1 << 20]], answers=3, max_wait_ms=100)
        stream.wait_for(1)
        produce(p, "t", 0, batch(values(1)))
        stream.wait_for(2)
        assert stream.got[0] == (2, 0, []) and stream.got[1] == (1, 0, [0])


# ---- parked again inside its answer (MinilogServer._send_fetch, ParkedFetch.park_again) ----------
# Each of these runs with the re-park inside the answer on and off (`REPARK_INSIDE_ANSWER`):
# the stream behaves the same either way.
@pytest.fixture(params=[True, False], ids=["repark-inside", "repark-by-loop"])
def repark(request, monkeypatch):
    monkeypatch.setattr(minilog_server, "REPARK_INSIDE_ANSWER", request.param)
    return request.param


def parked_fetches(server) -> int:
    return server.call(lambda: len(server.server.broker.waiters))


def continuous(got, first=0) -> list:
    """The offsets of the answers `got`, checked to follow on from each other."""
    offsets = []
    for more, start, answer in got:
        assert start == first + len(offsets), got
        offsets += answer
    return offsets


def test_every_entry_of_one_produce_reaches_the_stream_and_it_stays_parked(server, repark):
    """Each entry's append wakes the fetch that the one before it parked again, inside the
    same produce: every record arrives once, in order, and the fetch is parked after it."""
    with connect(server) as c, connect(server, "producer") as p:
        create(c, "t")
        stream = Answers(c, [["t", 0, 0, 1 << 20]], answers=20)
        wait_until(lambda: parked_fetches(server) == 1, message="the stream to park")
        produce(p, "t", 0, [batch(values(1)), batch(values(2)), batch(values(1))])
        assert continuous(stream.wait_for_records(4)) == [0, 1, 2, 3]
        assert [a[0] for a in stream.got] == list(range(19, 19 - len(stream.got), -1))
        assert parked_fetches(server) == 1
        produce(p, "t", 0, batch(values(1)))
        assert continuous(stream.wait_for(len(stream.got) + 1))[-1] == 4


def test_produces_sent_in_one_write_are_all_answered(server, repark):
    with connect(server) as c, connect(server, "producer") as p:
        create(c, "t")
        stream = Answers(c, [["t", 0, 0, 1 << 20]], answers=20)
        wait_until(lambda: parked_fetches(server) == 1, message="the stream to park")
        rids = [p.send("produce", {"acks": 1, "data": [["t", 0, batch(values(1))]]}) for _ in range(5)]
        p.flush()   # the five frames in one write: one data_received on the server
        for rid in rids:
            p.wait(rid)
        assert continuous(stream.wait_for_records(5)) == [0, 1, 2, 3, 4]
        assert parked_fetches(server) == 1


def test_a_stream_cut_short_by_its_byte_limit_answers_the_rest_without_another_append(server, repark):
    """One produce entry of two batches wakes a stream whose partition limit takes one batch:
    it ended before the log end, so it is not parked again but reads the rest at once."""
    with connect(server) as c, connect(server, "producer") as p:
        create(c, "t")
        stream = Answers(c, [["t", 0, 0, 1]], answers=5)
        wait_until(lambda: parked_fetches(server) == 1, message="the stream to park")
        produce(p, "t", 0, batch(values(2)) + batch(values(3)))   # one entry, two batches
        assert continuous(stream.wait_for(2)) == [0, 1, 2, 3, 4]
        assert [a[0] for a in stream.got] == [4, 3]
        wait_until(lambda: parked_fetches(server) == 1, message="the stream to park again at the end")


def test_a_stream_parked_again_is_still_answered_at_max_wait(server, repark):
    with connect(server) as c, connect(server, "producer") as p:
        create(c, "t")
        stream = Answers(c, [["t", 0, 0, 1 << 20]], answers=5, max_wait_ms=300)
        produce(p, "t", 0, batch(values(1)))
        stream.wait_for(1)
        answered = time.monotonic()
        assert stream.wait_for(2)[1] == (3, 1, [])   # nothing came: empty, where the last one ended
        assert time.monotonic() - answered >= 0.25
        produce(p, "t", 0, batch(values(1)))
        assert stream.wait_for(3)[2] == (2, 1, [1])


def test_an_explicit_offset_ends_a_stream_parked_again(server, repark):
    with connect(server) as c, connect(server, "producer") as p:
        create(c, "t")
        stream = Answers(c, [["t", 0, 0, 1 << 20]], answers=10)
        produce(p, "t", 0, batch(values(2)))
        stream.wait_for(1)
        seek = Answers(c, [["t", 0, 0, 1 << 20]], answers=1)
        assert seek.wait_for(1) == [(None, 0, [0, 1])]
        assert stream.wait_for(2)[1] == (0, 2, [])     # answered at once, and the last
        wait_until(lambda: parked_fetches(server) == 0, message="nothing left parked")


def test_a_stream_parked_again_and_woken_while_writing_is_paused_goes_on_where_it_ended(server, repark):
    """Woken while its client's transport is above the high-water mark, a stream parked again
    inside its answer is deferred, and read when the transport drains, from where its last
    answer ended (the offsets it was parked again with, not those it first started with)."""
    with connect(server, "streamer") as c, connect(server, "producer") as p:
        create(c, "t")
        stream = Answers(c, [["t", 0, 0, 1 << 20]], answers=10)
        produce(p, "t", 0, batch(values(2)))
        assert stream.wait_for(1) == [(9, 0, [0, 1])]
        wait_until(lambda: parked_fetches(server) == 1, message="the stream to park again")
        (conn,) = [k for k in server.server.connections.values() if k.client_name == "streamer"]
        server.call(conn.pause_writing)   # as the transport does when the client stops reading
        produce(p, "t", 0, batch(values(1)))
        assert parked_fetches(server) == 0   # woken, and deferred until the transport drains
        server.call(conn.resume_writing)
        assert stream.wait_for(2)[1] == (8, 2, [2])
        produce(p, "t", 0, batch(values(1)))
        assert continuous(stream.wait_for(3)) == [0, 1, 2, 3]


def test_a_closed_connection_leaves_no_stream_parked(server, repark):
    with connect(server, "producer") as p:
        with connect(server) as c:
            create(c, "t")
            stream = Answers(c, [["t", 0, 0, 1 << 20]], answers=10)
            produce(p, "t", 0, batch(values(1)))
            stream.wait_for(1)
            assert parked_fetches(server) == 1
        wait_until(lambda: parked_fetches(server) == 0, message="the closed connection's fetch to leave")
        assert produce(p, "t", 0, batch(values(1)))[0][2] == 1


@pytest.mark.parametrize("args", [
    {"answers": 2},                                  # several answers need a session
    {"session": 1, "answers": 0},
    {"session": 1, "answers": MAX_ANSWERS + 1},
    {"session": 1, "answers": "3"},
    {"session": 1, "answers": True},
])
def test_bad_answers_are_refused_and_the_connection_stays_usable(server, args):
    with connect(server) as c:
        create(c, "t")
        offset = None if args.get("session") else 0
        assert error_code(c.call, "fetch", dict(args, partitions=[["t", 0, offset if offset is not None else 0,
                                                                     1 << 20]])) == ErrorCode.BAD_REQUEST
        assert c.call("ping", {}) is not None


def test_the_server_says_it_can_answer_a_fetch_more_than_once(server):
    with connect(server) as c:
        assert "fetch-answers" in c.state.server_info["features"]


# ---- parked again from the loop (MinilogServer._start_session_fetch, ParkedFetch.hold) ----------
# With the re-park by the loop (the default), a stream answered by its ParkedFetch keeps it
# (`hold`) and the loop callback after the answer parks it again unless something changed in
# between. These put requests between an answer and that callback, in one turn of the loop.
def unsent(client) -> bytes:
    """The frames `client` has queued and not written: taken, to be handed to the server."""
    data = b"".join(client._out)
    client._out.clear()
    client._out_bytes = 0
    return data


def server_conn(server, name):
    (conn,) = [k for k in server.server.connections.values() if k.client_name == name]
    return conn


def in_one_turn(server, *steps):
    """Run `steps` (callables) on the server's loop one after the other, in one turn: the loop
    callbacks they schedule run only after the last."""
    server.call(lambda: [step() for step in steps])


def heap_keeps_only_departed(server) -> bool:
    return server.call(lambda: all(entry[2]._callback is None for entry in server.server.broker.waiters._deadlines))


def test_a_stream_keeps_one_parked_fetch_and_one_deadline_for_all_its_answers(server):
    with connect(server) as c, connect(server, "producer") as p:
        create(c, "t")
        stream = Answers(c, [["t", 0, 0, 1 << 20]], answers=40)
        wait_until(lambda: parked_fetches(server) == 1, message="the stream to park")
        for n in range(30):
            produce(p, "t", 0, batch(values(1)))
            stream.wait_for(n + 1)
            wait_until(lambda: parked_fetches(server) == 1, message="the stream to park again")
        assert continuous(stream.got) == list(range(30))
        # No new ParkedFetch per answer: the one heap entry is the first one's.
        assert server.call(lambda: server.server.broker.waiters.deadlines_held) == 1


@pytest.mark.parametrize("between", ["append", "seek", "close", "pause", "deadline"])
def test_what_comes_between_an_answer_and_its_re_park(server, between):
    with connect(server, "streamer") as c, connect(server, "producer") as p:
        create(c, "t")
        stream = Answers(c, [["t", 0, 0, 1 << 20]], answers=10, max_wait_ms=200 if between == "deadline" else 60_000)
        wait_until(lambda: parked_fetches(server) == 1, message="the stream to park")
        conn, pconn = server_conn(server, "streamer"), server_conn(server, "producer")
        p.send("produce", {"acks": 1, "data": [["t", 0, batch(values(1))]]})
        answer = unsent(p)   # answered, and held until the loop callback after this turn
        if between == "append":
            p.send("produce", {"acks": 1, "data": [["t", 0, batch(values(2))]]})
            in_one_turn(server, lambda: pconn.data_received(answer), lambda: pconn.data_received(unsent(p)))
            assert continuous(stream.wait_for_records(3)) == [0, 1, 2]
            assert [a[0] for a in stream.got] == [9, 8]   # the second read at once, from the loop
        elif between == "seek":
            seek = c.send("fetch", {"session": 1, "answers": 1, "partitions": [["t", 0, 0, 1 << 20]]})
            got_seek = []
            c.state.expect(seek, lambda result, error: got_seek.append(result["results"][0][6]))
            in_one_turn(server, lambda: pconn.data_received(answer), lambda: conn.data_received(unsent(c)))
            assert stream.wait_for(2) == [(9, 0, [0]), (0, 1, [])]   # superseded: answered at once, the last
            wait_until(lambda: got_seek == [0] or c.read(0.05), message="the seek's answer")
        elif between == "close":
            in_one_turn(server, lambda: pconn.data_received(answer), conn.close)
        elif between == "pause":
            in_one_turn(server, lambda: pconn.data_received(answer), conn.pause_writing)
            assert stream.wait_for(1) == [(9, 0, [0])]
            produce(p, "t", 0, batch(values(1)))
            server.call(conn.resume_writing)
            assert continuous(stream.wait_for(2)) == [0, 1]
        else:   # its max_wait deadline passes while it is held
            in_one_turn(server, lambda: pconn.data_received(answer), lambda: time.sleep(0.3))
            assert stream.wait_for(1) == [(9, 0, [0])]
            produce(p, "t", 0, batch(values(1)))
            assert stream.wait_for(2)[1] == (8, 1, [1])
            answered = time.monotonic()
            assert stream.wait_for(3)[2] == (7, 2, [])   # still answered at max_wait when nothing comes
            assert time.monotonic() - answered >= 0.15
        if between == "close":
            wait_until(lambda: parked_fetches(server) == 0, message="the closed connection's fetch to leave")
        else:
            wait_until(lambda: parked_fetches(server) == (0 if between == "seek" else 1), message="the stream parked")
        if between in ("close", "seek"):   # the held fetch was let go, not left in the heap as if parked
            assert heap_keeps_only_departed(server)
