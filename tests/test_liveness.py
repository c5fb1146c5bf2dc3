"""Handshake timeout and heartbeats (both servers): silent or dead peers do not hold connections forever."""

import socket
import struct
import time

import msgpack
import pytest

from harness import wait_until


def send(sock, obj):
    body = msgpack.packb(obj, use_bin_type=True)
    sock.sendall(struct.pack(">I", len(body)) + body)


def read_until_closed(sock, timeout):
    """Every frame the server sends until it closes the connection."""
    sock.settimeout(timeout)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    frames = []
    while data:
        (n,) = struct.unpack(">I", data[:4])
        frames.append(msgpack.unpackb(data[4:4 + n], raw=False))
        data = data[4 + n:]
    return frames


def recv_frame(sock):
    head = b""
    while len(head) < 4:
        head += sock.recv(4 - len(head))
    (n,) = struct.unpack(">I", head)
    body = b""
    while len(body) < n:
        body += sock.recv(n - len(body))
    return msgpack.unpackb(body, raw=False)


SERVERS = ["minibroker", "minilog"]


@pytest.mark.parametrize("name", SERVERS)
def test_connections_without_a_hello_are_closed_after_the_handshake_timeout(name, start_minibroker, start_minilog):
    server = {"minibroker": start_minibroker, "minilog": start_minilog}[name](handshake_timeout=0.5)
    silent = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(40)]
    greeted = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    send(greeted, [0, 1, "hello", {"protocol": 1}])
    assert recv_frame(greeted)[:2] == [1, 1]
    started = time.monotonic()
    for sock in silent:
        frames = read_until_closed(sock, timeout=10)
        assert frames and frames[-1][2] == "TIMEOUT" and "hello" in frames[-1][3]
        sock.close()
    assert time.monotonic() - started < 8
    wait_until(lambda: len(server.server.connections) == 1, message="only the greeted connection left")
    send(greeted, [0, 2, "ping", {}])
    assert recv_frame(greeted) == [1, 2, {"pong": True, "echo": None}]
    greeted.close()


@pytest.mark.parametrize("name", SERVERS)
def test_heartbeats_are_agreed_sent_and_a_silent_peer_is_closed(name, start_minibroker, start_minilog):
    server = {"minibroker": start_minibroker, "minilog": start_minilog}[name](heartbeat=1)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        send(sock, [0, 1, "hello", {"protocol": 1, "heartbeat": 30}])
        kind, rid, result = recv_frame(sock)
        assert result["heartbeat"] == 1           # the server's bound wins
        started = time.monotonic()
        frames = read_until_closed(sock, timeout=15)
        elapsed = time.monotonic() - started
    assert [3, "heartbeat", None] in frames      # the server beat while the client said nothing
    assert frames[-1][2] == "TIMEOUT" and "heartbeat" in frames[-1][3]
    assert 1.9 < elapsed < 8


@pytest.mark.parametrize("name", SERVERS)
def test_a_client_that_sends_within_the_period_stays_connected(name, start_minibroker, start_minilog):
    server = {"minibroker": start_minibroker, "minilog": start_minilog}[name](heartbeat=1)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        send(sock, [0, 1, "hello", {"protocol": 1, "heartbeat": 1}])
        assert recv_frame(sock)[:2] == [1, 1]
        # A server deaf to our traffic closes us at its first sweep (every 0.25 s at heartbeat 1)
        # after 2 x 1 s, so by 2.25 s at the latest; the last ping goes out at 2.4 s or later
        # and must still be answered. The sleep paces the client: it is the scenario.
        deadline = time.monotonic() + 2.6
        rid = 2
        while time.monotonic() < deadline:
            send(sock, [0, rid, "ping", {}])
            frame = recv_frame(sock)
            while frame[0] == 3:                  # heartbeats may come in between
                frame = recv_frame(sock)
            assert frame[:2] == [1, rid]
            rid += 1
            time.sleep(0.3)
    # Without asking for heartbeats, an idle client is never closed by them.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        send(sock, [0, 1, "hello", {"protocol": 1}])
        assert recv_frame(sock)[2]["heartbeat"] == 0
