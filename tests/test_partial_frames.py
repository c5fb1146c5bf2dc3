"""Unfinished frames: bounded across all connections, and their memory returned when connections close."""

import socket
import struct

import msgpack

from harness import wait_until

HELLO = msgpack.packb([0, 1, "hello", {"protocol": 1}])


def greet(port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(struct.pack(">I", len(HELLO)) + HELLO)
    return sock


def stall(sock, claimed, sent):
    """Send the first `sent` bytes of a frame that claims `claimed` bytes, then nothing more."""
    sock.sendall(struct.pack(">I", claimed) + b"\x00" * sent)


def frames_until_closed(sock):
    sock.settimeout(10)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass   # closed while our bytes were still arriving: the kernel may reset instead

    out = []
    while data:
        (n,) = struct.unpack(">I", data[:4])
        out.append(msgpack.unpackb(data[4:4 + n], raw=False))
        data = data[4 + n:]
    return out


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) // 1024 for line in f if line.startswith("VmRSS:"))


def test_partial_frames_are_capped_across_connections(start_minibroker, caplog):
    server = start_minibroker(max_partial_bytes=4 << 20)
    first, second = greet(server.port), greet(server.port)
    stall(first, 16 << 20, 2 << 20)
    stall(second, 16 << 20, 1 << 20)
    wait_until(lambda: server.server.partial_bytes >= 3 << 20, message="3 MiB of partial frames held")
    third = greet(server.port)
    try:
        stall(third, 16 << 20, 2 << 20)
    except OSError:
        pass   # the server may close it while we still send
    frames = frames_until_closed(third)
    assert all(f[2] == "FRAME_TOO_LARGE" and "--max-partial-bytes" in f[3] for f in frames[1:])
    wait_until(lambda: len(server.server.connections) == 2, message="the third connection closed")
    assert "--max-partial-bytes" in caplog.text
    # The others are not hurt, and what they hold is released when they go.
    first.close()
    second.close()
    wait_until(lambda: server.server.partial_bytes == 0, message="partial bytes released")
    with greet(server.port) as sock:
        ping = msgpack.packb([0, 2, "ping", {"echo": b"x" * 1000}])
        sock.sendall(struct.pack(">I", len(ping)) + ping)
        sock.settimeout(10)
        data = b""
        while len(data) < 8 or data.count(b"pong") == 0:
            data += sock.recv(65536)
    third.close()


def test_memory_of_stalled_partial_frames_is_returned_after_they_close(spawn_server):
    server = spawn_server("minibroker", extra_args=["--fsync", "never"])
    pid = server.proc.pid
    before = rss_mib(pid)
    for _ in range(3):
        socks = [greet(server.port) for _ in range(8)]
        for sock in socks:
            stall(sock, 16 << 20, 8 << 20)             # 64 MiB held in all
        wait_until(lambda: rss_mib(pid) > before + 48, timeout=30, message="the partial frames in memory")
        for sock in socks:
            sock.close()
        # Was +64 MiB per round, never returned (a reference cycle kept each decoder's buffer).
        wait_until(lambda: rss_mib(pid) < before + 24, timeout=10, message=f"memory returned ({rss_mib(pid)} MiB "
                                                                        f"now, {before} MiB at start)")
