"""The minilog server: the msgpack front door of the log broker.

It turns the ops of docs/PROTOCOL.md section 9 into calls on the socket-free core,
`minilog.broker.LogBroker`, and the core's answers into replies. It holds no broker state and
no broker logic: it checks each argument's type and shape, calls the core, and writes the
reply. The one thing it does itself is writing a fetch reply around the core's file slices
(`minilog/fetch_response.py`, os.sendfile), since that is about the socket.

docs/minilog.md walks through each path.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import tempfile

from clients.protocol.errors import BrokerError, ErrorCode
from serverbase import BrokerServer
from serverbase.args import optional, optional_int, required
from serverbase.auth import NotAuthorized
from serverbase.server import DEFERRED, op

from .acl import Acl, GuardedLog
from .batch_formats import MINILOG
from .broker import LogBroker
from .kafka import listener as kafka_listener
from .fetch_response import (PARTITION_OVERHEAD, SENDFILE_MIN_BYTES, FetchResponse, one_row_frame, records_size,
                             send_rows, streamed_frame, streamed_frame_head, write_frame)
from .fetch_sessions import MAX_ANSWERS, FetchSessions, SessionFetch
from .group_coordinator import DEFAULT_GROUP_MAX_SIZE
from .offsets_store import DEFAULT_OFFSETS_SEGMENT_BYTES
from .storage import LogConfig

log = logging.getLogger("minilog.server")

# Topics one create_topics request may create (Kafka sets no limit; the request is bounded
# by the frame size anyway, this bounds its time).
MAX_TOPICS_PER_CREATE = 1000

# conn.state key: fetches waiting for the connection's transport to drain (_defer_fetch).
_PENDING_FETCHES = "minilog.pending_fetches"
# conn.state key: the connection's parked fetches (_park_fetch), unparked when it closes.
_PARKED_FETCHES = "minilog.parked_fetches"
# conn.state key: the connection's fetch sessions (minilog/fetch_sessions.py).
_FETCH_SESSIONS = "minilog.fetch_sessions"

# Whether a streamed fetch answered at the log end by its own ParkedFetch is parked again
# inside its answer (`_send_fetch`, `ParkedFetch.park_again`), or goes back through the loop
# (`call_soon`; `_start_session_fetch` parks the held ParkedFetch again when nothing came
# meanwhile, else reads) as every session fetch does. On, the server's path
# is 15-25 % shorter in `bench.minilog_server_path`'s streamed step, but the latency bench was
# slower with it when the machine was in its slower state (p50 213-256 against 180-210 µs in
# four interleaved pairs; producer and consumer CPU up too) and no faster in its faster one
# (docs/clients-minilog.md, "Every hop a little shorter"). Off until it is understood why.
# The wire is the same either way.
REPARK_INSIDE_ANSWER = False

DEFAULT_PORT = 9093
DEFAULT_DATA_DIR = "./data/minilog"
DEFAULT_FETCH_MAX_BYTES = 50 * 1024 * 1024        # Kafka's fetch.max.bytes
DEFAULT_PARTITION_MAX_BYTES = 1024 * 1024         # Kafka's max.partition.fetch.bytes
GROUP_TICK_S = 0.05
STORAGE_TICK_S = 1.0
# Page cache kept behind each partition's log end (PartitionLog.drop_behind_bytes).
DEFAULT_DROP_BEHIND_BYTES = 64 * 1024 * 1024


def _mib_or_off(text: str) -> int | None:
    """`--drop-behind-mib`: a whole number of MiB (at least 1), or `off`."""
    if text.strip().lower() == "off":
        return None
    try:
        mib = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of MiB or 'off', got {text!r}") from None
    if not 1 <= mib <= 1 << 20:
        raise argparse.ArgumentTypeError(f"expected 1 to {1 << 20} MiB or 'off', got {mib}")
    return mib << 20


class MinilogServer(BrokerServer):
    """minilog: a log-based stream in the spirit of Kafka."""

    name = "minilog"
    features = ("fetch-sendfile", "group-commit", "fetch-session", "fetch-answers")
    tls_default_ports = {"": 9094, "kafka": 9095}   # TLS twins of the doors (serverbase/tls.py)

    def __init__(self, *args, num_partitions: int = 1, auto_create_topics: bool = True,
                 log_config: dict | None = None, fetch_sendfile: bool = True,
                 group_initial_rebalance_delay_ms: int = 0,
                 offsets_topic_segment_bytes: int = DEFAULT_OFFSETS_SEGMENT_BYTES,
                 group_max_size: int = DEFAULT_GROUP_MAX_SIZE,
                 drop_behind_bytes: int | None = DEFAULT_DROP_BEHIND_BYTES,
                 kafka_port: int | None = None, kafka_advertised: tuple[str, int] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        # The Kafka front door (minilog/kafka/): None = off, the default in-process.
        self.kafka_port = kafka_port
        self.kafka_advertised = kafka_advertised
        # The core's settings, kept until open() knows the data directory; a bad topic default
        # fails here, at start-up, not at the first open.
        LogConfig.from_dict(log_config or {})
        self._broker_settings = dict(num_partitions=num_partitions, auto_create_topics=auto_create_topics,
                                     log_config=log_config,
                                     group_initial_rebalance_delay_ms=group_initial_rebalance_delay_ms,
                                     offsets_topic_segment_bytes=offsets_topic_segment_bytes,
                                     group_max_size=group_max_size, drop_behind_bytes=drop_behind_bytes)
        self.broker: LogBroker | None = None
        self.fetch_sendfile = fetch_sendfile
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
        g.add_argument("--group-max-size", type=int, default=DEFAULT_GROUP_MAX_SIZE,
                       help="members one consumer group may have (Kafka's group.max.size; "
                            f"default {DEFAULT_GROUP_MAX_SIZE}); a join beyond it gets PRECONDITION_FAILED")
        g.add_argument("--drop-behind-mib", type=_mib_or_off, default=DEFAULT_DROP_BEHIND_BYTES, metavar="MIB|off",
                       help="page cache kept behind each partition's log end: every MIB appended, the "
                            "partition is fsynced off the event loop and what lies further back is dropped "
                            "from the page cache, whose pages the next appends then reuse (default "
                            f"{DEFAULT_DROP_BEHIND_BYTES >> 20}; off keeps everything cached, as Kafka)")
        g.add_argument("--no-fetch-sendfile", dest="fetch_sendfile", action="store_false", default=True,
                       help="write fetched records with pread + write instead of os.sendfile")
        kafka_listener.add_arguments(parser)

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
                   offsets_topic_segment_bytes=args.offsets_topic_segment_bytes,
                   group_max_size=args.group_max_size, drop_behind_bytes=args.drop_behind_mib,
                   kafka_port=args.kafka_port, kafka_advertised=args.kafka_advertised)

    def extra_listeners(self):
        if self.kafka_port is None:
            return []
        return [kafka_listener.kafka_listener(self, self.kafka_port, self.kafka_advertised)]

    # ---- lifecycle ---------------------------------------------------------------------
    async def open(self):
        if not self.data_dir:
            self.data_dir = tempfile.mkdtemp(prefix="minilog-")
        self.broker = LogBroker(self.data_dir, **self._broker_settings)
        self.broker.open()
        self.every(GROUP_TICK_S, self.broker.tick_groups)
        self.every(STORAGE_TICK_S, self.broker.tick_storage)

    async def close(self):
        if self.broker is not None:
            self.broker.close()

    def extra_info(self) -> dict:
        if self.broker is None:
            return {}
        return dict(self.broker.info(), sendfile_bytes=self.sendfile_bytes)

    # ---- access control: Kafka's ACLs (minilog/acl.py) -------------------------------------
    def compile_permissions(self, user: str, raw):
        return Acl.from_stored(user, raw)

    def authorize(self, conn, op: str, args: dict):
        if op == "trace":   # shows every record of every topic: only for users who may do everything
            raise NotAuthorized(f"user {conn.user!r} may not trace: tracing shows every topic's records")
        return None   # each call is checked by the core's guarded view, `core(conn)`

    def core(self, conn):
        """The core as this connection's user may use it: the core itself, or its guarded view."""
        if conn.access is None:
            return self.broker
        guarded = conn.state.get("guarded_log")
        if guarded is None:
            guarded = conn.state["guarded_log"] = GuardedLog(self.broker, conn.access)
        return guarded

    def extra_metrics(self) -> list:
        from serverbase.metrics import Sample
        b = self.broker
        if b is None:
            return []
        samples = [
            Sample("produced_batches_total", "counter", "record batches appended", b.produced_batches),
            Sample("produced_records_total", "counter", "records appended", b.produced_records),
            Sample("produced_bytes_total", "counter", "bytes of record batches appended", b.produced_bytes),
            Sample("fetch_sendfile_bytes_total", "counter", "record bytes sent with os.sendfile", self.sendfile_bytes),
            Sample("fetch_waits_total", "counter", "fetches that waited (long poll) for records", b.fetch_waits),
            Sample("rebalances_total", "counter", "consumer group rebalances completed", b.groups.rebalances),
        ]
        if b.group_commit is not None:
            gc = b.group_commit
            samples += [
                Sample("fsyncs_total", "counter", "group-commit fsync rounds", gc.rounds),
                Sample("fsync_seconds_total", "counter", "time spent in group-commit fsync rounds",
                       round(gc.fsync_seconds, 6)),
                Sample("durable_acks_total", "counter", "acks=all waits answered after their fsync", gc.requests),
            ]
        if b.topics is not None:
            samples.append(Sample("topics", "gauge", "topics, internal ones included", len(b.topics.names())))
            samples.append(Sample("groups", "gauge", "consumer groups known", len(b.groups.list_groups())))
        return samples

    # ---- topics ------------------------------------------------------------------------
    @op("alter_topic_config")
    def op_alter_topic_config(self, conn, args):
        topic = required(args, "topic", str)
        set_ = optional(args, "set", dict, {})
        delete = optional(args, "delete", list, [])
        if not all(isinstance(k, str) for k in list(set_) + delete):
            raise BrokerError(ErrorCode.BAD_REQUEST, "config names in 'set' and 'delete' must be strings")
        return {"config": self.core(conn).alter_topic_config(topic, set_, delete)}

    @op("create_topics")
    def op_create_topics(self, conn, args):
        specs = required(args, "topics", list)
        validate_only = optional(args, "validate_only", bool, False)
        if len(specs) > MAX_TOPICS_PER_CREATE:
            raise BrokerError(ErrorCode.BAD_REQUEST, f"at most {MAX_TOPICS_PER_CREATE} topics per create_topics "
                                                     f"request, got {len(specs)}")
        for spec in specs:
            if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
                raise BrokerError(ErrorCode.BAD_REQUEST, "each of 'topics' must be a map {name, num_partitions, config}")
        names = [spec["name"] for spec in specs]
        if len(set(names)) != len(names):
            # The answer is a map by name: one name twice could not be answered twice.
            twice = sorted({n for n in names if names.count(n) > 1})
            raise BrokerError(ErrorCode.BAD_REQUEST, f"create_topics names {twice[0]!r} more than once")
        self.broker.topics.check_request_size([spec.get("num_partitions") for spec in specs])
        # Every name is checked and claimed now, before any later request runs; the files are
        # made on the broker's creation thread while the loop serves (LogBroker.create_topic_off_loop).
        core = self.core(conn)
        results, pending = {}, []
        for spec in specs:
            name = spec["name"]
            try:
                pending.append((name, core.create_topic_off_loop(name, spec.get("num_partitions"), spec.get("config"),
                                                                 validate_only)))
            except BrokerError as exc:
                results[name] = [exc.code, exc.message]
        if all(created.done() for _, created in pending):
            return self._created(results, pending)
        # Kafka answers CreateTopics once the topics exist, and handles one connection's requests
        # in order: a produce pipelined behind the create must find the topic. So this
        # connection's later requests wait for the answer; other connections are served meanwhile.
        conn.answer_before_later(conn.request_id, self._created(results, pending))
        return DEFERRED

    @staticmethod
    async def _created(results, pending):
        for name, created in pending:
            try:
                await asyncio.shield(created)
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
                self.core(conn).delete_topic(name)
                results[name] = None
            except BrokerError as exc:
                results[str(name)] = [exc.code, exc.message]
        return {"results": results}

    @op("metadata")
    def op_metadata(self, conn, args):
        names = optional(args, "topics", list)
        auto_create = optional(args, "allow_auto_create", bool, False)
        for name in names or ():
            if not isinstance(name, str):
                raise BrokerError(ErrorCode.BAD_REQUEST, f"topic names must be strings, got {name!r}")
        described = self.core(conn).describe_topics(names, auto_create)
        if type(described) is dict:
            return {"topics": described}
        # Topics being auto-created: answered once they exist, and this connection's later
        # requests wait for that answer, as behind create_topics.
        conn.answer_before_later(conn.request_id, self._metadata_when_created(described))
        return DEFERRED

    @staticmethod
    async def _metadata_when_created(described):
        return {"topics": await described}

    # ---- produce -----------------------------------------------------------------------
    @op("produce")
    def op_produce(self, conn, args):
        acks = args.get("acks", 1)
        if acks not in (0, 1, -1) or isinstance(acks, bool):
            raise BrokerError(ErrorCode.BAD_REQUEST, f"acks must be 0, 1 or -1 (all), got {acks!r}")
        data = args.get("data")
        if type(data) is not list:
            raise BrokerError(ErrorCode.BAD_REQUEST, "missing required argument 'data' (array of [topic, partition, batch])")
        rid = conn.request_id   # acks=0 with id 0 answers nothing but failures
        results = (self.broker if conn.access is None else self.core(conn)).produce(data, acks)
        if acks == 0 and rid == 0:
            # Fire and forget: only the failures are told, as error frames.
            for topic, partition, _, error in results:
                if error is not None:
                    conn.send_error(0, error[0], error[1])
            return None
        if type(results) is list:
            return {"results": results}
        return self._reply_when_durable(results)

    @staticmethod
    async def _reply_when_durable(rows):
        return {"results": await rows}

    # ---- fetch -------------------------------------------------------------------------
    @op("fetch")
    def op_fetch(self, conn, args):
        rid = conn.request_id   # the reply is written later, around file slices (_send_fetch)
        # optional_int's checks, its call made only when a value is not a plain int: absent
        # takes the default here, and nil, a boolean or another type go through it.
        max_wait_ms = args.get("max_wait_ms", 0)
        if max_wait_ms.__class__ is not int:
            max_wait_ms = optional_int(args, "max_wait_ms", 0)
        min_bytes = args.get("min_bytes", 1)
        if min_bytes.__class__ is not int:
            min_bytes = optional_int(args, "min_bytes", 1)
        max_bytes = args.get("max_bytes", DEFAULT_FETCH_MAX_BYTES)
        if max_bytes.__class__ is not int:
            max_bytes = optional_int(args, "max_bytes", DEFAULT_FETCH_MAX_BYTES)
        session_id = args.get("session")
        if session_id is not None and session_id.__class__ is not int:
            session_id = optional_int(args, "session")
        answers = args.get("answers", 1)
        if answers.__class__ is not int or not 1 <= answers <= MAX_ANSWERS or (answers > 1 and session_id is None):
            answers = optional_int(args, "answers", 1)
            if not 1 <= answers <= MAX_ANSWERS or (answers > 1 and session_id is None):
                raise BrokerError(ErrorCode.BAD_REQUEST, f"answers must be 1..{MAX_ANSWERS}, and more than 1 only "
                                                         f"in a fetch session, got {answers}")
        raw = args.get("partitions")
        if raw.__class__ is not list:
            raw = required(args, "partitions", list)
        parts = []
        for item in raw:
            if not isinstance(item, (list, tuple)) or len(item) not in (3, 4):
                raise BrokerError(ErrorCode.BAD_REQUEST,
                                  "each of 'partitions' must be [topic, partition, offset, partition_max_bytes]")
            topic, partition, offset = item[0], item[1], item[2]
            pmax = item[3] if len(item) == 4 and item[3] is not None else DEFAULT_PARTITION_MAX_BYTES
            if (type(topic) is not str or type(partition) is not int
                    or not (type(offset) is int or (offset is None and session_id is not None))
                    or type(pmax) is not int or pmax < 1):
                raise BrokerError(ErrorCode.BAD_REQUEST,
                                  f"bad fetch partition {item!r:.100}: want [str, int, int, int >= 1] "
                                  f"(offset nil only in a fetch session)")
            parts.append((topic, partition, offset, pmax))
        if max_bytes < 1:
            raise BrokerError(ErrorCode.BAD_REQUEST, f"max_bytes must be >= 1, got {max_bytes}")
        # The whole reply must fit in one frame the client accepts.
        max_bytes = min(max_bytes, conn.send_limit - 64 - PARTITION_OVERHEAD * len(parts))
        if session_id is not None:
            sessions = conn.state.get(_FETCH_SESSIONS)
            if sessions is None:
                sessions = conn.state[_FETCH_SESSIONS] = FetchSessions()
            session = sessions.get(session_id)
            session.add(SessionFetch(rid, parts, max_bytes, min_bytes, max_wait_ms, answers))
            self._start_session_fetch(conn, session)
            return DEFERRED
        if conn.writing_paused or conn.state.get(_PENDING_FETCHES):
            self._defer_fetch(conn, (rid, parts, max_bytes, min_bytes, max_wait_ms, None))   # as _start_fetch
        else:
            self._fetch_now(conn, rid, parts, max_bytes, min_bytes, max_wait_ms)
        return DEFERRED

    def _start_fetch(self, conn, fetch) -> None:
        pending = conn.state.get(_PENDING_FETCHES)
        if conn.writing_paused or pending:
            # The client is not reading its earlier replies: keep the request (a few hundred
            # bytes), not its reply (up to a frame), and read it when the socket drains.
            self._defer_fetch(conn, fetch)
        else:
            self._fetch_now(conn, *fetch)

    def _start_session_fetch(self, conn, session, held=None, streamed=None) -> None:
        """Start the session's next fetch, once the one before it is answered
        (minilog/fetch_sessions.py): its nil offsets continue where that answer ended.

        `held`: the ParkedFetch (`ParkedFetch.hold`) that answered the streamed fetch
        `streamed`, put back first in line. If that fetch is the one starting, unchanged since
        (no supersede), and its log end has not moved since its answer, it is parked again as
        it is (`park_again`): no read, which would find nothing, and no new ParkedFetch.
        Otherwise it starts as any fetch does and `held` is let go."""
        try:
            while not conn.closed:
                fetch = session.start()
                if fetch is None:
                    return
                if fetch.error is None:
                    if (fetch is streamed and self._may_park_as_is(conn, fetch)
                            and self.broker.at_log_end(fetch.parts)):
                        held.park_again((fetch.parts, fetch.max_bytes, fetch.min_bytes, MINILOG))
                        parked, held = held, None
                        conn.state[_PARKED_FETCHES].add(parked)   # the set `_park_fetch` made
                        session.parked = parked
                        self.broker.fetch_waits += 1              # as LogBroker.park counts it
                        return
                    self._start_fetch(conn, (fetch.rid, fetch.parts, fetch.max_bytes, fetch.min_bytes,
                                             fetch.max_wait_ms, session))
                    return
                conn.send_error(fetch.rid, fetch.error.code, fetch.error.message)
        finally:
            if held is not None:
                held.release()

    @staticmethod
    def _may_park_as_is(conn, fetch) -> bool:
        """Whether the streamed session fetch `fetch`, answered at its log end, may be parked
        again as it is (`ParkedFetch.park_again`, inside its answer or from the loop) instead of
        starting anew: no access checks to run on its reads, the connection open and reading
        its replies with no fetch deferred before it, and a fetch that waits for records."""
        return (conn.access is None and not conn.closed and not conn.writing_paused
                and not conn.state.get(_PENDING_FETCHES) and fetch.min_bytes > 0 and fetch.max_wait_ms > 0)

    def _fetch_now(self, conn, rid, parts, max_bytes, min_bytes, max_wait_ms, session=None) -> None:
        core = self.broker if conn.access is None else self.core(conn)   # self.core, without a call
        rows, ready = core.read(parts, max_bytes, min_bytes)
        if ready or max_wait_ms <= 0:
            self._send_fetch(conn, rid, rows, session)
        else:
            self._park_fetch(conn, core, rid, parts, max_bytes, min_bytes, max_wait_ms, session)

    def _park_fetch(self, conn, core, rid, parts, max_bytes, min_bytes, max_wait_ms, session=None) -> None:
        """Park the fetch (`LogBroker.park`); its reply is written from inside the append that
        readies it, in the same loop turn (latency: no task, no extra turn of the loop)."""
        parked_fetches = conn.state.get(_PARKED_FETCHES)
        if parked_fetches is None:
            parked_fetches = conn.state[_PARKED_FETCHES] = set()

        def on_ready(rows):
            if conn.closed:
                parked_fetches.discard(parked)
                if session is not None:
                    session.parked = None
                return
            try:
                if conn.writing_paused:
                    if session is not None:
                        session.parked = None
                    # Woken while the client is not reading: answer after the deferred fetches,
                    # with what the log holds then (a file slice is not kept across a wait).
                    # A streamed fetch parked again reads where its last answer ended.
                    now_parts = parts if session is None else session.current.parts
                    self._defer_fetch(conn, (rid, now_parts, max_bytes, min_bytes, 0, session))
                elif session is None:
                    self.sendfile_bytes += send_rows(conn, rid, rows, self.fetch_sendfile)   # _send_fetch's
                else:
                    self._send_fetch(conn, rid, rows, session)   # session.parked: this one
            except Exception as exc:  # a bug must neither leave the client waiting nor fail the append
                log.exception("fetch failed on connection %s", conn.id)
                conn.send_error(rid, ErrorCode.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")
                if session is not None and session.parked is parked and parked.done:
                    session.parked = None
            if parked.done:   # not parked again by its answer (`_send_fetch`)
                parked_fetches.discard(parked)

        parked = core.park(parts, max_bytes, min_bytes, max_wait_ms, on_ready)
        parked_fetches.add(parked)
        if session is not None:
            session.parked = parked

    def _defer_fetch(self, conn, fetch) -> None:
        """Queue a fetch until the connection's transport drains (what bounds a reader's memory).

        A connection that pipelines fetches without reading the replies would otherwise make the
        server read every reply's records into the transport's buffer: 50 fetches of 16 MiB held
        768 MB. Now at most one reply waits in the buffer; the requests behind it wait as
        arguments, and their records are read when it is their turn.
        """
        pending = conn.state.get(_PENDING_FETCHES)
        if pending is None:
            pending = conn.state[_PENDING_FETCHES] = collections.deque()
            conn.on_writable.append(lambda: self._run_pending_fetches(conn))
        pending.append(fetch)

    def _run_pending_fetches(self, conn) -> None:
        pending = conn.state.get(_PENDING_FETCHES)
        while pending and not conn.writing_paused and not conn.closed:
            self._fetch_now(conn, *pending.popleft())

    def _send_fetch(self, conn, rid, rows, session=None) -> None:
        """Write the reply of a fetch that read `rows`; a session's fetch then goes on: the
        next one of the session starts, or a streamed fetch (`answers`) is served again."""
        if session is None:
            self.sendfile_bytes += send_rows(conn, rid, rows, self.fetch_sendfile)
            return
        parked = session.parked   # the ParkedFetch answering now, if the answer is from one
        # A session's rows say where each was read from (the client checks continuity).
        starts = session.answered(rows)
        fetch = session.current
        streams = fetch is not None and fetch.streams
        size = records_size(rows[0][5]) if len(rows) == 1 else SENDFILE_MIN_BYTES
        if size < SENDFILE_MIN_BYTES:
            # One partition, a few records (a live consumer's): one frame packed in one go.
            if streams:
                row = rows[0]
                more = fetch.next_answer(bool(session.waiting), size, row[2] is not None)
                head = fetch.head
                if head is None:
                    head = fetch.head = streamed_frame_head(rid, row[0], row[1])
                frame = streamed_frame(head, row, starts[0], more)
                write_frame(conn, one_row_frame(rid, row, starts[0], more) if frame is None else frame)
            else:
                more = None
                write_frame(conn, one_row_frame(rid, rows[0], starts[0], None))
        else:
            resp = FetchResponse()
            for row, start in zip(rows, starts):
                resp.add(*row, start)
            # A fetch that asked for several answers says how many more follow.
            more = (fetch.next_answer(bool(session.waiting), resp.records_bytes, any(row[2] is not None for row in rows))
                    if streams else None)
            self.sendfile_bytes += resp.send(conn, rid, self.fetch_sendfile, more)
        if more:
            # A streamed fetch that read up to the log end, answered from its ParkedFetch: park
            # it again now, inside this answer (and the append that readied it), where the
            # answer ended. Nothing was appended since its read, so a read now would find
            # nothing: none is made. Records of a later append (the same produce's next entry,
            # the next frame) find it parked and are answered by it at once.
            if REPARK_INSIDE_ANSWER and parked is not None and self._may_park_as_is(conn, fetch):
                parts = session.go_on_at_end(fetch, rows)
                if parts is not None:
                    parked.park_again((parts, fetch.max_bytes, fetch.min_bytes, MINILOG))
                    session.parked = parked
                    return
            # Else serve it again, first in line, where this answer ended (a consumer behind
            # gets its next answer read from the loop, not inside this one).
            fetch.go_on()
            session.waiting.appendleft(fetch)
            if parked is not None and fetch.min_bytes > 0 and fetch.max_wait_ms > 0:
                # Answered by its ParkedFetch: kept, so that the loop parks it again without a
                # new one when nothing came meanwhile (`_start_session_fetch`).
                parked.hold()
                conn.loop.call_soon(self._start_session_fetch, conn, session, parked, fetch)
                return
        # The session's next fetch starts after what runs now (the append that readied this
        # one, its producer's reply).
        conn.loop.call_soon(self._start_session_fetch, conn, session)

    # ---- offsets -----------------------------------------------------------------------
    @op("list_offsets")
    def op_list_offsets(self, conn, args):
        items = required(args, "partitions", list)
        for item in items:
            if (not isinstance(item, (list, tuple)) or len(item) != 3 or type(item[0]) is not str
                    or type(item[1]) is not int or type(item[2]) is not int):
                raise BrokerError(ErrorCode.BAD_REQUEST, "each of 'partitions' must be [topic, partition, timestamp]")
        return {"results": self.core(conn).list_offsets(items)}

    # ---- consumer groups ---------------------------------------------------------------
    @op("join_group")
    def op_join_group(self, conn, args):
        protocols = required(args, "protocols", list)
        for p in protocols:
            if not isinstance(p, (list, tuple)) or len(p) != 2 or type(p[0]) is not str or type(p[1]) is not bytes:
                raise BrokerError(ErrorCode.BAD_REQUEST, "each of 'protocols' must be [assignor name, metadata bin]")
        session = optional(args, "session_timeout_ms", int, 45_000)
        fut = self.core(conn).join_group(
            required(args, "group_id", str), optional(args, "member_id", str, ""),
            optional(args, "client", str, conn.client_name or ""), session,
            optional(args, "rebalance_timeout_ms", int, session), optional(args, "protocol_type", str, "consumer"),
            [(name, meta) for name, meta in protocols], MINILOG)
        return self._await(fut)

    @op("sync_group")
    def op_sync_group(self, conn, args):
        fut = self.core(conn).sync_group(required(args, "group_id", str), required(args, "generation_id", int),
                                     required(args, "member_id", str), optional(args, "assignments", list, []))
        return self._await(fut)

    @staticmethod
    async def _await(fut):
        # shield: a client that hangs up must not cancel the coordinator's future for the others.
        return await asyncio.shield(fut)

    @op("heartbeat")
    def op_heartbeat(self, conn, args):
        self.core(conn).heartbeat(required(args, "group_id", str), required(args, "generation_id", int),
                              required(args, "member_id", str))
        return {}

    @op("leave_group")
    def op_leave_group(self, conn, args):
        self.core(conn).leave_group(required(args, "group_id", str), required(args, "member_id", str))
        return {}

    @op("offset_commit")
    def op_offset_commit(self, conn, args):
        group_id = required(args, "group_id", str)
        generation_id = optional(args, "generation_id", int, -1)
        member_id = optional(args, "member_id", str, "")
        offsets = []
        for item in required(args, "offsets", list):
            if (not isinstance(item, (list, tuple)) or len(item) not in (3, 4) or type(item[0]) is not str
                    or type(item[1]) is not int or type(item[2]) is not int):
                raise BrokerError(ErrorCode.BAD_REQUEST,
                                  "each of 'offsets' must be [topic, partition, offset, metadata]")
            offsets.append((item[0], item[1], item[2], item[3] if len(item) == 4 else None))
        results = self.core(conn).commit_offsets(group_id, generation_id, member_id, offsets)
        if type(results) is list:
            return {"results": results}
        return self._reply_when_durable(results)

    @op("offset_fetch")
    def op_offset_fetch(self, conn, args):
        group_id = required(args, "group_id", str)
        wanted = optional(args, "partitions", list)
        if wanted is not None:
            for item in wanted:
                if (not isinstance(item, (list, tuple)) or len(item) != 2 or type(item[0]) is not str
                        or type(item[1]) is not int):
                    raise BrokerError(ErrorCode.BAD_REQUEST, "each of 'partitions' must be [topic, partition]")
        return {"offsets": self.core(conn).fetch_offsets(group_id, wanted)}

    @op("list_groups")
    def op_list_groups(self, conn, args):
        return {"groups": [[g, s] for g, s in self.core(conn).list_groups()]}

    @op("describe_groups")
    def op_describe_groups(self, conn, args):
        out = []
        for group_id in required(args, "groups", list):
            if not isinstance(group_id, str):
                raise BrokerError(ErrorCode.BAD_REQUEST, "'groups' must be an array of group ids")
            out.append(self.core(conn).describe_group(group_id))
        return {"groups": out}

    # ---- tracing (`minilog trace`) -----------------------------------------------------
    @op("trace")
    def op_trace(self, conn, args):
        """Start (or stop, `on: false`) `trace` pushes: appends, segment rolls, index entries, group changes."""
        on = optional(args, "on", bool, True)
        tracer = conn.state.get("tracer")
        if on and tracer is None:
            from serverbase.trace_push import push_tracer
            tracer = conn.state["tracer"] = push_tracer(conn)
            self.broker.set_tracing(tracer, True)
        elif not on and tracer is not None:
            del conn.state["tracer"]
            self.broker.set_tracing(tracer, False)
        return {"tracing": on}

    def on_connection_closed(self, conn):
        for parked in list(conn.state.pop(_PARKED_FETCHES, ())):
            parked.cancel()
        tracer = conn.state.pop("tracer", None)
        if tracer is not None and self.broker is not None:
            self.broker.set_tracing(tracer, False)
        super().on_connection_closed(conn)

    @op("delete_groups")
    def op_delete_groups(self, conn, args):
        """Delete inactive groups and their commits: `{results: {group: nil or [code, message]}}`."""
        groups = required(args, "groups", list)
        if not all(isinstance(g, str) for g in groups):
            raise BrokerError(ErrorCode.BAD_REQUEST, "'groups' must be an array of group ids")
        results, waits = {}, []
        for group_id in groups:
            try:
                wait = self.core(conn).delete_group(group_id)
            except BrokerError as exc:
                results[group_id] = [exc.code, exc.message]
                continue
            results[group_id] = None
            if wait is not None:
                waits.append(wait)
        if not waits:
            return {"results": results}

        async def when_durable():
            for wait in waits:
                await wait
            return {"results": results}
        return when_durable()
