"""Idempotent produce: producer ids, epochs and per-partition sequence checks, as Kafka's.

An idempotent Kafka producer gets a producer id and epoch (InitProducerId) and numbers the
records it sends to each partition from 0. When a produce times out it sends the same batch
again; the broker must then answer with the offset the first copy got instead of writing the
records twice. So, per partition and producer id, `PartitionProducers` keeps the epoch and the
last few batches appended (first and last sequence, first and last offset), as Kafka's
`ProducerStateManager` does, and checks every batch that carries a producer id:

- an epoch older than the one seen: INVALID_PRODUCER_EPOCH (the producer was fenced);
- a newer epoch must start again at sequence 0, else OUT_OF_ORDER_SEQUENCE_NUMBER;
- a batch with the same sequences as one of the last `KEPT_BATCHES`: a duplicate; the core
  answers with that batch's base offset and appends nothing;
- otherwise its first sequence must follow the last one (wrapping at 2**31 - 1), else
  OUT_OF_ORDER_SEQUENCE_NUMBER, and nothing is appended.

A producer id the partition does not know is accepted at any sequence, as Kafka does: its
state may be gone with the segments retention deleted.

After a restart the state is rebuilt from the log itself, by reading the headers of the
partition's last `RECOVERY_SEGMENTS` segments the first time a producer with an id writes to
it (`recover`); a retry older than that would be appended again. Kafka writes snapshots of
this state instead; reading the tail is simpler and covers the retries that matter (seconds).

`ProducerIds` hands out producer ids that stay unique across restarts: it reserves them in
blocks, writing the end of the current block to `<data dir>/producer-ids` before using any.
"""

from __future__ import annotations

import os
from collections import deque

from clients import kafka_batch
from clients.protocol.errors import BrokerError, ErrorCode
from clients.record_batch import is_kafka_batch, iter_batches

KEPT_BATCHES = 5                # Kafka's max.in.flight.requests.per.connection limit for idempotence
RECOVERY_SEGMENTS = 2
ID_BLOCK = 1000
_SEQ_MOD = 0x80000000
_READ_CHUNK = 4 * 1024 * 1024
PRODUCER_IDS_FILE = "producer-ids"


class ProducerEntry:
    __slots__ = ("epoch", "batches")

    def __init__(self, epoch: int):
        self.epoch = epoch
        # (first sequence, last sequence, base offset, last offset) of the latest batches
        self.batches: deque = deque(maxlen=KEPT_BATCHES)

    @property
    def last_sequence(self) -> int:
        return self.batches[-1][1] if self.batches else -1


class PartitionProducers:
    """The idempotence state of one partition."""

    def __init__(self):
        self.producers: dict[int, ProducerEntry] = {}

    def check(self, producer_id: int, epoch: int, first_seq: int, last_seq: int, where: str) -> int | None:
        """Raise BrokerError if the batch may not be appended; return the base offset of the
        batch it duplicates, or None when it is new."""
        entry = self.producers.get(producer_id)
        if entry is None:
            return None
        if epoch < entry.epoch:
            raise BrokerError(ErrorCode.INVALID_PRODUCER_EPOCH,
                              f"{where}: producer {producer_id} epoch {epoch} is older than {entry.epoch}: "
                              f"a newer producer with this id exists")
        if epoch > entry.epoch:
            if first_seq != 0:
                raise BrokerError(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER,
                                  f"{where}: producer {producer_id} starts epoch {epoch} at sequence {first_seq}, "
                                  f"not 0")
            return None
        for b_first, b_last, base, _last in entry.batches:
            if b_first == first_seq and b_last == last_seq:
                return base
        expected = (entry.last_sequence + 1) % _SEQ_MOD
        if entry.batches and first_seq != expected:
            raise BrokerError(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER,
                              f"{where}: producer {producer_id} sent sequence {first_seq}, expected {expected}")
        return None

    def update(self, producer_id: int, epoch: int, first_seq: int, last_seq: int, base: int, last: int) -> None:
        entry = self.producers.get(producer_id)
        if entry is None or entry.epoch != epoch:
            entry = self.producers[producer_id] = ProducerEntry(epoch)
        entry.batches.append((first_seq, last_seq, base, last))

    def recover(self, plog) -> int:
        """Rebuild from the Kafka batches of the log's last segments; returns the batches read."""
        segments = plog.segments
        start = max(plog.log_start_offset, segments[-min(RECOVERY_SEGMENTS, len(segments))].base_offset)
        end = plog.log_end_offset
        offset, seen = start, 0
        while offset < end:
            data = plog.read_bytes(offset, _READ_CHUNK)
            if not data:
                break
            moved = False
            for h, view in iter_batches(data, validate_crc=False):
                offset = h.base_offset + h.record_count
                moved = True
                if not is_kafka_batch(view):
                    continue
                k = kafka_batch.read_header(view)
                if k.producer_id >= 0:
                    self.update(k.producer_id, k.producer_epoch, k.base_sequence, k.last_sequence,
                                k.base_offset, k.last_offset)
                    seen += 1
            if not moved:
                break
        return seen


class ProducerIds:
    """Producer ids unique across restarts, and the epochs of transactional ids."""

    def __init__(self, data_dir: str):
        self._path = os.path.join(data_dir, PRODUCER_IDS_FILE)
        try:
            with open(self._path) as f:
                self._next = int(f.read().strip() or 0)
        except FileNotFoundError:
            self._next = 0
        except ValueError:
            raise OSError(f"{self._path} does not hold a producer id") from None
        self._block_end = self._next
        self._by_transactional_id: dict[str, list] = {}

    def _allocate(self) -> int:
        if self._next >= self._block_end:
            end = self._next + ID_BLOCK
            tmp = self._path + ".tmp"
            with open(tmp, "w") as f:
                f.write(str(end))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path)
            self._block_end = end
        pid = self._next
        self._next += 1
        return pid

    def init(self, transactional_id: str | None = None, producer_id: int = -1, epoch: int = -1) -> tuple[int, int]:
        """(producer id, epoch) for InitProducerId. Without a transactional id, a new id at epoch
        0 (or, when the producer names its current id and epoch, the same id at the next epoch);
        with one, the id kept for it at the next epoch, which fences its older producers."""
        if transactional_id is not None:
            kept = self._by_transactional_id.get(transactional_id)
            if kept is None:
                kept = self._by_transactional_id[transactional_id] = [self._allocate(), -1]
            kept[1] += 1
            if kept[1] > 0x7FFF:
                kept[:] = [self._allocate(), 0]
            return kept[0], kept[1]
        if 0 <= producer_id < self._next and 0 <= epoch < 0x7FFF:
            return producer_id, epoch + 1
        return self._allocate(), 0
