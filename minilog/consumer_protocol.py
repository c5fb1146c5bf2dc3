"""Consumer-group metadata and assignments in both protocols' layouts, and translation between them.

A group's members send the coordinator opaque bytes: in JoinGroup, per assignor, their
subscription ("metadata"); in the leader's SyncGroup, each member's assignment. The broker
never looks inside, except that one group may mix members of both front doors, whose clients
write these bytes in different layouts:

- msgpack clients (`clients/log/group.py`): metadata msgpack `{"topics": [...], "owned": {topic:
  [partition, ...]}}`, assignment msgpack `{topic: [partition, ...]}`;
- Kafka clients (Kafka's ConsumerProtocol, protocol type "consumer"), big-endian:
  subscription `version i16, topics [string], user_data bytes` (v1 adds `owned_partitions
  [(topic string, [i32])]`, v2 `generation_id i32`, v3 `rack_id nullable string`);
  assignment `version i16, [(topic string, [i32])], user_data bytes`. Arrays have an i32
  count, strings an i16 length, bytes an i32 length (-1: null).

So the coordinator (`minilog/group_coordinator.py`) hands the leader every member's metadata in
the leader's layout, and each member its assignment in its own (`translate_metadata`,
`translate_assignment`). Topics, owned partitions and assignments carry over; Kafka's
user_data (sticky assignors' own state) has no msgpack counterpart and is dropped. Bytes that
do not parse are passed through unchanged, so the leader's client decides, as it does for any
member whose metadata it cannot read.
"""

from __future__ import annotations

import struct

import msgpack

MINILOG = "minilog"
KAFKA = "kafka"
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
MAX_ITEMS = 100_000


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes):
        self.buf, self.pos = buf, 0

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise ValueError("consumer protocol bytes end early")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def i16(self) -> int:
        return _I16.unpack(self._take(2))[0]

    def i32(self) -> int:
        return _I32.unpack(self._take(4))[0]

    def string(self) -> str:
        return self._take(self.i16()).decode()

    def count(self) -> int:
        n = self.i32()
        if n > MAX_ITEMS:
            raise ValueError(f"consumer protocol array of {n} items")
        return max(n, 0)

    def partitions(self) -> dict:
        out = {}
        for _ in range(self.count()):
            topic = self.string()
            out[topic] = [self.i32() for _ in range(self.count())]
        return out

    def nullable_bytes(self):
        n = self.i32()
        return None if n < 0 else self._take(n)


def _string(s: str) -> bytes:
    b = s.encode()
    return _I16.pack(len(b)) + b


def _partitions(assigned: dict) -> bytes:
    out = [_I32.pack(len(assigned))]
    for topic, parts in assigned.items():
        out.append(_string(topic))
        out.append(_I32.pack(len(parts)))
        out.extend(_I32.pack(p) for p in parts)
    return b"".join(out)


# ---- Kafka's ConsumerProtocol -----------------------------------------------------------
def decode_kafka_subscription(raw: bytes) -> dict:
    """{"topics": [...], "owned": {topic: [partitions]}} from a Kafka subscription. Raises ValueError."""
    r = _Reader(bytes(raw))
    version = r.i16()
    if version < 0:
        raise ValueError(f"subscription version {version}")
    topics = [r.string() for _ in range(r.count())]
    r.nullable_bytes()  # user_data
    owned = r.partitions() if version >= 1 and r.pos < len(r.buf) else {}
    return {"topics": topics, "owned": owned}


def encode_kafka_subscription(topics, owned: dict | None = None) -> bytes:
    """A version 1 subscription (topics, empty user_data, owned partitions)."""
    return b"".join([_I16.pack(1), _I32.pack(len(topics)), *(_string(t) for t in topics), _I32.pack(-1),
                     _partitions(owned or {})])


def decode_kafka_assignment(raw: bytes) -> dict:
    """{topic: [partitions]} from a Kafka assignment. Raises ValueError."""
    r = _Reader(bytes(raw))
    if r.i16() < 0:
        raise ValueError("negative assignment version")
    return r.partitions()


def encode_kafka_assignment(assigned: dict) -> bytes:
    return _I16.pack(0) + _partitions(assigned) + _I32.pack(-1)


# ---- msgpack clients' layout --------------------------------------------------------------
def _check_partitions(value) -> dict:
    if not isinstance(value, dict):
        raise ValueError("partitions must be a map")
    out = {}
    for topic, parts in value.items():
        if not isinstance(topic, str) or not isinstance(parts, (list, tuple)):
            raise ValueError("partitions must be {topic: [partition, ...]}")
        out[topic] = [p for p in parts if isinstance(p, int) and not isinstance(p, bool) and 0 <= p < 2**31]
    return out


def decode_minilog_subscription(raw: bytes) -> dict:
    value = msgpack.unpackb(raw, raw=False) if raw else {}
    if not isinstance(value, dict):
        raise ValueError("metadata must be a map")
    topics = [t for t in value.get("topics") or () if isinstance(t, str)]
    return {"topics": topics, "owned": _check_partitions(value.get("owned") or {})}


def decode_minilog_assignment(raw: bytes) -> dict:
    return _check_partitions(msgpack.unpackb(raw, raw=False) if raw else {})


# ---- translation ------------------------------------------------------------------------------
def translate_metadata(raw: bytes, src: str | None, dst: str | None) -> bytes:
    """A member's subscription in the layout of `dst`'s clients (unchanged if it does not parse)."""
    if src == dst or src is None or dst is None:
        return raw
    try:
        if src == KAFKA:
            sub = decode_kafka_subscription(raw)
            return msgpack.packb(sub, use_bin_type=True)
        sub = decode_minilog_subscription(raw)
        return encode_kafka_subscription(sub["topics"], sub["owned"])
    except Exception:  # msgpack and struct raise several types: anything unreadable goes as it is
        return raw


def translate_assignment(raw: bytes, src: str | None, dst: str | None) -> bytes:
    """An assignment in the layout of `dst`'s clients (unchanged if it does not parse)."""
    if src == dst or src is None or dst is None or not raw:
        return raw
    try:
        if src == KAFKA:
            return msgpack.packb(decode_kafka_assignment(raw), use_bin_type=True)
        return encode_kafka_assignment(decode_minilog_assignment(raw))
    except Exception:
        return raw


def decode_assignment(raw: bytes, fmt: str | None) -> dict:
    """{topic: [partitions]} of an assignment in either layout; {} when it is neither."""
    if not raw:
        return {}
    order = (decode_kafka_assignment, decode_minilog_assignment) if fmt == KAFKA else \
        (decode_minilog_assignment, decode_kafka_assignment)
    for decode in order:
        try:
            return decode(raw)
        except Exception:
            continue
    return {}
