"""Helpers of the minilog server tests: connections, batches, and the ops they repeat."""

import msgpack

from clients.protocol.errors import BrokerError
from clients.record_batch import build_batch, decode_batches
from clients.rpc import RpcConnection


def connect(server, name="test") -> RpcConnection:
    return RpcConnection(server.host, server.port, client_name=name)


def batch(values, timestamp=None, key=None) -> bytes:
    """One batch holding `values` (bytes each); timestamps `timestamp`, `timestamp+1`... or now."""
    return build_batch([(key, v, None if timestamp is None else timestamp + i, None)
                        for i, v in enumerate(values)])


def values(n, prefix=b"v") -> list:
    return [prefix + b"%d" % i for i in range(n)]


def create(conn, name, partitions=1, config=None):
    result = conn.call("create_topics", {"topics": [{"name": name, "num_partitions": partitions,
                                                     "config": config or {}}]})
    assert result["results"][name] is None, result
    return result


def produce(conn, topic, partition, data, acks=1):
    """Produce one batch (or a list of batches, as separate entries); returns the result rows."""
    entries = [[topic, partition, b] for b in (data if isinstance(data, list) else [data])]
    return conn.call("produce", {"acks": acks, "timeout_ms": 5000, "data": entries})["results"]


def fetch(conn, topic, partition, offset, max_bytes=1 << 20, max_wait_ms=0, min_bytes=1, timeout=30):
    """(error, high_watermark, log_start_offset, records decoded) of one partition's fetch."""
    result = conn.call("fetch", {"max_wait_ms": max_wait_ms, "min_bytes": min_bytes, "max_bytes": 50 << 20,
                                 "partitions": [[topic, partition, offset, max_bytes]]}, timeout=timeout)
    (t, p, error, hw, start, records), = result["results"]
    assert (t, p) == (topic, partition)
    return error, hw, start, decode_batches(records)


def record_values(records, from_offset=0) -> list:
    return [r[3] for r in records if r[0] >= from_offset]


def error_code(fn, *args, **kwargs) -> str:
    try:
        fn(*args, **kwargs)
    except BrokerError as exc:
        return exc.code
    raise AssertionError("expected a BrokerError")


def subscription(*topics) -> bytes:
    return msgpack.packb({"topics": list(topics)})


def assignment(mapping) -> bytes:
    return msgpack.packb(mapping)
