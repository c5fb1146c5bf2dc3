"""`LogConnection.receive_replies`: the one-step read a linger-0 producer's `poll(0)` makes
(one recv; a read that is exactly one whole frame is decoded and routed at once, anything
else goes through the decoder as `pump` does). Every shape a read can take must reach the
same handlers in the same order as `pump(0)` would: one reply, several in one read, a reply
cut by the read size, a reply that arrives a byte at a time (through a relay in front of a
real server), an error reply, a closed connection. Real server, real wire."""

import socket
import struct
import threading
import time

import pytest
from harness import wait_until

from clients.log import AdminClient, NewTopic, Producer
from clients.log import connection as log_connection
from clients.log.connection import LogConnection, parse_bootstrap
from clients.log.produce_requests import ProduceRequests
from clients.record_batch import pack_single
from clients.rpc import ConnectionClosed


def _frames_waiting(sock) -> int:
    """Whole frames in `sock`'s receive queue, read without taking them (MSG_PEEK)."""
    try:
        data = sock.recv(1 << 16, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return 0
    count = pos = 0
    while len(data) - pos >= 4:
        (size,) = struct.unpack_from(">I", data, pos)
        if len(data) - pos - 4 < size:
            break
        pos += 4 + size
        count += 1
    return count


def _send_records(conn, topic, count, replies):
    """Write `count` one-record produce requests whose replies go into `replies`, in order."""
    requests = ProduceRequests(1, 1000, 10**6, 100)
    for i in range(count):
        data = pack_single(None, b"r%d" % i, 1_700_000_000_000)
        rid = conn.state.next_id()
        conn.state.expect(rid, lambda result, error, i=i: replies.append((i, result, error)))
        conn.write_frame(requests.encode_single(rid, topic, 0, data))


@pytest.fixture
def conn(bootstrap):
    c = LogConnection(*parse_bootstrap(bootstrap))
    yield c
    c.close()


def _base(result):
    return result["results"][0][2]


def test_one_reply_is_routed_and_nothing_more_is_read(conn, make_topic):
    topic = make_topic(1)
    replies = []
    _send_records(conn, topic, 1, replies)
    wait_until(lambda: _frames_waiting(conn.sock) == 1, 10, message="the reply")
    assert conn.receive_replies() is True
    assert [(i, _base(result), error) for i, result, error in replies] == [(0, 0, None)]
    assert conn.receive_replies() is False   # nothing left: one recv that finds nothing
    assert not conn.callbacks


def test_several_replies_in_one_read_each_reach_their_handler_in_order(conn, make_topic):
    topic = make_topic(1)
    replies = []
    _send_records(conn, topic, 6, replies)
    wait_until(lambda: _frames_waiting(conn.sock) == 6, 10, message="six replies")
    assert conn.receive_replies() is True    # one read holds all six
    assert [(i, _base(result), error) for i, result, error in replies] == [(i, i, None) for i in range(6)]
    assert not conn.callbacks


@pytest.mark.parametrize("read_size", [7, 40])
def test_a_read_that_fills_the_read_size_is_followed_by_one_for_the_rest(conn, make_topic, monkeypatch, read_size):
    # A read size smaller than the replies: the first read ends in part of a frame (7: that
    # is all it holds; 40: a whole reply, then part of the next), which the decoder keeps;
    # having filled the read size, it is followed by pump(0), which reads the rest.
    topic = make_topic(1)
    replies = []
    _send_records(conn, topic, 3, replies)
    wait_until(lambda: _frames_waiting(conn.sock) == 3, 10, message="three replies")
    monkeypatch.setattr(log_connection, "REPLY_READ", read_size)
    assert conn.receive_replies() is True
    assert [(i, _base(result)) for i, result, _ in replies] == [(0, 0), (1, 1), (2, 2)]
    assert conn.state.decoder.buffered == 0


def test_an_error_reply_reaches_its_handler(conn):
    errors = []
    rid = conn.send_with("produce", {"acks": 5, "timeout_ms": 1000, "data": []},
                         lambda result, error: errors.append((result, error)))
    assert rid
    conn.flush()
    wait_until(lambda: _frames_waiting(conn.sock) == 1, 10, message="the error reply")
    conn.receive_replies()
    assert len(errors) == 1 and errors[0][0] is None and errors[0][1].code == "BAD_REQUEST"


def test_a_closed_connection_raises(spawn_server, tmp_path):
    server = spawn_server("minilog", data_dir=tmp_path / "closing")
    c = LogConnection("127.0.0.1", server.port)
    try:
        server.stop()
        with pytest.raises(ConnectionClosed):
            wait_until(lambda: c.receive_replies() and False, 10, message="the close")
        assert c.closed
    finally:
        c.close()


class _TrickleRelay:
    """A TCP relay in front of a real server that passes the client's bytes on as they come
    and the server's one byte per send, so every reply reaches the client in pieces."""

    def __init__(self, port: int):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.target = port
        self.socks = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        upstream = socket.create_connection(("127.0.0.1", self.target))
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.socks += [client, upstream]
        threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
        threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    @staticmethod
    def _pipe(src, dst, trickle):
        try:
            while data := src.recv(65536):
                if trickle:
                    for i in range(len(data)):
                        dst.sendall(data[i:i + 1])
                else:
                    dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        for s in self.socks:
            s.close()


def test_a_producer_whose_replies_come_a_byte_at_a_time_reports_every_record_in_order(minilog_server):
    port = minilog_server.port
    AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"}).create_topics([NewTopic("trickle", 1)])["trickle"].result(10)
    relay = _TrickleRelay(port)
    reports = []
    p = Producer({"bootstrap.servers": f"127.0.0.1:{relay.port}", "linger.ms": 0, "acks": 1,
                  "on_delivery": lambda err, msg: reports.append((err, msg.value(), msg.offset()))})
    try:
        p.produce("trickle", b"first")   # the topic's metadata: the general path
        assert p.flush(10) == 0
        reads = []
        inner = p._conn.receive_replies
        p._conn.receive_replies = lambda: reads.append(p._conn.state.decoder.buffered) or inner()
        deadline = time.monotonic() + 20
        for i in range(40):
            p.produce("trickle", b"%d" % i)
            p.poll(0)
        while len(reports) < 41 and time.monotonic() < deadline:
            p.poll(0)
        assert reports == [(None, b"first", 0)] + [(None, b"%d" % i, i + 1) for i in range(40)]
        assert any(reads), "no poll(0) found part of a reply held"   # the pieces were seen
    finally:
        p.close(5)
        relay.close()
