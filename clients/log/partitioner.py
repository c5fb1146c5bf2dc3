"""Choosing a partition for a record: librdkafka's partitioners by name, sticky batches for the rest.

A keyed record goes where its key's hash says, so records with one key keep their order. The
hash is chosen by name, as librdkafka's `partitioner` setting does (`KeyPartitioner`):

| name | key → partition | no key (None) | empty key (b"") |
|---|---|---|---|
| `consistent_random` (librdkafka's default) | CRC32 % n | random | random |
| `consistent` | CRC32 % n | partition of CRC32(b"") = 0 | 0 |
| `murmur2_random` (Java's default; aiokafka's) | murmur2 & 0x7fffffff % n | random | hashed |
| `murmur2` | murmur2 & 0x7fffffff % n | hashed as b"" | hashed |
| `fnv1a_random` | abs(int32 FNV-1a) % n | random | hashed |
| `fnv1a` | abs(int32 FNV-1a) % n | hashed as b"" | hashed |
| `random` | random | random | random |

CRC32 is zlib's (librdkafka's `rd_crc32`), taken unsigned. `murmur2` is Kafka's Java client's
`Utils.murmur2` (seed 0x9747b28c), masked to 31 bits as `toPositive` does. FNV-1a is the 32-bit
one, read as a signed int and made positive with abs(), as librdkafka does. Checked against
the real confluent-kafka in tests/log_clients/test_log_clients_partitioner.py.

"Random" here is the sticky strategy of Kafka 2.4+ (KIP-480) and librdkafka's
`sticky.partitioning.linger.ms`: all such records go to one partition until its batch closes,
then the next batch picks another, which keeps batches full instead of spraying single
records over every partition.
"""

import random
import zlib

_M = 0x5BD1E995
_SEED = 0x9747B28C
_MASK32 = 0xFFFFFFFF
RANDOM = -1  # KeyPartitioner.partition's answer for "the sticky partition"


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


def fnv1a(data: bytes) -> int:
    """The 32-bit FNV-1a hash of `data`, unsigned."""
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & _MASK32
    return h


def _murmur2_positive(key: bytes) -> int:
    return murmur2(key) & 0x7FFFFFFF


def _fnv1a_abs(key: bytes) -> int:
    h = fnv1a(key)
    return (0x100000000 - h) if h & 0x80000000 else h  # abs() of the signed 32-bit value


# name -> (hash of a key, random for None keys, random for empty keys)
PARTITIONERS = {
    "consistent_random": (zlib.crc32, True, True),
    "consistent": (zlib.crc32, False, False),
    "murmur2_random": (_murmur2_positive, True, False),
    "murmur2": (_murmur2_positive, False, False),
    "fnv1a_random": (_fnv1a_abs, True, False),
    "fnv1a": (_fnv1a_abs, False, False),
    "random": (None, True, True),
}


class KeyPartitioner:
    """Maps keys to partitions with one of librdkafka's partitioners, caching the hash of keys
    seen recently.

    Hashing in Python costs microseconds per key; real workloads reuse keys (user ids, device
    ids), so a bounded dict of key -> hash makes the common case a dict lookup.
    """

    __slots__ = ("name", "_cache", "_hash", "_null_random", "_empty_random")
    _CACHE_LIMIT = 100_000

    def __init__(self, name: str = "murmur2_random"):
        if name not in PARTITIONERS:
            raise ValueError(f"partitioner {name!r} is not one of {', '.join(sorted(PARTITIONERS))}")
        self.name = name
        self._hash, self._null_random, self._empty_random = PARTITIONERS[name]
        self._cache: dict[bytes, int] = {}

    def partition(self, key: bytes, num_partitions: int) -> int:
        """The partition for a non-None `key`, or RANDOM (-1): use the sticky partition."""
        h = self._cache.get(key)
        if h is None:
            if self._hash is None or (self._empty_random and not key):
                return RANDOM
            h = self._hash(key)
            if len(self._cache) >= self._CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = h
        return h % num_partitions

    def null_key_partition(self, num_partitions: int) -> int:
        """Where records without a key go: RANDOM (-1, sticky), or one fixed partition."""
        if self._null_random:
            return RANDOM
        return self._hash(b"") % num_partitions


def pick_sticky(num_partitions: int, previous: int | None) -> int:
    """A partition for the next keyless batch: random, but not the previous one when possible."""
    if num_partitions <= 1:
        return 0
    p = random.randrange(num_partitions - 1)
    if previous is not None and p >= previous:
        p += 1
    return p
