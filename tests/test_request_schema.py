"""The validation layer at the edge (serverbase/schema.py): hostile shapes get BAD_REQUEST, never a crash.

The handshake is shared by both servers, so its cases run against both; the spec classes are
also exercised alone (they are sans-IO).
"""

import socket
import struct

import msgpack
import pytest

from clients.protocol.errors import BrokerError
from serverbase.schema import Array, Bin, Bool, Int, Name, Row, Schema, Str, Table, Value


def send(sock, obj):
    body = msgpack.packb(obj, use_bin_type=True)
    sock.sendall(struct.pack(">I", len(body)) + body)


def recv_frame(sock):
    def exactly(n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            assert chunk, "server closed the connection without a reply"
            data += chunk
        return data
    (length,) = struct.unpack(">I", exactly(4))
    return msgpack.unpackb(exactly(length), raw=False)


def nested(depth):
    value = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize("name", ["minibroker", "minilog"])
@pytest.mark.parametrize("username", [["alice"], {"u": "alice"}, 7, b"alice"])
def test_a_username_of_the_wrong_type_gets_bad_request(name, username, start_minibroker, start_minilog):
    server = {"minibroker": start_minibroker, "minilog": start_minilog}[name](credentials={"alice": "pw"})
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        send(sock, [0, 1, "hello", {"protocol": 1, "credentials": {"username": username, "password": "pw"}}])
        kind, rid, code, message = recv_frame(sock)
        assert (kind, rid, code) == (2, 1, "BAD_REQUEST") and "credentials.username" in message
    # The server is fine: a good hello still works.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        send(sock, [0, 1, "hello", {"protocol": 1, "credentials": {"username": "alice", "password": "pw"}}])
        assert recv_frame(sock)[:2] == [1, 1]


@pytest.mark.parametrize("name", ["minibroker", "minilog"])
def test_shared_ops_refuse_bad_shapes_and_the_connection_stays_open(name, start_minibroker, start_minilog):
    server = {"minibroker": start_minibroker, "minilog": start_minilog}[name]()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        send(sock, [0, 1, "hello", {"protocol": 1, "client": ["not", "a", "string"]}])
        assert recv_frame(sock)[2] == "BAD_REQUEST"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        send(sock, [0, 1, "hello", {"protocol": 1}])
        assert recv_frame(sock)[:2] == [1, 1]
        send(sock, [0, 2, "ping", {"echo": nested(200)}])
        kind, rid, code, message = recv_frame(sock)
        assert (kind, rid, code) == (2, 2, "BAD_REQUEST") and "nested" in message
        send(sock, [0, 3, "server_info", {"verbose": True}])
        kind, rid, code, message = recv_frame(sock)
        assert (kind, rid, code) == (2, 3, "BAD_REQUEST") and "verbose" in message
        send(sock, [0, 4, "ping", {"echo": [1, "two", b"3"]}])
        assert recv_frame(sock) == [1, 4, {"pong": True, "echo": [1, "two", b"3"]}]


def test_schema_fills_defaults_and_refuses_what_it_does_not_know():
    schema = Schema({"queue": Name(), "durable": Bool(False), "count": Int(0, 10, default=3),
                     "arguments": Table(), "body": Bin(default=None)})
    assert schema.validate({"queue": "q"}) == {"queue": "q", "durable": False, "count": 3, "arguments": {}, "body": None}
    assert schema.validate({"queue": "q", "durable": None})["durable"] is False   # nil is absent
    for args, words in [({}, "missing required argument 'queue'"),
                        ({"queue": ["q"]}, "'queue' must be a string, got array"),
                        ({"queue": "q", "durable": 1}, "'durable' must be a boolean"),
                        ({"queue": "q", "count": True}, "'count' must be an integer, got boolean"),
                        ({"queue": "q", "count": 11}, "0..10"),
                        ({"queue": "q", "other": 1}, "unknown argument 'other'"),
                        ({"queue": "é" * 128}, "256 bytes of UTF-8; the limit is 255"),
                        ({"queue": "q", "arguments": {"a": 1, b"b": 2}}, "bin key"),
                        ({"queue": "q", "arguments": nested(1021)}, "nested more than 32"),
                        ({"queue": "q", "arguments": {str(i): i for i in range(2000)}}, "more than 1024 entries"),
                        ({"queue": "q", "arguments": {"x": "y" * 70000}}, "bytes of strings"),
                        ({"queue": "q", "body": "text"}, "'body' must be bin")]:
        with pytest.raises(BrokerError) as err:
            schema.validate(args)
        assert err.value.code == "BAD_REQUEST" and words in err.value.message, (args, err.value.message)
    assert schema.validate({"queue": "é" * 127})["queue"] == "é" * 127   # 254 bytes


def test_rows_and_arrays_check_every_item():
    rows = Array(Row(Str(), Int(0), Value(default=None), optional=1), max_items=3)
    assert rows.check([["t", 0], ["t", 1, {"a": 1}]], "partitions")
    for value, words in [([["t"]], "partitions[0]' must be an array of 2-3 items, got 1"),
                         ([["t", -1]], "partitions[0][1]' must be an integer in 0.."),
                         ([["t", 0]] * 4, "has 4 items; the limit is 3"),
                         (["t"], "partitions[0]' must be an array of 2-3 items, got string")]:
        with pytest.raises(BrokerError) as err:
            rows.check(value, "partitions")
        assert words in err.value.message, err.value.message
