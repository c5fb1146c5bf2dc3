"""Choosing a partition for a record: Kafka's murmur2 for keys, sticky batches without one.

`murmur2` is the hash Kafka's Java client (`Utils.murmur2`) and librdkafka's `murmur2` /
`murmur2_random` partitioners use: seed 0x9747b28c, the result masked to 31 bits
(`toPositive`) and taken modulo the partition count. A key therefore lands on the same
partition here as with the Java client's default partitioner and with librdkafka configured
`partitioner=murmur2_random` (librdkafka's *default* is `consistent_random`, CRC32 based;
we do not copy it). Same key, same partition, so records with one key keep their order.

Records without a key follow the "sticky" strategy of Kafka 2.4+ (KIP-480): all go to one
partition until its batch closes, then the next batch picks another, which keeps batches
full instead of spraying single records over every partition.
"""

import random

_M = 0x5BD1E995
_SEED = 0x9747B28C
_MASK32 = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's 32-bit murmur2 of `data` as an unsigned int (before toPositive)."""
    length = len(data)
    h = (_SEED ^ length) & _MASK32
    n4 = length // 4
    for i in range(n4):
        k = int.from_bytes(data[4 * i:4 * i + 4], "little")
        k = (k * _M) & _MASK32
        k ^= k >> 24
        k = (k * _M) & _MASK32
        h = (h * _M) & _MASK32
        h ^= k
    rest = length & 3
    base = n4 * 4
    if rest == 3:
        h ^= data[base + 2] << 16
    if rest >= 2:
        h ^= data[base + 1] << 8
    if rest >= 1:
        h ^= data[base]
        h = (h * _M) & _MASK32
    h ^= h >> 13
    h = (h * _M) & _MASK32
    h ^= h >> 15
    return h


class KeyPartitioner:
    """Maps keys to partitions with murmur2, caching the hash of keys seen recently.

    Hashing in Python costs microseconds per key; real workloads reuse keys (user ids, device
    ids), so a bounded dict of key -> hash makes the common case a dict lookup.
    """

    __slots__ = ("_cache",)
    _CACHE_LIMIT = 100_000

    def __init__(self):
        self._cache: dict[bytes, int] = {}

    def partition(self, key: bytes, num_partitions: int) -> int:
        h = self._cache.get(key)
        if h is None:
            h = murmur2(key) & 0x7FFFFFFF
            if len(self._cache) >= self._CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = h
        return h % num_partitions


def pick_sticky(num_partitions: int, previous: int | None) -> int:
    """A partition for the next keyless batch: random, but not the previous one when possible."""
    if num_partitions <= 1:
        return 0
    p = random.randrange(num_partitions - 1)
    if previous is not None and p >= previous:
        p += 1
    return p
