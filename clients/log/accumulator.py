"""The record accumulator: one partition's records waiting to be sent, as wire-ready rows.

Both log producers (`clients/log/producer.py`, blocking, and `clients/aio_log/producer.py`,
asyncio) gather records into an `OpenBatch` per partition and close it into the bytes of one
record batch (`clients/record_batch.py`). This class is that shared part and knows nothing
of sockets, event loops, deadlines or delivery reports: each producer subclasses it with what
its own I/O needs (a linger deadline and callbacks, or a future and a timer handle).

A row is already in the wire layout of a record, `(offset_delta, timestamp_delta, key, value,
headers)`, so closing a batch is one `msgpack` pack of the rows plus the 39-byte header.
Timestamps follow the first record: `first_ts` is its timestamp (or the time it was added),
and every record added without a timestamp shares the delta `dflt` (the time the batch was
opened): one clock read per batch, not per record (records of one batch differ by at most the
linger time). The producers' fast paths append such rows themselves
(`rows.append((len(rows), batch.dflt, key, value, None))` and `size += len(value) + 16`), which
is exactly what `append()` does for them.
"""

import time

import msgpack

from ..record_batch import pack_batch

_packb = msgpack.Packer(use_bin_type=True, autoreset=True).pack
_now_ns = time.time_ns

# Estimated bytes a record costs in a batch beyond its key and value (msgpack array, ints,
# bin headers): what `size` adds per record, compared with batch.size limits.
RECORD_OVERHEAD = 16


def record_size(key, value, headers=None) -> int:
    """The estimate `OpenBatch.size` grows by for one record (headers as (str, bytes) pairs)."""
    size = RECORD_OVERHEAD + (len(value) if value is not None else 0) + (len(key) if key is not None else 0)
    if headers:
        size += sum(len(k) + len(v or b"") + 8 for k, v in headers)
    return size


class OpenBatch:
    """Records of one topic-partition not yet sent: append them, then `pack()` the batch."""

    __slots__ = ("rows", "size", "first_ts", "dflt", "max_ts", "topic", "partition")

    def __init__(self, topic, partition: int):
        self.rows = []
        self.size = 0          # estimated bytes (record_size of each record)
        self.first_ts = None   # set by the first record: its timestamp, or the time it was added
        self.dflt = 0          # timestamp delta of records added without a timestamp
        # At least every record's timestamp, and the opening time: the fast paths append rows
        # with delta dflt and do not touch it.
        self.max_ts = None
        self.topic = topic
        self.partition = partition

    def append(self, key, value, timestamp=None, headers=None, size=None) -> int:
        """Add one record (key, value: bytes or None; timestamp: ms or None); returns its index.

        `headers` must already be a list of (str, bytes) pairs or None; `size`, when the caller
        has computed `record_size` already, saves computing it twice.
        """
        rows = self.rows
        if self.first_ts is None:
            now = _now_ns() // 1_000_000
            if timestamp is None:
                self.first_ts = self.max_ts = now
            else:
                self.first_ts = int(timestamp)
                self.dflt = now - self.first_ts
                self.max_ts = max(self.first_ts, now)
        if timestamp is None:
            delta = self.dflt
        else:
            timestamp = int(timestamp)
            delta = timestamp - self.first_ts
            if timestamp > self.max_ts:
                self.max_ts = timestamp
        index = len(rows)
        rows.append((index, delta, key, value, headers))
        self.size += record_size(key, value, headers) if size is None else size
        return index

    def timestamp_of(self, index: int) -> int:
        """The timestamp (ms) the record at `index` carries in the packed batch."""
        return self.first_ts + self.rows[index][1]

    def pack(self) -> bytes:
        """The record batch of these rows (base offset 0: the broker writes the real one)."""
        rows = self.rows
        if not rows:
            raise ValueError("an empty batch cannot be packed (a record batch holds at least one record)")
        return pack_batch(_packb(rows), len(rows), self.first_ts, self.max_ts, 0, 0)

    def __len__(self) -> int:
        return len(self.rows)
