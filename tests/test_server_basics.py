"""What every server does from the start, over the real wire, for both brokers."""

import asyncio
import socket
import struct

import pytest

from clients.aio_rpc import AsyncRpcConnection
from clients.protocol.errors import BrokerError, ErrorCode
from clients.protocol.framing import encode_frame, FrameDecoder
from clients.rpc import RpcConnection
from harness import wait_until

SERVERS = ["minibroker", "minilog"]


@pytest.fixture(params=SERVERS)
def server(request, start_minibroker, start_minilog):
    return {"minibroker": start_minibroker, "minilog": start_minilog}[request.param]()


def test_handshake_reports_name_version_and_limits(server):
    with RpcConnection(server.host, server.port, client_name="t") as conn:
        info = conn.server_info
        assert info["server"] == server.server.name
        assert info["protocol"] == 1
        assert info["max_frame"] == 16 * 1024 * 1024
        assert isinstance(info["version"], str) and isinstance(info["features"], list)


def test_ping_echoes(server):
    with RpcConnection(server.host, server.port) as conn:
        assert conn.call("ping", {"echo": b"\x00\xff"}) == {"pong": True, "echo": b"\x00\xff"}


def test_server_info_counts_connections(server):
    with RpcConnection(server.host, server.port) as a, RpcConnection(server.host, server.port):
        info = a.call("server_info")
        assert info["connections"] == 2
        assert info["uptime_s"] >= 0
        assert "ping" in info["ops"]


def test_unknown_op_is_an_error_and_the_connection_stays_usable(server):
    with RpcConnection(server.host, server.port) as conn:
        with pytest.raises(BrokerError) as info:
            conn.call("no_such_op")
        assert info.value.code == ErrorCode.UNKNOWN_OP
        assert "no_such_op" in info.value.message
        assert conn.call("ping")["pong"] is True


def test_args_that_are_not_a_map_are_a_bad_request(server):
    with RpcConnection(server.host, server.port) as conn:
        with pytest.raises(BrokerError) as info:
            conn.call("ping", [1, 2])
        assert info.value.code == ErrorCode.BAD_REQUEST
        assert conn.call("ping")["pong"]


def test_thousands_of_pipelined_requests_are_answered_in_order(server):
    with RpcConnection(server.host, server.port) as conn:
        ids = [conn.send("ping", {"echo": i}) for i in range(5000)]
        assert [conn.wait(rid)["echo"] for rid in ids] == list(range(5000))


def raw_socket(server):
    sock = socket.create_connection((server.host, server.port), timeout=10)
    return sock


def read_frames(sock, count, timeout=10):
    decoder = FrameDecoder()
    frames = []
    sock.settimeout(timeout)
    while len(frames) < count:
        data = sock.recv(65536)
        if not data:
            break
        frames.extend(decoder.feed(data))
    return frames


def test_request_before_hello_is_refused(server):
    with raw_socket(server) as sock:
        sock.sendall(encode_frame([0, 1, "ping", {}]))
        [frame] = read_frames(sock, 1)
        assert frame[:3] == [2, 1, ErrorCode.HANDSHAKE_REQUIRED]


def test_unsupported_protocol_version_gets_a_clear_error_and_close(server):
    with raw_socket(server) as sock:
        sock.sendall(encode_frame([0, 1, "hello", {"protocol": 99, "client": "future"}]))
        [frame] = read_frames(sock, 1)
        assert frame[:3] == [2, 1, ErrorCode.UNSUPPORTED_VERSION]
        assert "99" in frame[3]
        assert sock.recv(100) == b""  # closed


def test_garbage_bytes_close_that_connection_only(server):
    with RpcConnection(server.host, server.port) as good, raw_socket(server) as bad:
        bad.sendall(encode_frame([0, 1, "hello", {"protocol": 1, "client": "bad"}]))
        read_frames(bad, 1)
        bad.sendall(struct.pack(">I", 3) + b"\xc1\xc1\xc1")  # 0xc1 is never valid msgpack
        [frame] = read_frames(bad, 1)
        assert frame[0] == 2 and frame[2] == ErrorCode.CORRUPT_FRAME
        assert bad.recv(100) == b""
        assert good.call("ping")["pong"]


def test_oversized_frame_is_refused_with_frame_too_large(server):
    with RpcConnection(server.host, server.port) as good, raw_socket(server) as bad:
        bad.sendall(encode_frame([0, 1, "hello", {"protocol": 1, "client": "big"}]))
        read_frames(bad, 1)
        bad.sendall(struct.pack(">I", 64 * 1024 * 1024))
        [frame] = read_frames(bad, 1)
        assert frame[2] == ErrorCode.FRAME_TOO_LARGE
        assert bad.recv(100) == b""
        assert good.call("ping")["pong"]


def test_malformed_envelope_leaves_the_connection_usable(server):
    with raw_socket(server) as sock:
        sock.sendall(encode_frame([0, 1, "hello", {"protocol": 1, "client": "x"}]))
        read_frames(sock, 1)
        sock.sendall(encode_frame({"not": "an envelope"}) + encode_frame([0, 2, "ping", {}]))
        first, second = read_frames(sock, 2)
        assert first[0] == 2 and first[2] == ErrorCode.BAD_REQUEST
        assert second == [1, 2, {"pong": True, "echo": None}]


def test_client_refuses_to_send_a_frame_over_the_servers_limit(start_minibroker):
    server = start_minibroker(max_frame=4096)
    with RpcConnection(server.host, server.port) as conn:
        assert conn.server_info["max_frame"] == 4096
        with pytest.raises(BrokerError) as info:
            conn.send("ping", {"echo": b"x" * 5000})
        assert info.value.code == ErrorCode.FRAME_TOO_LARGE
        assert conn.call("ping")["pong"]


def test_credentials_are_checked_when_the_server_requires_them(start_minilog):
    server = start_minilog(credentials={"alice": "s3cret"})
    with RpcConnection(server.host, server.port, credentials={"username": "alice", "password": "s3cret"}) as conn:
        assert conn.call("ping")["pong"]
    with pytest.raises(BrokerError) as info:
        RpcConnection(server.host, server.port, credentials={"username": "alice", "password": "wrong"})
    assert info.value.code == ErrorCode.NOT_AUTHORIZED
    with pytest.raises(BrokerError) as info:
        RpcConnection(server.host, server.port)
    assert info.value.code == ErrorCode.NOT_AUTHORIZED


def test_connection_count_drops_when_a_client_leaves(server):
    with RpcConnection(server.host, server.port) as watcher:
        other = RpcConnection(server.host, server.port)
        assert watcher.call("server_info")["connections"] == 2
        other.close()
        wait_until(lambda: watcher.call("server_info")["connections"] == 1, message="connection count to drop")


async def test_asyncio_client_pipelines_calls(server):
    conn = await AsyncRpcConnection.connect(server.host, server.port)
    try:
        results = await asyncio.gather(*(conn.call("ping", {"echo": i}) for i in range(1000)))
        assert [r["echo"] for r in results] == list(range(1000))
        with pytest.raises(BrokerError):
            await conn.call("no_such_op")
    finally:
        await conn.close()


@pytest.mark.parametrize("module", SERVERS)
def test_subprocess_server_answers_and_exits_zero_on_sigterm(spawn_server, module, tmp_path):
    proc = spawn_server(module, data_dir=tmp_path / "d")
    with RpcConnection(proc.host, proc.port) as conn:
        assert conn.call("server_info")["server"] == module
    assert proc.stop() == 0
    assert "shutting down" in proc.stderr_text()
