"""A bare Kafka-protocol connection for tests: encode a request with our codec, read the reply."""

import socket
import struct

from minilog.kafka.codec import decode_response, encode_request


class KafkaWire:
    def __init__(self, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self._next = 1

    def send(self, api, version: int, body: dict) -> int:
        cid = self._next
        self._next += 1
        self.sock.sendall(encode_request(api, version, cid, "kafka-wire-test", body))
        return cid

    def recv(self, api, version: int) -> tuple[int, dict]:
        size = struct.unpack(">i", self._read(4))[0]
        return decode_response(api, version, self._read(size))

    def call(self, api, version: int, body: dict) -> dict:
        cid = self.send(api, version, body)
        got, reply = self.recv(api, version)
        assert got == cid
        return reply

    def closed_by_peer(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("the server closed the connection")
            data += chunk
        return data

    def close(self):
        self.sock.close()
