"""A client written from docs/PROTOCOL.md alone: a socket and msgpack, no project code.

If this test breaks, either the servers or the document are wrong about the wire.
"""

import socket
import struct

import msgpack
import pytest


def send(sock, obj):
    body = msgpack.packb(obj, use_bin_type=True)
    sock.sendall(struct.pack(">I", len(body)) + body)


def recv_frame(sock):
    def exactly(n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            assert chunk, "server closed the connection"
            data += chunk
        return data
    (length,) = struct.unpack(">I", exactly(4))
    return msgpack.unpackb(exactly(length), raw=False)


@pytest.mark.parametrize("name", ["minibroker", "minilog"])
def test_raw_socket_client_handshakes_and_pings(name, start_minibroker, start_minilog):
    server = {"minibroker": start_minibroker, "minilog": start_minilog}[name]()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        # The documented example bytes of the hello frame.
        hello = bytes.fromhex("0000001d" "940001a568656c6c6f82a870726f746f636f6c01a6636c69656e74a178")
        assert hello[4:] == msgpack.packb([0, 1, "hello", {"protocol": 1, "client": "x"}])
        sock.sendall(hello)
        kind, rid, result = recv_frame(sock)
        assert (kind, rid) == (1, 1)
        assert result["server"] == name and result["protocol"] == 1
        assert result["max_frame"] == 16 * 1024 * 1024

        send(sock, [0, 2, "ping", {}])
        assert recv_frame(sock) == [1, 2, {"pong": True, "echo": None}]

        send(sock, [0, 3, "frobnicate", {}])
        kind, rid, code, message = recv_frame(sock)
        assert (kind, rid, code) == (2, 3, "UNKNOWN_OP") and "frobnicate" in message

        # id 0: no reply on success, so the next frame is the reply to request 5.
        send(sock, [0, 0, "ping", {}])
        send(sock, [0, 5, "server_info", {}])
        kind, rid, info = recv_frame(sock)
        assert (kind, rid) == (1, 5) and info["server"] == name and info["connections"] == 1
