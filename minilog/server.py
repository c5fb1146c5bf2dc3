"""The minilog server: the wire front end of the log broker.

It turns the ops of docs/PROTOCOL.md section 9 into calls on the parts that do the work, and
holds none of their logic itself:

- topics and their settings: `minilog/topics.py` over the storage engine (`minilog.storage`);
- the produce path: `op_produce` here (per batch: checksum, base offset, append), durable
  acknowledgements (`acks=-1`) through `minilog/group_commit.py`;
- the fetch path: `_fetch` here, long polls parked in `minilog/append_waiters.py`, the reply
  written around file slices by `minilog/fetch_response.py` (os.sendfile);
- consumer groups: `minilog/group_coordinator.py`; committed offsets: `minilog/offsets_store.py`.

docs/minilog.md walks through each path.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import tempfile

import msgpack

from clients.protocol.errors import BrokerError, ErrorCode
from clients.record_batch import CorruptBatchError, InvalidBatchError
from serverbase import BrokerServer
from serverbase.args import optional, required
from serverbase.server import DEFERRED, op

from .append_waiters import AppendWaiters
from .fetch_response import PARTITION_OVERHEAD, FetchResponse
from .group_commit import FlushFailed, GroupCommit
from .group_coordinator import GroupCoordinator
from .offsets_store import DEFAULT_OFFSETS_SEGMENT_BYTES, OffsetsStore
from .storage import LogClosedError, LogConfig, LogManager, OffsetOutOfRangeError, RecordTooLargeError
from .topics import INTERNAL_TOPICS, Topics

log = logging.getLogger("minilog.server")

DEFAULT_PORT = 9093
DEFAULT_DATA_DIR = "./data/minilog"
DEFAULT_FETCH_MAX_BYTES = 50 * 1024 * 1024        # Kafka's fetch.max.bytes
DEFAULT_PARTITION_MAX_BYTES = 1024 * 1024         # Kafka's max.partition.fetch.bytes
GROUP_TICK_S = 0.05
STORAGE_TICK_S = 1.0
_LATEST, _EARLIEST = -1, -2


def _error(code: str, message: str) -> list:
    return [code, message]


def _append_error(exc: Exception, topic: str, partition: int) -> list:
    """The wire error for a failed append of a produce request."""
    where = f"{topic}-{partition}"
    if isinstance(exc, BrokerError):
        return [exc.code, exc.message]
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


class MinilogServer(BrokerServer):
    """minilog: a log-based stream in the spirit of Kafka."""

    name = "minilog"
    features = ("fetch-sendfile", "group-commit")
    tls_default_ports = {"": 9094, "kafka": 9095}   # TLS twins of the doors (serverbase/tls.py)

    def __init__(self, *args, num_partitions: int = 1, auto_create_topics: bool = True,
                 log_config: dict | None = None, fetch_sendfile: bool = True,
                 group_initial_rebalance_delay_ms: int = 0,
                 offsets_topic_segment_bytes: int = DEFAULT_OFFSETS_SEGMENT_BYTES, **kwargs):
        super().__init__(*args, **kwargs)
        self.default_partitions = num_partitions
        self.auto_create_topics = auto_create_topics
        # Server-wide topic defaults under Kafka's topic-config names; validated now, not at open.
        self.default_log_config = LogConfig.from_dict(log_config or {})
        self.fetch_sendfile = fetch_sendfile
        self.logs: LogManager | None = None
        self.topics: Topics | None = None
        self.offsets: OffsetsStore | None = None
        self.groups = GroupCoordinator(group_initial_rebalance_delay_ms)
        self.offsets_topic_segment_bytes = offsets_topic_segment_bytes
        self.waiters = AppendWaiters()
        self.group_commit: GroupCommit | None = None
        self._fsync_executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._current_rid = 0
        self.sendfile_bytes = 0   # record bytes fetched with os.sendfile (server_info)

    # ---- command line ------------------------------------------------------------------
    @classmethod
    def add_arguments(cls, parser) -> None:
        g = parser.add_argument_group("minilog topic defaults (Kafka broker names)")
        g.add_argument("--num-partitions", type=int, default=1,
                       help="partitions of a topic created without a count, or auto-created (default 1)")
        g.add_argument("--auto-create-topics", action="store_true", default=True,
                       help="create a topic on its first produce (default on)")
        g.add_argument("--no-auto-create-topics", dest="auto_create_topics", action="store_false",
                       help="refuse produce to unknown topics with NOT_FOUND")
        g.add_argument("--log-segment-bytes", type=int, help="segment.bytes default (1 GiB)")
        g.add_argument("--log-segment-ms", type=int, help="segment.ms default (7 days)")
        g.add_argument("--log-retention-ms", type=int, help="retention.ms default (7 days; -1 keeps forever)")
        g.add_argument("--log-retention-bytes", type=int, help="retention.bytes default (-1: no limit)")
        g.add_argument("--log-flush-interval-messages", type=int, help="flush.messages default (-1: never)")
        g.add_argument("--log-flush-interval-ms", type=int, help="flush.ms default (-1: never)")
        g.add_argument("--message-max-bytes", type=int, help="max.message.bytes default (1 MiB + 12)")
        g.add_argument("--group-initial-rebalance-delay-ms", type=int, default=0,
                       help="how long the first rebalance of an empty group waits for more members "
                            "(Kafka's group.initial.rebalance.delay.ms; default 0, Kafka's is 3000)")
        g.add_argument("--offsets-topic-segment-bytes", type=int, default=DEFAULT_OFFSETS_SEGMENT_BYTES,
                       help="segment.bytes of __consumer_offsets (Kafka's offsets.topic.segment.bytes; "
                            "only sealed segments are compacted; default 64 MiB)")
        g.add_argument("--no-fetch-sendfile", dest="fetch_sendfile", action="store_false", default=True,
                       help="write fetched records with pread + write instead of os.sendfile")

    @classmethod
    def from_args(cls, args):
        from serverbase.cli import parse_credentials
        names = {"log_segment_bytes": "segment.bytes", "log_segment_ms": "segment.ms",
                 "log_retention_ms": "retention.ms", "log_retention_bytes": "retention.bytes",
                 "log_flush_interval_messages": "flush.messages", "log_flush_interval_ms": "flush.ms",
                 "message_max_bytes": "max.message.bytes"}
        log_config = {key: getattr(args, flag) for flag, key in names.items() if getattr(args, flag) is not None}
        return cls(host=args.host, port=args.port, data_dir=args.data_dir, max_frame=args.max_frame,
                   credentials=parse_credentials(args.user), num_partitions=args.num_partitions,
                   auto_create_topics=args.auto_create_topics, log_config=log_config,
                   fetch_sendfile=args.fetch_sendfile,
                   group_initial_rebalance_delay_ms=args.group_initial_rebalance_delay_ms,
                   offsets_topic_segment_bytes=args.offsets_topic_segment_bytes)

    # ---- lifecycle ---------------------------------------------------------------------
    async def open(self):
        if not self.data_dir:
            self.data_dir = tempfile.mkdtemp(prefix="minilog-")
        self.logs = LogManager(self.data_dir, self.default_log_config)
        self.offsets = OffsetsStore(self.logs, self.offsets_topic_segment_bytes)
        self.offsets.load()
        self.topics = Topics(self.logs, self.default_partitions, self.auto_create_topics)  # sees the offsets topic
        # One thread: fsync rounds run one after another anyway, and never queue behind other work.
        self._fsync_executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="minilog-fsync")
        self.group_commit = GroupCommit(asyncio.get_running_loop(), self._fsync_executor)
        # flush.messages / flush.ms flushes go through the same fsync thread: never on the loop.
        self.logs.set_flush_requester(self.group_commit.request_flush)
        self.every(GROUP_TICK_S, self.groups.tick)
        self.every(STORAGE_TICK_S, self._storage_tick)

    def _storage_tick(self) -> None:
        """Retention, flush.ms, segment.ms and checkpoints (the storage engine decides what is due)."""
        self.logs.tick()

    async def close(self):
        if self._fsync_executor is not None:
            self._fsync_executor.shutdown(wait=True)
        if self.logs is not None:
            self.logs.close()
            self.logs = None

    def extra_info(self) -> dict:
        if self.topics is None:
            return {}
        return {"topics": len(self.topics.names()), "groups": len(self.groups.list_groups()),
                "fsync_rounds": self.group_commit.rounds, "durable_acks": self.group_commit.requests,
                "sendfile_bytes": self.sendfile_bytes}

    def dispatch(self, conn, req) -> None:
        # Ops that write their own reply frame (fetch) need the request id.
        self._current_rid = req.id
        super().dispatch(conn, req)

    # ---- topics ------------------------------------------------------------------------
    @op("create_topics")
    def op_create_topics(self, conn, args):
        specs = required(args, "topics", list)
        validate_only = optional(args, "validate_only", bool, False)
        results = {}
        for spec in specs:
            if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
                raise BrokerError(ErrorCode.BAD_REQUEST, "each of 'topics' must be a map {name, num_partitions, config}")
            name = spec["name"]
            try:
                if validate_only:
                    self.topics.check_create(name, spec.get("num_partitions"), spec.get("config"))
                else:
                    self.topics.create(name, spec.get("num_partitions"), spec.get("config"))
                results[name] = None
            except BrokerError as exc:
                results[name] = [exc.code, exc.message]
        return {"results": results}

    @op("delete_topics")
    def op_delete_topics(self, conn, args):
        names = required(args, "topics", list)
        results = {}
        for name in names:
            try:
                self.topics.delete(name)
                results[name] = None
            except BrokerError as exc:
                results[str(name)] = [exc.code, exc.message]
                continue
            self.waiters.notify_topic(name)
            try:
                self.offsets.delete_topic(name)  # durable with the next flush; a lost tombstone is harmless
            except OSError as exc:
                log.error("could not forget the commits of deleted topic %s: %s", name, exc)
        return {"results": results}

    @op("metadata")
    def op_metadata(self, conn, args):
        names = optional(args, "topics", list)
        auto_create = optional(args, "allow_auto_create", bool, False)
        if names is None:
            names = self.topics.names()
        out = {}
        for name in names:
            if not isinstance(name, str):
                raise BrokerError(ErrorCode.BAD_REQUEST, f"topic names must be strings, got {name!r}")
            if not self.topics.exists(name) and auto_create and self.auto_create_topics:
                try:
                    self.topics.create(name, None, {})
                except BrokerError as exc:
                    out[name] = {"partitions": [], "config": {}, "error": [exc.code, exc.message]}
                    continue
            if self.topics.exists(name):
                out[name] = self.topics.describe(name)
            else:
                out[name] = {"partitions": [], "config": {},
                             "error": _error(ErrorCode.NOT_FOUND, f"topic {name!r} does not exist")}
        return {"topics": out}

    # ---- produce -----------------------------------------------------------------------
    @op("produce")
    def op_produce(self, conn, args):
        acks = args.get("acks", 1)
        if acks not in (0, 1, -1) or isinstance(acks, bool):
            raise BrokerError(ErrorCode.BAD_REQUEST, f"acks must be 0, 1 or -1 (all), got {acks!r}")
        data = args.get("data")
        if type(data) is not list:
            raise BrokerError(ErrorCode.BAD_REQUEST, "missing required argument 'data' (array of [topic, partition, batch])")
        rid = self._current_rid
        results = []
        durable = []
        get_log = self.topics.get_log
        notify = self.waiters.notify
        for item in data:
            try:
                topic, partition, batch = item
            except (TypeError, ValueError):
                results.append([None, None, -1, _error(ErrorCode.BAD_REQUEST,
                                                       f"each of 'data' must be [topic, partition, batch], got {item!r:.80}")])
                continue
            try:
                if type(batch) is not bytes:
                    raise BrokerError(ErrorCode.BAD_REQUEST, f"{topic}-{partition}: batch must be bin")
                if type(topic) is not str or type(partition) is not int:
                    raise BrokerError(ErrorCode.BAD_REQUEST, f"topic must be a string and partition an integer, "
                                                             f"got {topic!r}, {partition!r}")
                if topic in INTERNAL_TOPICS:
                    raise BrokerError(ErrorCode.NOT_AUTHORIZED, f"{topic!r} is internal: only the server writes it")
                plog = get_log(topic, partition, True)
                # A failed write raises SegmentWriteError (an OSError) after the storage
                # engine cut the torn bytes off: nothing of this entry was stored.
                info = plog.append(batch)
            except Exception as exc:
                results.append([topic, partition, -1, _append_error(exc, topic, partition)])
                continue
            notify((topic, partition))
            results.append([topic, partition, info.base_offset, None])
            if acks == -1:
                durable.append((len(results) - 1, plog, info.last_offset + 1))
        if acks == 0 and rid == 0:
            for topic, partition, _, error in results:
                if error is not None:
                    conn.send_error(0, error[0], error[1])
            return None
        if durable:
            return self._reply_when_durable(durable, results)
        return {"results": results}

    async def _reply_when_durable(self, durable, results):
        wait = self.group_commit.wait_flushed
        outcome = await asyncio.gather(*[wait(plog, offset) for _, plog, offset in durable], return_exceptions=True)
        for (row, _, _), failure in zip(durable, outcome):
            if isinstance(failure, FlushFailed):
                topic, partition = results[row][0], results[row][1]
                results[row][2:] = [-1, _error(ErrorCode.STORAGE_ERROR,
                                               f"{topic}-{partition}: appended but not flushed to disk: {failure}")]
            elif isinstance(failure, BaseException):
                raise failure
        return {"results": results}

    def _log_or_none(self, topic, partition):
        try:
            return self.logs.get_log(topic, partition)
        except KeyError:
            return None

    # ---- fetch -------------------------------------------------------------------------
    @op("fetch")
    def op_fetch(self, conn, args):
        rid = self._current_rid
        max_wait_ms = optional(args, "max_wait_ms", int, 0)
        min_bytes = optional(args, "min_bytes", int, 1)
        max_bytes = optional(args, "max_bytes", int, DEFAULT_FETCH_MAX_BYTES)
        raw = required(args, "partitions", list)
        parts = []
        for item in raw:
            if not isinstance(item, (list, tuple)) or len(item) not in (3, 4):
                raise BrokerError(ErrorCode.BAD_REQUEST,
                                  "each of 'partitions' must be [topic, partition, offset, partition_max_bytes]")
            topic, partition, offset = item[0], item[1], item[2]
            pmax = item[3] if len(item) == 4 and item[3] is not None else DEFAULT_PARTITION_MAX_BYTES
            if (type(topic) is not str or type(partition) is not int or type(offset) is not int
                    or type(pmax) is not int or pmax < 1):
                raise BrokerError(ErrorCode.BAD_REQUEST,
                                  f"bad fetch partition {item!r:.100}: want [str, int, int, int >= 1]")
            parts.append((topic, partition, offset, pmax))
        if max_bytes < 1:
            raise BrokerError(ErrorCode.BAD_REQUEST, f"max_bytes must be >= 1, got {max_bytes}")
        # The whole reply must fit in one frame the client accepts.
        max_bytes = min(max_bytes, conn.send_limit - 64 - PARTITION_OVERHEAD * len(parts))
        resp, done = self._read_fetch(parts, max_bytes, min_bytes)
        if done or max_wait_ms <= 0:
            self.sendfile_bytes += resp.send(conn, rid, self.fetch_sendfile)
        else:
            self._spawn(conn, rid, self._fetch_waiting(conn, rid, parts, max_bytes, min_bytes, max_wait_ms))
        return DEFERRED

    def _read_fetch(self, parts, max_bytes: int, min_bytes: int) -> tuple[FetchResponse, bool]:
        """Read every partition; returns the reply and whether it may go now (enough bytes, or an error)."""
        resp = FetchResponse()
        budget = max_bytes
        error = False
        for topic, partition, offset, pmax in parts:
            try:
                plog = self.topics.get_log(topic, partition)
            except BrokerError as exc:
                resp.add(topic, partition, [exc.code, exc.message], -1, -1, None)
                error = True
                continue
            hw, start = plog.high_watermark, plog.log_start_offset
            if offset < start or offset > hw:
                resp.add(topic, partition,
                         _error(ErrorCode.OFFSET_OUT_OF_RANGE,
                                f"{topic}-{partition}: offset {offset} is outside [{start}, {hw}] "
                                f"(log start offset, log end offset)"), hw, start, None)
                error = True
                continue
            records = None
            if offset < hw and budget > 0:
                try:
                    found = plog.read(offset, min(pmax, budget))
                except (OffsetOutOfRangeError, LogClosedError, OSError) as exc:
                    resp.add(topic, partition, _error(ErrorCode.STORAGE_ERROR, f"{topic}-{partition}: {exc}"),
                             hw, start, None)
                    error = True
                    continue
                # Only the reply's first batch may go over the limits (so a large batch is never stuck).
                if found is not None and (resp.records_bytes == 0 or found.length <= budget):
                    records = found
                    budget -= found.length
            resp.add(topic, partition, None, hw, start, records)
        return resp, error or resp.records_bytes >= min_bytes

    async def _fetch_waiting(self, conn, rid, parts, max_bytes, min_bytes, max_wait_ms):
        """The long poll: park on every fetched partition until an append wakes it, or time runs out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_wait_ms / 1000
        keys = {(t, p) for t, p, _, _ in parts}
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            woken = loop.create_future()
            self.waiters.register(keys, woken)
            timer = loop.call_later(remaining, lambda f=woken: f.done() or f.set_result(None))
            try:
                key = await woken
            finally:
                timer.cancel()
                self.waiters.unregister(keys, woken)
            if key is None:
                break
            resp, done = self._read_fetch(parts, max_bytes, min_bytes)
            if done:
                self.sendfile_bytes += resp.send(conn, rid, self.fetch_sendfile)
                return
        resp, _ = self._read_fetch(parts, max_bytes, min_bytes)
        self.sendfile_bytes += resp.send(conn, rid, self.fetch_sendfile)

    @staticmethod
    def _spawn(conn, rid, coro) -> None:
        """Run `coro` as a task the connection owns (cancelled if the client goes away)."""
        async def guarded():
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not leave the client waiting forever
                log.exception("fetch failed on connection %s", conn.id)
                conn.send_error(rid, ErrorCode.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")
        task = asyncio.get_running_loop().create_task(guarded())
        conn._tasks.add(task)
        task.add_done_callback(conn._tasks.discard)

    # ---- offsets -----------------------------------------------------------------------
    @op("list_offsets")
    def op_list_offsets(self, conn, args):
        results = []
        for item in required(args, "partitions", list):
            if (not isinstance(item, (list, tuple)) or len(item) != 3 or type(item[0]) is not str
                    or type(item[1]) is not int or type(item[2]) is not int):
                raise BrokerError(ErrorCode.BAD_REQUEST, "each of 'partitions' must be [topic, partition, timestamp]")
            topic, partition, ts = item
            try:
                plog = self.topics.get_log(topic, partition)
            except BrokerError as exc:
                results.append([topic, partition, -1, [exc.code, exc.message]])
                continue
            if ts == _EARLIEST:
                offset = plog.log_start_offset
            elif ts == _LATEST:
                offset = plog.log_end_offset
            elif ts < 0:
                results.append([topic, partition, -1, _error(ErrorCode.BAD_REQUEST,
                                                             f"timestamp {ts}: use -2, -1 or ms since the epoch")])
                continue
            else:
                found = plog.offset_for_timestamp(ts)
                offset = -1 if found is None else found
            results.append([topic, partition, offset, None])
        return {"results": results}

    # ---- consumer groups ---------------------------------------------------------------
    @op("join_group")
    def op_join_group(self, conn, args):
        protocols = required(args, "protocols", list)
        for p in protocols:
            if not isinstance(p, (list, tuple)) or len(p) != 2 or type(p[0]) is not str or type(p[1]) is not bytes:
                raise BrokerError(ErrorCode.BAD_REQUEST, "each of 'protocols' must be [assignor name, metadata bin]")
        session = optional(args, "session_timeout_ms", int, 45_000)
        fut = self.groups.join(
            required(args, "group_id", str), optional(args, "member_id", str, ""),
            optional(args, "client", str, conn.client_name or ""), session,
            optional(args, "rebalance_timeout_ms", int, session), optional(args, "protocol_type", str, "consumer"),
            [(name, meta) for name, meta in protocols])
        return self._await(fut)

    @op("sync_group")
    def op_sync_group(self, conn, args):
        fut = self.groups.sync(required(args, "group_id", str), required(args, "generation_id", int),
                               required(args, "member_id", str), optional(args, "assignments", list, []))
        return self._await(fut)

    @staticmethod
    async def _await(fut):
        # shield: a client that hangs up must not cancel the coordinator's future for the others.
        return await asyncio.shield(fut)

    @op("heartbeat")
    def op_heartbeat(self, conn, args):
        self.groups.heartbeat(required(args, "group_id", str), required(args, "generation_id", int),
                              required(args, "member_id", str))
        return {}

    @op("leave_group")
    def op_leave_group(self, conn, args):
        self.groups.leave(required(args, "group_id", str), required(args, "member_id", str))
        return {}

    @op("offset_commit")
    def op_offset_commit(self, conn, args):
        group_id = required(args, "group_id", str)
        generation_id = optional(args, "generation_id", int, -1)
        member_id = optional(args, "member_id", str, "")
        offsets = required(args, "offsets", list)
        self.groups.check_commit(group_id, generation_id, member_id)
        results, good = [], []
        for item in offsets:
            if (not isinstance(item, (list, tuple)) or len(item) not in (3, 4) or type(item[0]) is not str
                    or type(item[1]) is not int or type(item[2]) is not int):
                raise BrokerError(ErrorCode.BAD_REQUEST,
                                  "each of 'offsets' must be [topic, partition, offset, metadata]")
            topic, partition, offset = item[0], item[1], item[2]
            metadata = item[3] if len(item) == 4 and item[3] is not None else ""
            if offset < 0 or not isinstance(metadata, str):
                results.append([topic, partition, _error(ErrorCode.BAD_REQUEST,
                                                         f"{topic}-{partition}: offset must be >= 0 and metadata "
                                                         f"a string")])
                continue
            good.append((topic, partition, offset, metadata))
            results.append([topic, partition, None])
        if not good:
            return {"results": results}
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
        return {"results": results}

    @op("offset_fetch")
    def op_offset_fetch(self, conn, args):
        group_id = required(args, "group_id", str)
        wanted = optional(args, "partitions", list)
        if wanted is None:
            committed = self.offsets.group_offsets(group_id)
            return {"offsets": [[t, p, c.offset, c.metadata] for (t, p), c in sorted(committed.items())]}
        out = []
        for item in wanted:
            if not isinstance(item, (list, tuple)) or len(item) != 2:
                raise BrokerError(ErrorCode.BAD_REQUEST, "each of 'partitions' must be [topic, partition]")
            c = self.offsets.fetch(group_id, item[0], item[1])
            out.append([item[0], item[1], -1, ""] if c is None else [item[0], item[1], c.offset, c.metadata])
        return {"offsets": out}

    @op("list_groups")
    def op_list_groups(self, conn, args):
        states = dict(self.groups.list_groups())
        for group_id in self.offsets.groups():
            states.setdefault(group_id, "Empty")
        return {"groups": [[g, s] for g, s in sorted(states.items())]}

    @op("describe_groups")
    def op_describe_groups(self, conn, args):
        out = []
        for group_id in required(args, "groups", list):
            if not isinstance(group_id, str):
                raise BrokerError(ErrorCode.BAD_REQUEST, "'groups' must be an array of group ids")
            out.append(self._describe_group(group_id))
        return {"groups": out}

    def _describe_group(self, group_id: str) -> dict:
        group = self.groups.describe(group_id)
        committed = self.offsets.group_offsets(group_id)
        if group is None:
            state = "Empty" if committed else "Dead"
            return {"group_id": group_id, "state": state, "protocol_type": "", "protocol": "",
                    "generation_id": -1, "leader_id": "", "members": []}
        members = []
        for m in group.members.values():
            assignment = self._decode_assignment(m.assignment)
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

    @staticmethod
    def _decode_assignment(raw: bytes) -> dict:
        """The documented assignment layout, msgpack {topic: [partitions]}; anything else shows as {}."""
        if not raw:
            return {}
        try:
            value = msgpack.unpackb(raw)
        except Exception:
            return {}
        if not isinstance(value, dict):
            return {}
        return {t: [p for p in ps if isinstance(p, int)] for t, ps in value.items()
                if isinstance(t, str) and isinstance(ps, list)}
