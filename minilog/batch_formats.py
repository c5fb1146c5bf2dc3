"""One log, two batch formats: which a partition holds, and conversion for the other protocol's readers.

A msgpack client produces minilog batches (`clients/record_batch.py`), a Kafka client Kafka
magic-2 batches (`clients/kafka_batch.py`). The core stores each as it came, in the same
partition log, and the storage engine reads both (a stored batch says which it is at byte 12).
A reader gets its own format: when a fetched range holds only batches of the reader's format
(the usual case), the file slice goes out untouched, with os.sendfile; otherwise the range is
read and each batch of the other format is converted, as Kafka down-converts for old clients.
Conversion keeps each record's offset, timestamp, key, value and headers.

Knowing "only the reader's format" must not cost a read, so `PartitionFormats` keeps, per
partition directory, an empty marker file per format the log has ever held (`kafka-batches`,
`minilog-batches`), written once, before the first batch of that format is appended. A log
without markers holds nothing, or, when it has batches, minilog batches only (it is from before
Kafka batches existed). The markers
stay after retention or compaction removed such batches: they say "may hold", which only costs
a conversion pass that finds nothing to convert.
"""

from __future__ import annotations

import os

from clients import kafka_batch
from clients.record_batch import build_batch, decode_batch, is_kafka_batch, iter_batches

MINILOG = "minilog"
KAFKA = "kafka"
FORMATS = (MINILOG, KAFKA)
_MARKERS = {MINILOG: "minilog-batches", KAFKA: "kafka-batches"}


class PartitionFormats:
    """Which formats each partition log may hold (markers on disk, cached in memory)."""

    def __init__(self):
        self._known: dict[str, set] = {}     # partition directory -> formats it may hold

    def formats(self, plog) -> set:
        directory = plog.directory
        known = self._known.get(directory)
        if known is None:
            known = {fmt for fmt, name in _MARKERS.items() if os.path.exists(os.path.join(directory, name))}
            if not known and plog.log_end_offset > plog.log_start_offset:
                known = {MINILOG}   # a log written before the markers existed
            self._known[directory] = known
        return known

    def only(self, plog, fmt: str) -> bool:
        """True if every batch of the log is of `fmt` (no conversion needed)."""
        known = self._known.get(plog.directory)
        if known is None:
            known = self.formats(plog)
        return not known or (len(known) == 1 and fmt in known)   # known <= {fmt}, without the set

    def note_append(self, plog, fmt: str) -> None:
        """Call before appending a batch of `fmt`; writes its marker the first time. Raises OSError."""
        known = self.formats(plog)
        if fmt in known:
            return
        directory = plog.directory
        for held in known | {fmt}:   # an old log's minilog marker too, the first time it gets one
            path = os.path.join(directory, _MARKERS[held])
            if not os.path.exists(path):
                _touch(path)
        _fsync_dir(directory)
        known.add(fmt)

    def forget_topic(self, topic: str) -> None:
        """The topic was deleted: its directories may be made again, empty."""
        for directory in [d for d in self._known if os.path.basename(d).rsplit("-", 1)[0] == topic]:
            del self._known[directory]


def _touch(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def convert(data, fmt: str) -> bytes:
    """The whole batches of `data` (stored bytes, either format) with every batch in `fmt`.

    A partial batch at the end (a read's byte limit) is dropped, as readers drop it anyway.
    Batches already in `fmt` are copied as they are."""
    out = []
    want_kafka = fmt == KAFKA
    for h, view in iter_batches(data, validate_crc=False):
        if is_kafka_batch(view) == want_kafka:
            out.append(bytes(view))
        elif want_kafka:
            out.append(minilog_to_kafka(view))
        else:
            out.append(kafka_to_minilog(view))
    return b"".join(out)


def minilog_to_kafka(view) -> bytes:
    """A stored minilog batch as a Kafka batch with the same offsets (CreateTime, not idempotent)."""
    h, records = decode_batch(view, verify=False)
    base = h.base_offset
    return kafka_batch.build_batch([(k, v, ts, hd) for _, ts, k, v, hd in records], base_offset=base,
                                   partition_leader_epoch=0, offset_deltas=[o - base for o, *_ in records])


def kafka_to_minilog(view) -> bytes:
    """A stored Kafka batch as minilog batches with the same offsets and record timestamps.

    Kafka batches are dense (the produce path checks it), so one minilog batch holds them all."""
    h, records = kafka_batch.decode_batch(view, verify=False)
    return build_batch([(k, v, ts, list(hd) if hd else None) for _, ts, k, v, hd in records],
                       base_offset=h.base_offset)
