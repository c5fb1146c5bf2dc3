"""Mutated valid requests, pipelined at a real server: the engine of tests/test_fuzz_requests.py.

Each server has a corpus of valid requests (`MINIBROKER_CORPUS`, `MINILOG_CORPUS`): every op,
with arguments that work. `mutate` takes one and breaks it the way a buggy or hostile client
would: a field gets a value of another type, an extreme number, a long or multi-byte string, a
deep or binary-keyed map; a field goes missing, an unknown one appears, the op is swapped for
another, the args stop being a map. `FuzzSession` sends them pipelined over one raw socket
(a reader thread takes the replies and pushes as they come, so the server is never blocked on
us) and tallies the replies by error code. Plain `random` with a seed, not hypothesis: a
hundred thousand requests must cost seconds, and the seed printed on failure replays the run.
"""

import random
import socket
import struct
import threading
import time

import msgpack

from clients.protocol.framing import FrameDecoder
from clients.record_batch import build_batch


def _nested(depth):
    value = 1
    for _ in range(depth):
        value = {"a": value}
    return value


# Values a field may be replaced with: other types, edges of ranges, sizes at and over limits.
HOSTILE_VALUES = [
    None, True, False, 0, 1, -1, 2, 255, 256, 65535, 65536, (1 << 31) - 1, 1 << 31, (1 << 63) - 1, -(1 << 63),
    (1 << 64) - 1, 1.5, -0.0, float("inf"), float("nan"), "", "q", "x" * 255, "x" * 256, "€" * 85, "€" * 86,
    "amq.gen-x", "a.b.#", "#", "*", "\x00", "1" + "0" * 400, "-5", b"", b"bin", b"\xff" * 300, [], [1],
    ["", "q", b"x"], [[1, 2], [3]], {}, {"a": 1}, {b"k": 1}, {"x-max-length": -1}, {"x-match": "all"},
    _nested(33), _nested(200), list(range(2000)), {"k" + str(i): i for i in range(1100)}, {"a": 1, b"b": 2},
]
# The same kind as the value replaced, at its edges: these pass a type check and test the bounds.
SAME_KIND = {
    int: [0, -1, 1, 255, 256, 65535, 65536, (1 << 31) - 1, 1 << 31, (1 << 63) - 1, -(1 << 63), (1 << 64) - 1],
    str: ["", "x" * 255, "x" * 256, "€" * 86, "1" + "0" * 400, "a." * 200, "#." * 300 + "#", "amq.x", "-1", "\x00"],
    bytes: [b"", b"\xff" * 300, b"x" * 70000],
    dict: [{}, {"a": 1, b"b": 2}, {b"k": "v"}, _nested(33), {"x-match": "any", b"k": 1}, {"headers": {b"k": 1}},
           {"expiration": "1" + "0" * 400}, {"priority": 300}, {"k" + str(i): i for i in range(1100)}],
    list: [[], [None], [[]], list(range(2000)), [["", "q", b"x", {"expiration": "9" * 30}, False]]],
    bool: [True, False, 1, 0],
}


def _queue_and_exchange_ops():
    return [
        ("channel_open", {"ch": 2}),
        ("channel_close", {"ch": 2}),
        ("exchange_declare", {"exchange": "fx", "type": "topic", "durable": True}),
        ("exchange_declare", {"exchange": "fh", "type": "headers", "arguments": {"alt": "x"}}),
        ("exchange_delete", {"exchange": "fx", "if_unused": False}),
        ("exchange_bind", {"destination": "fh", "source": "fx", "routing_key": "a.#"}),
        ("exchange_unbind", {"destination": "fh", "source": "fx", "routing_key": "a.#"}),
        ("queue_declare", {"queue": "fq", "durable": True, "arguments": {"x-max-length": 50}}),
        ("queue_declare", {"queue": "fq2", "arguments": {"x-message-ttl": 1000, "x-max-priority": 5,
                                                         "x-dead-letter-exchange": "fx"}}),
        ("queue_declare", {"queue": "", "exclusive": True}),
        ("queue_bind", {"queue": "fq", "exchange": "fx", "routing_key": "a.*.c"}),
        ("queue_bind", {"queue": "fq2", "exchange": "fh", "arguments": {"x-match": "any", "k": "v"}}),
        ("queue_unbind", {"queue": "fq", "exchange": "fx", "routing_key": "a.*.c"}),
        ("queue_purge", {"queue": "fq"}),
        ("queue_delete", {"queue": "fq2", "if_unused": False, "if_empty": False}),
        ("basic_qos", {"ch": 1, "prefetch_count": 10, "global": False}),
        ("confirm_select", {"ch": 1}),
        ("publish", {"ch": 1, "exchange": "", "routing_key": "fq", "body": b"m"}),
        ("publish", {"ch": 1, "exchange": "fx", "routing_key": "a.b.c", "body": b"m", "mandatory": True,
                     "properties": {"delivery_mode": 2, "priority": 3, "expiration": "5000",
                                    "headers": {"k": "v", "n": [1, {"x": b"y"}]}}}),
        ("publish_batch", {"ch": 1, "messages": [["", "fq", b"a", None, False], ["fx", "a.x.c", b"b"],
                                                 ["fh", "", b"c", {"headers": {"k": "v"}}, True]]}),
        ("consume", {"ch": 1, "queue": "fq", "consumer_tag": "ct", "no_ack": False, "exclusive": False}),
        ("cancel", {"ch": 1, "consumer_tag": "ct"}),
        ("get", {"ch": 1, "queue": "fq", "no_ack": True}),
        ("ack", {"ch": 1, "delivery_tag": 0, "multiple": True}),
        ("nack", {"ch": 1, "delivery_tag": 1, "multiple": False, "requeue": True}),
        ("reject", {"ch": 1, "delivery_tag": 2, "requeue": False}),
        ("ping", {"echo": {"a": [1, 2]}}),
        ("server_info", {}),
    ]


MINIBROKER_CORPUS = _queue_and_exchange_ops()
MINIBROKER_CLEANUP = [("queue_delete", {"queue": "fq"}), ("queue_delete", {"queue": "fq2"}),
                      ("exchange_delete", {"exchange": "fx"}), ("exchange_delete", {"exchange": "fh"}),
                      ("channel_close", {"ch": 1}), ("channel_close", {"ch": 2})]


def _minilog_corpus():
    batch = build_batch([(b"k", b"v", None, None), (None, b"w", None, [("h", b"1")])])
    return [
        ("create_topics", {"topics": [{"name": "ft", "num_partitions": 2, "config": {"retention.ms": 60000}}],
                           "validate_only": False}),
        ("delete_topics", {"topics": ["ft2"]}),
        ("metadata", {"topics": ["ft"], "allow_auto_create": False}),
        ("produce", {"acks": 1, "data": [["ft", 0, batch], ["ft", 1, batch]]}),
        ("produce", {"acks": 0, "timeout_ms": 1000, "data": [["ft2", 0, batch]]}),
        ("fetch", {"partitions": [["ft", 0, 0, 65536]], "max_wait_ms": 0, "min_bytes": 1, "max_bytes": 1 << 20}),
        ("list_offsets", {"partitions": [["ft", 0, -1], ["ft", 1, -2], ["ft", 0, 0]]}),
        ("join_group", {"group_id": "fg", "member_id": "", "session_timeout_ms": 10000,
                        "protocols": [["range", b"meta"]]}),
        ("sync_group", {"group_id": "fg", "generation_id": 1, "member_id": "m", "assignments": []}),
        ("heartbeat", {"group_id": "fg", "generation_id": 1, "member_id": "m"}),
        ("leave_group", {"group_id": "fg", "member_id": "m"}),
        ("offset_commit", {"group_id": "fg2", "generation_id": -1, "member_id": "",
                           "offsets": [["ft", 0, 1, "meta"]]}),
        ("offset_fetch", {"group_id": "fg2", "partitions": [["ft", 0]]}),
        ("list_groups", {}),
        ("describe_groups", {"groups": ["fg", "fg2"]}),
        ("ping", {}),
        ("server_info", {}),
    ]


# Creating and deleting topics costs file creation and fsyncs (milliseconds each, more with
# hundreds of partitions): those requests are drawn ten times less often, so a run stays seconds.
MINILOG_CORPUS = [entry for entry in _minilog_corpus()
                  for _ in range(1 if entry[0] in ("create_topics", "delete_topics") else 10)]
MINILOG_CLEANUP = [("delete_topics", {"topics": ["ft", "ft2"]})]


def _mutate_value(rng, value, depth=0):
    """Replace `value` or, for a container, one thing inside it."""
    if depth < 4 and rng.random() < 0.6:
        if type(value) is dict and value:
            out = dict(value)
            key = rng.choice(list(out))
            out[key] = _mutate_value(rng, out[key], depth + 1)
            return out
        if type(value) is list and value:
            out = list(value)
            i = rng.randrange(len(out))
            out[i] = _mutate_value(rng, out[i], depth + 1)
            return out
    same = SAME_KIND.get(type(value))
    if same is not None and rng.random() < 0.5:
        return rng.choice(same)
    return rng.choice(HOSTILE_VALUES)


def mutate(rng, corpus, op, args):
    """One mutated copy of a valid request: (op, args)."""
    args = dict(args)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        roll = rng.random()
        if roll < 0.6 and args:
            key = rng.choice(list(args))
            args[key] = _mutate_value(rng, args[key])
        elif roll < 0.7 and args:
            del args[rng.choice(list(args))]
        elif roll < 0.8:
            args[rng.choice(["extra", "ch", b"bin-key", "x" * 300])] = rng.choice(HOSTILE_VALUES)
        elif roll < 0.9:
            op = rng.choice(corpus)[0]           # another op's args under this op's name
        else:
            return op, rng.choice(HOSTILE_VALUES)  # args that are not a map at all
    return op, args


class FuzzSession:
    """One raw connection: pipelined requests out, a thread tallying what comes back."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.codes: dict[str, int] = {}
        self.internal_errors: list[str] = []
        self.replies = 0
        self.pushes = 0
        self.closed_by_server = None      # the last error before an unexpected close
        self.last_id = 0
        self._last_error = None
        self._packer = msgpack.Packer(use_bin_type=True)
        self._send([0, 1, "hello", {"protocol": 1, "client": "fuzz"}])
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._next_id = 2

    def _send(self, obj) -> None:
        body = self._packer.pack(obj)
        self.sock.sendall(struct.pack(">I", len(body)) + body)

    def _read(self) -> None:
        decoder = FrameDecoder(1 << 30)
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except OSError:
                return
            if not data:
                self.closed_by_server = self._last_error or "closed with no error frame"
                return
            for frame in decoder.feed(data):
                kind = frame[0]
                if kind == 1:
                    self.replies += 1
                    self.last_id = max(self.last_id, frame[1])
                elif kind == 2:
                    code = frame[2]
                    self.codes[code] = self.codes.get(code, 0) + 1
                    self._last_error = f"{code}: {frame[3]}"
                    if code == "INTERNAL_ERROR":
                        self.internal_errors.append(frame[3])
                    if frame[1]:
                        self.last_id = max(self.last_id, frame[1])
                else:
                    self.pushes += 1

    def send_all(self, requests, chunk: int = 2000) -> None:
        """Pipeline (op, args) requests, `chunk` per write; every one asks for a reply."""
        buf = []
        for op, args in requests:
            body = self._packer.pack([0, self._next_id, op, args])
            self._next_id += 1
            buf.append(struct.pack(">I", len(body)))
            buf.append(body)
            if len(buf) >= 2 * chunk:
                self.sock.sendall(b"".join(buf))
                buf = []
        if buf:
            self.sock.sendall(b"".join(buf))

    def sync(self, timeout: float = 120.0) -> None:
        """Wait for the reply to a ping sent after everything else (replies come in order,
        except for waiting ops, which do not delay it)."""
        self.send_all([("ping", {})])
        want = self._next_id - 1
        deadline = time.monotonic() + timeout
        while self.last_id < want:
            if self.closed_by_server is not None:
                raise AssertionError(f"the server closed the connection: {self.closed_by_server}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no reply to request {want} within {timeout} s (last {self.last_id})")
            time.sleep(0.01)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def mutated_requests(rng, corpus, count: int):
    for _ in range(count):
        op, args = rng.choice(corpus)
        if rng.random() < 0.15:
            yield op, args                       # some valid ones, so state builds up to be broken
        else:
            yield mutate(rng, corpus, op, args)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0
