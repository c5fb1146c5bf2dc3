"""A bare AMQP 0-9-1 client over a blocking socket, built on our own codec, for the tests that
must send what no real client library would: garbage, truncated frames, silence."""

import socket
import time

from minibroker.amqp import codec
from minibroker.amqp.spec import PROTOCOL_HEADER, m


class WireClient:
    def __init__(self, host, port, timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.reader = codec.CommandReader(1 << 20, 1 << 24, greeted=True)
        self.pending = []

    def send(self, data: bytes):
        self.sock.sendall(data)

    def method(self, ch, args):
        self.send(codec.frame_method(ch, args))

    def recv_command(self, timeout=10.0):
        """The next command from the server; None if the server closed the socket."""
        deadline = time.monotonic() + timeout
        while not self.pending:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            data = self.sock.recv(65536)
            if not data:
                return None
            self.pending.extend(self.reader.feed(data))
        return self.pending.pop(0)

    def expect(self, cls, timeout=10.0):
        cmd = self.recv_command(timeout)
        assert cmd is not None and type(cmd[1]) is cls, f"expected {cls.__name__}, got {cmd!r}"
        return cmd

    def handshake(self, heartbeat=0):
        self.send(PROTOCOL_HEADER)
        self.expect(m.ConnectionStart)
        self.method(0, m.ConnectionStartOk({}, "PLAIN", b"\x00guest\x00guest", "en_US"))
        self.expect(m.ConnectionTune)
        self.method(0, m.ConnectionTuneOk(2047, 131072, heartbeat))
        self.method(0, m.ConnectionOpen("/"))
        self.expect(m.ConnectionOpenOk)
        return self

    def open_channel(self, ch=1):
        self.method(ch, m.ChannelOpen())
        self.expect(m.ChannelOpenOk)

    def closed_by_server(self, timeout=10.0) -> bool:
        """True once the server has closed the socket (reading whatever came before)."""
        try:
            while self.recv_command(timeout) is not None:
                pass
        except OSError:
            pass
        return True

    def close(self):
        self.sock.close()
