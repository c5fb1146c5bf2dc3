"""The log broker's core: topics, produce, fetch, list offsets and consumer groups, with no sockets.

`LogBroker` is minilog without a network, as `minibroker.broker.Broker` is minibroker's. A front
door (the msgpack server, `minilog/server.py`; a Kafka-protocol one) checks the fields of its
wire requests, calls a method here with plain Python values, and turns what comes back into its
own reply. Nothing here knows a connection, a request id or a frame.

What the methods return:

- errors that concern one row (one partition of a produce, a fetch, a commit) come back in the
  row as `[code, message]` (a code of `clients.protocol.errors.ErrorCode`), so one bad
  partition does not fail the others; errors of the whole call raise `BrokerError`;
- calls that have to wait return an awaitable: `produce` with `acks=-1` and `commit_offsets`
  (until the group-commit fsync covers them, `minilog/group_commit.py`), the long poll
  `wait_for_records`, and the group joins and syncs (futures of the coordinator); `park` is
  the long poll with a callback instead (`ParkedFetch`), answered inside the append that
  readies it;
- a fetch returns `FileSlice`s (`minilog.storage.FileSlice`: fd, position, length), never record
  bytes, so a front door can write them with `os.sendfile` (`minilog/fetch_response.py`).

The parts that hold the state are their own modules: topics (`minilog/topics.py`) over the
storage engine (`minilog/storage/`), long-poll wake-ups (`minilog/append_waiters.py`), the group
coordinator (`minilog/group_coordinator.py`) and committed offsets (`minilog/offsets_store.py`).
The front door runs the periodic `tick_groups` and `tick_storage`. docs/minilog.md walks through
each path.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time

from clients import kafka_batch, record_batch
from clients.protocol.errors import BrokerError, ErrorCode
from clients.record_batch import BatchError, CorruptBatchError, InvalidBatchError

from .append_waiters import AppendWaiters, ParkedFetch
from .batch_formats import KAFKA, MINILOG, PartitionFormats, convert
from .consumer_protocol import decode_assignment
from .group_commit import FlushFailed, GroupCommit
from .group_coordinator import DEFAULT_GROUP_MAX_SIZE, GroupCoordinator
from .offsets_store import DEFAULT_OFFSETS_SEGMENT_BYTES, OffsetsStore
from .producer_state import PartitionProducers, ProducerIds
from .storage import (LogClosedError, LogConfig, LogManager, OffsetLostError, OffsetOutOfRangeError,
                      RecordTooLargeError)
from .topics import INTERNAL_TOPICS, Topics

log = logging.getLogger("minilog.broker")

# ListOffsets' special timestamps, as Kafka's.
LATEST_TIMESTAMP = -1
EARLIEST_TIMESTAMP = -2


def _error(code: str, message: str) -> list:
    return [code, message]


def append_error(exc: Exception, topic: str, partition: int) -> list:
    """The `[code, message]` of a failed append of one produce entry."""
    where = f"{topic}-{partition}"
    if isinstance(exc, BrokerError):
        return [exc.code, exc.message]
    if isinstance(exc, kafka_batch.UnsupportedCompressionError):
        return _error(ErrorCode.UNSUPPORTED_COMPRESSION_TYPE, f"{where}: {exc}")
    if isinstance(exc, RecordTooLargeError):
        return _error(ErrorCode.MESSAGE_TOO_LARGE, f"{where}: {exc}; raise the topic's max.message.bytes "
                                                   f"or send smaller batches")
    if isinstance(exc, CorruptBatchError):
        return _error(ErrorCode.CORRUPT_MESSAGE, f"{where}: {exc}; nothing of this partition's data was stored")
    if isinstance(exc, InvalidBatchError):
        return _error(ErrorCode.CORRUPT_MESSAGE, f"{where}: not a valid record batch: {exc}")
    if isinstance(exc, LogClosedError):
        return _error(ErrorCode.NOT_FOUND, f"{where}: the topic was deleted")
    if isinstance(exc, OSError):
        return _error(ErrorCode.STORAGE_ERROR, f"{where}: could not write: {exc}; nothing was stored")
    raise exc


class LogBroker:
    """One minilog broker: its logs, topics, committed offsets and groups."""

    def __init__(self, data_dir: str, *, num_partitions: int = 1, auto_create_topics: bool = True,
                 log_config: dict | None = None, group_initial_rebalance_delay_ms: int = 0,
                 offsets_topic_segment_bytes: int = DEFAULT_OFFSETS_SEGMENT_BYTES,
                 group_max_size: int = DEFAULT_GROUP_MAX_SIZE, drop_behind_bytes: int | None = None):
        self.data_dir = data_dir
        # Page cache kept behind each log's end (PartitionLog.drop_behind_bytes; None: all).
        self.drop_behind_bytes = drop_behind_bytes
        self.default_partitions = num_partitions
        self.auto_create_topics = auto_create_topics
        # Server-wide topic defaults under Kafka's topic-config names; validated now, not at open.
        self.default_log_config = LogConfig.from_dict(log_config or {})
        self.offsets_topic_segment_bytes = offsets_topic_segment_bytes
        self.logs: LogManager | None = None
        self.topics: Topics | None = None
        self.offsets: OffsetsStore | None = None
        self.groups = GroupCoordinator(group_initial_rebalance_delay_ms, group_max_size)
        self.waiters = AppendWaiters()
        self.group_commit: GroupCommit | None = None
        self._fsync_executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._create_executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._creations: set[asyncio.Task] = set()   # topic creations under way (create_topic_off_loop)
        self.formats = PartitionFormats()
        self._minilog_noted: set = set()     # logs whose minilog-batches marker is known to be written
        # Figures for the `stats` op and /metrics (MinilogServer.extra_metrics); plain ints.
        self.produced_batches = self.produced_records = self.produced_bytes = 0
        self.fetch_waits = 0
        self.tracers: list = []   # `minilog trace` callbacks; every hook is behind `if tracing`
        self.producer_ids: ProducerIds | None = None
        self._producers: dict = {}           # log -> PartitionProducers (idempotent produce)
        self.duplicates = 0                  # retried idempotent batches answered without appending
        self.conversions = 0                 # fetched ranges converted to the reader's format

    # ---- lifecycle ---------------------------------------------------------------------
    def open(self) -> None:
        """Open (recovering) the data directory and replay the committed offsets. Call on the loop."""
        self.logs = LogManager(self.data_dir, self.default_log_config)
        self.producer_ids = ProducerIds(self.data_dir)
        self.offsets = OffsetsStore(self.logs, self.offsets_topic_segment_bytes)
        self.offsets.load()
        self.topics = Topics(self.logs, self.default_partitions, self.auto_create_topics)  # sees the offsets topic
        # One thread: fsync rounds run one after another anyway, and never queue behind other work.
        self._fsync_executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="minilog-fsync")
        self.group_commit = GroupCommit(asyncio.get_running_loop(), self._fsync_executor)
        # Topic creation's file work: its own thread, so fsync rounds never queue behind it.
        self._create_executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="minilog-create")
        # flush.messages / flush.ms flushes go through the same fsync thread: never on the loop.
        self.logs.set_flush_requester(self.group_commit.request_flush)
        self.logs.set_drop_behind(self.drop_behind_bytes)

    def close(self) -> None:
        """Wait for the fsync thread, then flush and close every log (clean-shutdown markers).

        A topic creation under way is stopped at its next partition and removed (LogManager.close)."""
        if self._create_executor is not None:
            if self.logs is not None:
                self.logs.cancel_builds()
            self._create_executor.shutdown(wait=True, cancel_futures=True)
            self._create_executor = None
        if self._fsync_executor is not None:
            self._fsync_executor.shutdown(wait=True)
            self._fsync_executor = None
        if self.logs is not None:
            self.logs.close()
            self.logs = None

    def tick_groups(self) -> None:
        """Session timeouts and rebalance deadlines (run every 50 ms or so)."""
        self.groups.tick()
        if self.tracers:
            self.trace_groups()

    def tick_storage(self) -> None:
        """Retention, flush.ms, segment.ms, compaction and checkpoints (the storage engine decides what is due)."""
        self.logs.tick()

    def info(self) -> dict:
        """Figures for server_info."""
        if self.topics is None:
            return {}
        return {"topics": len(self.topics.names()), "groups": len(self.groups.list_groups()),
                "fsync_rounds": self.group_commit.rounds, "durable_acks": self.group_commit.requests,
                "duplicate_batches": self.duplicates, "converted_fetches": self.conversions}

    def _log_or_none(self, topic, partition):
        try:
            return self.logs.get_log(topic, partition)
        except KeyError:
            return None

    # ---- topics ------------------------------------------------------------------------
    def topic_names(self) -> list[str]:
        return self.topics.names()

    def create_topic(self, name: str, num_partitions: int | None = None, config: dict | None = None,
                     validate_only: bool = False) -> None:
        """Create a topic on the calling thread (or only check that it could be). Raises BrokerError.

        For in-process use and tests; the doors call `create_topic_off_loop`."""
        if validate_only:
            self.topics.check_create(name, num_partitions, config)
        else:
            self.topics.create(name, num_partitions, config)

    def create_topic_off_loop(self, name: str, num_partitions: int | None = None, config: dict | None = None,
                              validate_only: bool = False) -> asyncio.Future:
        """Check the request and claim the name now; returns a future done when the topic exists
        (await it shielded: cancelling the waiter must not cancel the creation).

        The file work runs on the creation thread, one topic after another, while the loop
        serves (`Topics.reserve`, `Topics.build_off_loop`). The work belongs to the broker, not
        to the request: a requester that goes away does not stop it. Raises BrokerError (the
        future raises it too, for a failure of the file work).
        """
        if validate_only:
            self.topics.check_create(name, num_partitions, config)
            return self._done()
        return self._start_build(self.topics.reserve(name, num_partitions, config))

    @staticmethod
    def _done() -> asyncio.Future:
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def _start_build(self, build) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(self.topics.build_off_loop(build, self._create_executor))
        self._creations.add(task)
        task.add_done_callback(self._creation_done)
        return task

    def _creation_done(self, task: asyncio.Task) -> None:
        self._creations.discard(task)
        if not task.cancelled():
            task.exception()   # retrieved: a requester that went away must not leave it "never retrieved"

    def alter_topic_config(self, name: str, set_: dict, delete: list) -> dict:
        """Change a topic's config overrides (kafka-configs --alter): set some, delete others so
        they fall back to the server default. Applied to its open logs at once; returns the
        effective config. Raises BrokerError."""
        if not self.topics.exists(name):
            raise BrokerError(ErrorCode.NOT_FOUND, f"topic {name!r} does not exist")
        if name in INTERNAL_TOPICS:
            raise BrokerError(ErrorCode.NOT_AUTHORIZED, f"{name!r} is an internal topic; its config is the server's")
        overrides = self.logs.overrides_for(name)
        for key in delete:
            overrides.pop(key, None)
        overrides.update(set_)
        try:
            config = self.logs.set_topic_config(name, overrides)
        except ValueError as exc:
            raise BrokerError(ErrorCode.BAD_REQUEST, f"topic {name!r}: {exc}") from None
        except OSError as exc:
            raise BrokerError(ErrorCode.STORAGE_ERROR, f"could not store the config of {name!r}: {exc}") from None
        return config.to_dict()

    def delete_topic(self, name: str) -> None:
        """Delete a topic, wake its parked fetches and forget its commits. Raises BrokerError."""
        self.topics.delete(name)
        self.waiters.notify_topic(name)
        # A topic created again under this name starts with no markers and no producers.
        self._producers = {k: v for k, v in self._producers.items() if k[0] != name}
        self._minilog_noted = {k for k in self._minilog_noted if k[0] != name}
        self.formats.forget_topic(name)
        try:
            self.offsets.delete_topic(name)  # durable with the next flush; a lost tombstone is harmless
        except OSError as exc:
            log.error("could not forget the commits of deleted topic %s: %s", name, exc)

    def create_partitions_off_loop(self, name: str, count: int, validate_only: bool = False) -> asyncio.Future:
        """Grow a topic to `count` partitions (or only check that it could), as
        `create_topic_off_loop` creates one: checked and claimed now, the new logs made on the
        creation thread, adopted all at once. Raises BrokerError (the future too)."""
        if validate_only:
            self.topics.add_partitions(name, count, validate_only=True)
            return self._done()
        return self._start_build(self.topics.reserve_partitions(name, count))

    def describe_topics(self, names: list[str] | None, allow_auto_create: bool = False):
        """{name: {partitions, config, error}} for `names` (None: every topic but internal ones).

        With `allow_auto_create` (and auto-creation on), a named topic that does not exist is
        created as CreateTopics creates one: claimed now, its files made on the creation thread
        (`create_topic_off_loop`). Then the answer is an awaitable of the map, done once those
        topics exist, so a client gets their partitions in its first answer.
        """
        if names is None:
            names = self.topics.names()
        failed, builds = {}, []
        if allow_auto_create and self.auto_create_topics:
            for name in names:
                if not self.topics.exists(name):
                    try:
                        builds.append((name, self.create_topic_off_loop(name)))
                    except BrokerError as exc:
                        failed[name] = exc
        if builds:
            return self._describe_when_created(names, builds, failed)
        return self._describe(names, failed)

    async def _describe_when_created(self, names, builds, failed) -> dict:
        for name, created in builds:
            try:
                await asyncio.shield(created)
            except BrokerError as exc:
                failed[name] = exc
        return self._describe(names, failed)

    def _describe(self, names, failed: dict) -> dict:
        out = {}
        for name in names:
            exc = failed.get(name)
            if exc is not None:
                out[name] = {"partitions": [], "config": {}, "error": [exc.code, exc.message]}
            elif self.topics.exists(name):
                out[name] = self.topics.describe(name)
            else:
                out[name] = {"partitions": [], "config": {},
                             "error": _error(ErrorCode.NOT_FOUND, f"topic {name!r} does not exist")}
        return out

    # ---- produce -----------------------------------------------------------------------
    def produce(self, entries: list, acks: int = 1, fmt: str = MINILOG):
        """Append `entries`, each `[topic, partition, batch bytes]`; rows `[topic, partition, base_offset, error]`.

        `fmt` is the format of the batches: MINILOG (one or more minilog batches per entry) or
        KAFKA (one Kafka magic-2 batch per entry, as Kafka's Produce carries; see
        `_append_kafka`). Each entry is all or nothing and fails alone (its row has base_offset
        -1 and the error). A Kafka entry appended to a LogAppendTime topic has a fifth field,
        the time the broker stamped on it. With `acks=-1` the answer is an awaitable of the
        rows, done when the group-commit fsync covers every appended entry; otherwise the rows
        themselves.
        """
        if fmt != MINILOG:
            if fmt != KAFKA:
                raise BrokerError(ErrorCode.BAD_REQUEST, f"unknown batch format {fmt!r}")
            return self._produce_kafka(entries, acks)
        noted = self._minilog_noted
        results = []
        durable = []
        notify = self.waiters.notify
        tracing = bool(self.tracers)
        for item in entries:
            try:
                topic, partition, batch = item
            except (TypeError, ValueError):
                results.append([None, None, -1, _error(ErrorCode.BAD_REQUEST,
                                                       f"each entry must be [topic, partition, batch], got {item!r:.80}")])
                continue
            try:
                if type(batch) is not bytes:
                    raise BrokerError(ErrorCode.BAD_REQUEST, f"{topic}-{partition}: batch must be bin")
                plog = self._log_to_produce_to(topic, partition)
                if (topic, partition) not in noted:
                    self.formats.note_append(plog, MINILOG)
                    noted.add((topic, partition))
                if tracing:
                    before = _segment_state(plog)
                if plog.config.log_append_time:
                    batch = _stamped_minilog_batches(batch)
                # A failed write raises SegmentWriteError (an OSError) after the storage
                # engine cut the torn bytes off: nothing of this entry was stored.
                info = plog.append(batch)
                if tracing:
                    self._trace_append(topic, partition, plog, info, len(batch), before)
            except Exception as exc:
                results.append([topic, partition, -1, append_error(exc, topic, partition)])
                continue
            notify((topic, partition))
            self.produced_batches += 1
            self.produced_records += info.last_offset - info.base_offset + 1
            self.produced_bytes += len(batch)
            results.append([topic, partition, info.base_offset, None])
            if acks == -1:
                durable.append((len(results) - 1, plog, info.last_offset + 1))
        if durable:
            return self._when_durable(durable, results)
        return results

    def _log_to_produce_to(self, topic, partition):
        """The partition log a produce entry appends to (created when auto-creation allows), after
        the checks both batch formats share: the names' types, and no client writes internal topics."""
        if type(topic) is not str or type(partition) is not int:
            raise BrokerError(ErrorCode.BAD_REQUEST, f"topic must be a string and partition an integer, "
                                                     f"got {topic!r}, {partition!r}")
        if topic in INTERNAL_TOPICS:
            raise BrokerError(ErrorCode.NOT_AUTHORIZED, f"{topic!r} is internal: only the server writes it")
        return self.topics.get_log(topic, partition, True)

    def _produce_kafka(self, entries: list, acks: int):
        results = []
        durable = []
        tracing = bool(self.tracers)
        for item in entries:
            try:
                topic, partition, batch = item
            except (TypeError, ValueError):
                results.append([None, None, -1, _error(ErrorCode.BAD_REQUEST,
                                                       f"each entry must be [topic, partition, batch], got {item!r:.80}")])
                continue
            try:
                if not isinstance(batch, (bytes, bytearray, memoryview)):
                    raise BrokerError(ErrorCode.BAD_REQUEST, f"{topic}-{partition}: batch must be bytes")
                plog = self._log_to_produce_to(topic, partition)
                if tracing:
                    before = _segment_state(plog)
                info, base, append_time = self._append_kafka(plog, topic, partition, batch)
                if tracing and info is not None:
                    self._trace_append(topic, partition, plog, info, len(batch), before)
            except Exception as exc:
                results.append([topic, partition, -1, append_error(exc, topic, partition)])
                continue
            # On a LogAppendTime topic the row also carries the time stamped, for Kafka's answer.
            results.append([topic, partition, base, None] if append_time < 0
                           else [topic, partition, base, None, append_time])
            if info is None:
                continue  # a duplicate: nothing new to wake anyone for
            self.waiters.notify((topic, partition))
            self.produced_batches += 1
            self.produced_records += info.last_offset - info.base_offset + 1
            self.produced_bytes += len(batch)
            if acks == -1:
                durable.append((len(results) - 1, plog, info.last_offset + 1))
        if durable:
            return self._when_durable(durable, results)
        return results

    def _append_kafka(self, plog, topic: str, partition: int, batch):
        """Append one Kafka batch; returns (AppendInfo, base offset, LogAppendTime or -1), or
        (None, the original base offset, -1) for a retried idempotent batch already in the log.

        Checked here: the header fields (`kafka_batch.check_header`), one whole batch, no
        transactional or control batch, a codec the server can decompress, and the producer's
        epoch and sequence. The CRC is checked once, by the storage engine's append. Records are
        not decoded. The broker writes the partition leader epoch (0), which also marks the
        stored batch as Kafka's (`clients.record_batch.is_kafka_batch`)."""
        where = f"{topic}-{partition}"
        # A writable view is the caller's to change (the Kafka door hands over a view of the
        # request frame): the offsets and epoch are written in place, saving a copy of the batch.
        buf = batch if isinstance(batch, memoryview) and not batch.readonly else bytearray(batch)
        h = kafka_batch.read_header(buf)
        kafka_batch.check_header(h)
        if h.size != len(buf):
            raise BrokerError(ErrorCode.INVALID_RECORD if h.size < len(buf) else ErrorCode.CORRUPT_MESSAGE,
                              f"{where}: a produce entry must be exactly one whole batch ({len(buf)} bytes, "
                              f"the batch says {h.size})")
        if h.attributes & (kafka_batch.TRANSACTIONAL_MASK | kafka_batch.CONTROL_MASK):
            raise BrokerError(ErrorCode.INVALID_RECORD, f"{where}: transactional and control batches are not "
                                                        f"supported by this broker")
        if h.compression in (kafka_batch.SNAPPY, kafka_batch.LZ4, kafka_batch.ZSTD) and kafka_batch.cramjam is None:
            raise kafka_batch.UnsupportedCompressionError(
                f"{kafka_batch.COMPRESSION_NAMES[h.compression]} needs the cramjam package, which this server "
                f"does not have")
        producers = None
        if h.producer_id >= 0:
            producers = self._producers.get((topic, partition))
            if producers is None:
                producers = self._producers[(topic, partition)] = PartitionProducers()
                producers.recover(plog)
            if h.base_sequence < 0:
                raise BrokerError(ErrorCode.INVALID_RECORD, f"{where}: a batch with a producer id needs a base "
                                                            f"sequence")
            duplicate_of = producers.check(h.producer_id, h.producer_epoch, h.base_sequence, h.last_sequence, where)
            if duplicate_of is not None:
                self.duplicates += 1
                return None, duplicate_of, -1
        append_time = -1
        if plog.config.log_append_time:
            # The CRC first: re-signing the stamped header must never bless damaged bytes.
            kafka_batch.validate(buf)
            append_time = _now_ms()
            kafka_batch.set_log_append_time(buf, append_time)
        kafka_batch.set_partition_leader_epoch(buf, 0)
        self.formats.note_append(plog, KAFKA)
        info = plog.append(buf)
        if producers is not None:
            producers.update(h.producer_id, h.producer_epoch, h.base_sequence, h.last_sequence,
                             info.base_offset, info.last_offset)
        return info, info.base_offset, append_time

    def init_producer_id(self, transactional_id: str | None = None, producer_id: int = -1,
                         producer_epoch: int = -1) -> tuple[int, int]:
        """InitProducerId: (producer id, epoch) for an idempotent producer (see producer_state)."""
        if transactional_id is not None and not isinstance(transactional_id, str):
            raise BrokerError(ErrorCode.BAD_REQUEST, "transactional_id must be a string or null")
        try:
            return self.producer_ids.init(transactional_id, producer_id, producer_epoch)
        except OSError as exc:
            raise BrokerError(ErrorCode.STORAGE_ERROR, f"could not reserve producer ids: {exc}") from None

    def partition_offsets(self, topic: str, partition: int) -> tuple[int, int]:
        """(log start offset, high watermark) of a partition. Raises BrokerError NOT_FOUND."""
        plog = self.topics.get_log(topic, partition)
        return plog.log_start_offset, plog.high_watermark

    async def _when_durable(self, durable, results):
        wait = self.group_commit.wait_flushed
        outcome = await asyncio.gather(*[wait(plog, offset) for _, plog, offset in durable], return_exceptions=True)
        for (row, _, _), failure in zip(durable, outcome):
            if isinstance(failure, FlushFailed):
                topic, partition = results[row][0], results[row][1]
                results[row][2:] = [-1, _error(ErrorCode.STORAGE_ERROR,
                                               f"{topic}-{partition}: appended but not flushed to disk: {failure}")]
            elif isinstance(failure, BaseException):
                raise failure
        return results

    # ---- fetch -------------------------------------------------------------------------
    def read(self, parts, max_bytes: int, min_bytes: int, fmt: str = MINILOG) -> tuple[list, bool]:
        """Read every `(topic, partition, offset, partition_max_bytes)` of `parts`, in format `fmt`.

        Returns (rows, ready): rows `(topic, partition, error, high_watermark, log_start_offset,
        records)` and whether the answer may go now (at least `min_bytes` of records, or an
        error). `records` is None, a FileSlice of whole stored batches when they are all in the
        reader's format (the usual case), or bytes of converted batches
        (`minilog/batch_formats.py`). Only the first batch of the answer may go over
        `max_bytes` or a partition's limit, so a large batch is never stuck.
        """
        get_log = self.topics.get_log
        only = self.formats.only
        rows = []
        budget = max_bytes
        taken = 0
        error = False
        for topic, partition, offset, pmax in parts:
            try:
                plog = get_log(topic, partition)
            except BrokerError as exc:
                rows.append((topic, partition, [exc.code, exc.message], -1, -1, None))
                error = True
                continue
            hw, start = plog.high_watermark, plog.log_start_offset
            if offset < start or offset > hw:
                rows.append((topic, partition,
                             _error(ErrorCode.OFFSET_OUT_OF_RANGE,
                                    f"{topic}-{partition}: offset {offset} is outside [{start}, {hw}] "
                                    f"(log start offset, log end offset)"), hw, start, None))
                error = True
                continue
            records = None
            if offset < hw and budget > 0:
                try:
                    found = plog.read(offset, min(pmax, budget))
                except OffsetLostError as exc:
                    # Recovery took damaged data out of the log: say so at that offset (docs/PROTOCOL.md).
                    rows.append((topic, partition, _error(ErrorCode.CORRUPT_MESSAGE, f"{topic}-{partition}: {exc}; "
                                                          f"fetch from offset {exc.end_offset} to go on"),
                                 hw, start, None))
                    error = True
                    continue
                except (OffsetOutOfRangeError, LogClosedError, OSError) as exc:
                    rows.append((topic, partition, _error(ErrorCode.STORAGE_ERROR, f"{topic}-{partition}: {exc}"),
                                 hw, start, None))
                    error = True
                    continue
                if found is not None and (taken == 0 or found.length <= budget):
                    records = found
                    budget -= found.length
                    taken += found.length
                    if not only(plog, fmt):
                        try:
                            records = self._convert(found, fmt)
                        except (BatchError, OSError) as exc:
                            rows.append((topic, partition, _error(ErrorCode.CORRUPT_MESSAGE,
                                                                  f"{topic}-{partition}: stored batches at offset "
                                                                  f"{offset} do not convert to {fmt}: {exc}"),
                                         hw, start, None))
                            error = True
                            continue
            rows.append((topic, partition, None, hw, start, records))
        return rows, error or taken >= min_bytes

    def at_log_end(self, parts) -> bool:
        """Whether every `(topic, partition, offset, _)` of `parts` is at its partition's high
        watermark: `read` would find no records and no error there, so a fetch with `min_bytes`
        of at least 1 may park without reading (a streamed fetch parked again after its answer)."""
        get_log = self.topics.get_log
        for topic, partition, offset, _ in parts:
            try:
                if get_log(topic, partition).high_watermark != offset:
                    return False
            except BrokerError:
                return False
        return True

    def _convert(self, found, fmt: str):
        data = found.read()
        converted = convert(data, fmt)
        if len(converted) == len(data) and converted == data:
            return found     # nothing of the other format in this range: keep the slice (sendfile)
        self.conversions += 1
        return converted

    def park(self, parts, max_bytes: int, min_bytes: int, max_wait_ms: int, on_ready,
             fmt: str = MINILOG) -> ParkedFetch:
        """The long poll: park on every partition of `parts`; `on_ready(rows)` (rows of `read`)
        runs once appends bring `min_bytes` -- synchronously, inside the `produce` whose append
        did it -- or at `max_wait_ms` with what there is. `.cancel()` on the result unparks it."""
        self.fetch_waits += 1
        keys = {(parts[0][0], parts[0][1])} if len(parts) == 1 else {(t, p) for t, p, _, _ in parts}
        return ParkedFetch(self.waiters, self.read, (parts, max_bytes, min_bytes, fmt), keys, max_wait_ms / 1000,
                           on_ready)

    async def wait_for_records(self, parts, max_bytes: int, min_bytes: int, max_wait_ms: int,
                               fmt: str = MINILOG) -> list:
        """`park` as an awaitable of the rows (cancelling it unparks the fetch)."""
        woken = asyncio.get_running_loop().create_future()
        parked = self.park(parts, max_bytes, min_bytes, max_wait_ms,
                           lambda rows: woken.done() or woken.set_result(rows), fmt)
        try:
            return await woken
        finally:
            parked.cancel()

    # ---- offsets -----------------------------------------------------------------------
    def list_offsets(self, items, timestamps: bool = False) -> list:
        """Rows `[topic, partition, offset, error]` for each `(topic, partition, timestamp)`.

        Timestamp -2 is the log start offset, -1 the log end offset, else the first offset whose
        record's timestamp is at or after it (-1 when none is). With `timestamps`, each row has a
        fifth field, that record's timestamp (-1 for the log start and end, as in Kafka)."""
        if timestamps:
            return self._list_offsets_and_timestamps(items)
        return [row[:4] for row in self._list_offsets_and_timestamps(items)]

    def _list_offsets_and_timestamps(self, items) -> list:
        results = []
        for topic, partition, ts in items:
            try:
                plog = self.topics.get_log(topic, partition)
            except BrokerError as exc:
                results.append([topic, partition, -1, [exc.code, exc.message], -1])
                continue
            if ts == EARLIEST_TIMESTAMP:
                offset = plog.log_start_offset
            elif ts == LATEST_TIMESTAMP:
                offset = plog.log_end_offset
            elif ts < 0:
                results.append([topic, partition, -1, _error(ErrorCode.BAD_REQUEST,
                                                             f"timestamp {ts}: use -2, -1 or ms since the epoch"), -1])
                continue
            else:
                offset, found_ts = plog.record_for_timestamp(ts) or (-1, -1)
                results.append([topic, partition, offset, None, found_ts])
                continue
            results.append([topic, partition, offset, None, -1])
        return results

    # ---- tracing (`minilog trace`) ----------------------------------------------------------
    def set_tracing(self, tracer, on: bool) -> None:
        if on:
            self.tracers.append(tracer)
            self._group_states = self._snapshot_groups()
        elif tracer in self.tracers:
            self.tracers.remove(tracer)

    def _trace(self, event: dict) -> None:
        for tracer in list(self.tracers):
            tracer(event)

    def _trace_append(self, topic, partition, plog, info, size, before) -> None:
        self._trace({"event": "append", "topic": topic, "partition": partition, "base_offset": info.base_offset,
                     "last_offset": info.last_offset, "bytes": size})
        seg = plog.active_segment
        if seg.base_offset != before[0]:
            self._trace({"event": "segment_roll", "topic": topic, "partition": partition,
                         "sealed_base_offset": before[0], "new_base_offset": seg.base_offset,
                         "segments": len(plog.segments)})
            before = (seg.base_offset, 0)
        index = seg.index
        if index is not None and index.entries > before[1]:
            rel, position = index.entry(index.entries - 1)
            self._trace({"event": "index_entry", "topic": topic, "partition": partition,
                         "segment": seg.base_offset, "offset": seg.base_offset + rel, "position": position,
                         "entries": index.entries})

    def _snapshot_groups(self) -> dict:
        return {g.group_id: (g.state, g.generation_id, len(g.members)) for g in self.groups.groups.values()}

    def trace_groups(self) -> None:
        """Report every group whose state, generation or member count changed since the last look."""
        now = self._snapshot_groups()
        before = getattr(self, "_group_states", {})
        for group_id, (state, generation, members) in now.items():
            old = before.get(group_id)
            if old != (state, generation, members):
                self._trace({"event": "group", "group": group_id, "state": state, "previous_state": old[0] if old else None,
                             "generation_id": generation, "members": members})
        self._group_states = now

    # ---- consumer groups ---------------------------------------------------------------
    def join_group(self, group_id: str, member_id: str, client: str, session_timeout_ms: int,
                   rebalance_timeout_ms: int, protocol_type: str, protocols: list,
                   fmt: str = MINILOG) -> asyncio.Future:
        """Join; a future of {generation_id, protocol, leader_id, member_id, members} (see group_coordinator).

        `protocols` is [(assignor name, metadata bytes)], as Kafka's JoinGroup carries them; `fmt`
        says which front door the member came through (MINILOG or KAFKA). A group may mix both:
        with protocol type "consumer" the leader gets every member's metadata, and each member
        its assignment, in its own client's layout (minilog/consumer_protocol.py)."""
        return self.groups.join(group_id, member_id, client, session_timeout_ms, rebalance_timeout_ms,
                                protocol_type, protocols, fmt)

    def sync_group(self, group_id: str, generation_id: int, member_id: str, assignments: list) -> asyncio.Future:
        """Sync; a future of {assignment}. The leader's `assignments` are [(member_id, bytes)]."""
        return self.groups.sync(group_id, generation_id, member_id, assignments)

    def heartbeat(self, group_id: str, generation_id: int, member_id: str) -> None:
        self.groups.heartbeat(group_id, generation_id, member_id)

    def leave_group(self, group_id: str, member_id: str) -> None:
        self.groups.leave(group_id, member_id)

    def commit_offsets(self, group_id: str, generation_id: int, member_id: str, offsets):
        """Commit `(topic, partition, offset, metadata)`s; rows `[topic, partition, error]`.

        Raises BrokerError when the member or generation may not commit. When anything was
        stored the answer is an awaitable of the rows, done once the commit is on disk."""
        self.groups.check_commit(group_id, generation_id, member_id)
        results, good = [], []
        for topic, partition, offset, metadata in offsets:
            if metadata is None:
                metadata = ""
            if offset < 0 or not isinstance(metadata, str):
                results.append([topic, partition, _error(ErrorCode.BAD_REQUEST,
                                                         f"{topic}-{partition}: offset must be >= 0 and metadata "
                                                         f"a string")])
                continue
            if not 0 <= partition < self.topics.partition_count(topic):
                # As Kafka's UNKNOWN_TOPIC_OR_PARTITION: a commit for nothing would be kept forever.
                results.append([topic, partition, _error(ErrorCode.NOT_FOUND,
                                                         f"{topic}-{partition}: no such topic or partition; "
                                                         f"offsets are committed only for partitions that exist")])
                continue
            good.append((topic, partition, offset, metadata))
            results.append([topic, partition, None])
        if not good:
            return results
        try:
            flush_to = self.offsets.commit(group_id, good)
        except OSError as exc:
            raise BrokerError(ErrorCode.STORAGE_ERROR, f"could not store the commit: {exc}") from None
        return self._commit_when_durable(flush_to, results)

    async def _commit_when_durable(self, flush_to, results):
        try:
            await self.group_commit.wait_flushed(self.offsets.log, flush_to)
        except FlushFailed as exc:
            raise BrokerError(ErrorCode.STORAGE_ERROR, f"the commit was not flushed to disk: {exc}") from None
        return results

    def fetch_offsets(self, group_id: str, partitions=None) -> list:
        """Rows `[topic, partition, offset, metadata]` (offset -1: nothing committed); None: all of the group's."""
        if partitions is None:
            committed = self.offsets.group_offsets(group_id)
            return [[t, p, c.offset, c.metadata] for (t, p), c in sorted(committed.items())]
        out = []
        for topic, partition in partitions:
            c = self.offsets.fetch(group_id, topic, partition)
            out.append([topic, partition, -1, ""] if c is None else [topic, partition, c.offset, c.metadata])
        return out

    def delete_group(self, group_id: str):
        """Delete an inactive group and its committed offsets (kafka-consumer-groups --delete).

        Raises NOT_FOUND for a group the broker does not know and PRECONDITION_FAILED while it has
        members. When commits were forgotten the answer is an awaitable, done once the tombstones
        are on disk."""
        group = self.groups.describe(group_id)
        if group is None and not self.offsets.group_offsets(group_id):
            raise BrokerError(ErrorCode.NOT_FOUND, f"consumer group {group_id!r} does not exist")
        if not self.groups.delete_empty(group_id):
            raise BrokerError(ErrorCode.PRECONDITION_FAILED,
                              f"group {group_id!r} has {len(group.members)} active member(s); stop them first")
        try:
            flush_to = self.offsets.delete_group(group_id)
        except OSError as exc:
            raise BrokerError(ErrorCode.STORAGE_ERROR, f"could not delete group {group_id!r}: {exc}") from None
        if flush_to is None:
            return None
        return self._commit_when_durable(flush_to, None)

    def list_groups(self) -> list[tuple[str, str]]:
        """(group_id, state) of every group with members or committed offsets, sorted."""
        states = dict(self.groups.list_groups())
        for group_id in self.offsets.groups():
            states.setdefault(group_id, "Empty")
        return sorted(states.items())

    def delete_groups(self, group_ids) -> list:
        """DeleteGroups: rows `[group_id, error]`; an awaitable of them when commits were deleted
        (answered once the tombstones are on disk). A group with members is NON_EMPTY_GROUP, one
        with neither members nor commits NOT_FOUND."""
        rows, flush_to = [], None
        for group_id in group_ids:
            group = self.groups.describe(group_id)
            known = (group is not None and group.state != "Dead") or bool(self.offsets.group_offsets(group_id))
            try:
                if not known:
                    raise BrokerError(ErrorCode.NOT_FOUND, f"consumer group {group_id!r} does not exist")
                self.groups.delete(group_id)
                end = self.offsets.delete_group(group_id)
            except BrokerError as exc:
                rows.append([group_id, [exc.code, exc.message]])
                continue
            except OSError as exc:
                rows.append([group_id, _error(ErrorCode.STORAGE_ERROR, f"could not delete the commits: {exc}")])
                continue
            flush_to = end if end is not None else flush_to
            rows.append([group_id, None])
        if flush_to is None:
            return rows
        return self._commit_when_durable(flush_to, rows)

    def describe_group(self, group_id: str) -> dict:
        """The group's state, members, their assignments and lag."""
        group = self.groups.describe(group_id)
        committed = self.offsets.group_offsets(group_id)
        if group is None:
            state = "Empty" if committed else "Dead"
            return {"group_id": group_id, "state": state, "protocol_type": "", "protocol": "",
                    "generation_id": -1, "leader_id": "", "members": []}
        members = []
        for m in group.members.values():
            assignment = decode_assignment(m.assignment, m.fmt)
            partitions, total = [], 0
            for topic, parts in sorted(assignment.items()):
                for p in parts:
                    end = -1
                    plog = self._log_or_none(topic, p)
                    c = committed.get((topic, p))
                    lag = None
                    if plog is not None:
                        end = plog.log_end_offset
                        lag = end - (c.offset if c is not None else plog.log_start_offset)
                        total += max(lag, 0)
                    partitions.append([topic, p, -1 if c is None else c.offset, end, lag])
            members.append({"member_id": m.member_id, "client": m.client, "assignment": assignment,
                            "lag": total, "partitions": partitions})
        return {"group_id": group_id, "state": group.state, "protocol_type": group.protocol_type,
                "protocol": group.protocol, "generation_id": group.generation_id, "leader_id": group.leader_id,
                "members": members}



def _segment_state(plog) -> tuple[int, int]:
    """(base offset of the active segment, its index entries): what an append may change."""
    seg = plog.active_segment
    return seg.base_offset, seg.index.entries if seg.index is not None else 0


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _stamped_minilog_batches(entry: bytes) -> bytes:
    """A msgpack-door produce entry (one or more minilog batches) for a LogAppendTime topic: each
    batch checked whole (CRC and records: a damaged one must fail, not be re-signed), then
    re-packed with the broker's time on every record (`record_batch.with_log_append_time`)."""
    now = _now_ms()
    out = []
    pos = 0
    with memoryview(entry) as mv:
        while pos < len(entry):
            h = record_batch.validate(mv, pos)
            if h.magic != record_batch.MAGIC:
                raise InvalidBatchError(f"batch at position {pos}: magic {h.magic} in a minilog produce")
            record_batch.validate_records(mv, pos, h)
            out.append(record_batch.with_log_append_time(bytes(mv[pos:pos + h.size]), now))
            pos += h.size
    return b"".join(out)
