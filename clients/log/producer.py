"""The confluent-kafka style Producer: per-partition batching, pipelined produce requests.

How a record travels (docs/clients-minilog.md tells the story at length):

1. `Producer.produce()` picks the partition (`partitioner.py`: the `partitioner` setting,
   librdkafka's `consistent_random` by default, i.e. CRC32 of the key; a record without a key
   goes to the topic's current sticky partition) and appends one row tuple to that
   partition's open `_OpenBatch`, an `OpenBatch` of `accumulator.py`, in the
   `RecordAccumulator` the asyncio producer uses too. A row is already in the wire layout of a record
   (`[offset_delta, timestamp_delta, key, value, headers]`, see `clients/record_batch.py`), so
   closing a batch (`BatchBuilder.pack`) is a single pack of the rows plus the header. A record
   with no key, headers or timestamp is appended as its value alone (a plain record).
2. A batch closes when it holds `batch.size` bytes or `batch.num.messages` records, or when
   it is `linger.ms` old (checked by produce/poll/flush: there is no background thread, as
   in confluent-kafka the application is expected to call `poll()` regularly).
3. Closed batches go out at once in `produce` requests without waiting for earlier replies:
   up to `max.in.flight.requests.per.connection` are in flight. Which batches make a request,
   and what a reply, a lost connection or `message.timeout.ms` means for each batch, is
   decided by the sans-IO `ProduceRequests` (`produce_requests.py`, shared with the asyncio
   producer); this class writes the requests it returns and turns its outcomes into reports.
   With `linger.ms` 0, a record that finds nothing open, queued or held goes from produce()
   straight to the socket as a batch of its own, in the same bytes (`_send_single`).
4. Each outcome gives the batch's base offset, from which the delivery report of every record
   follows (`base + index`), or its error. Reports are queued and served by `poll()`/`flush()`,
   in the application's thread, as confluent-kafka does.
"""

import collections
import functools
import logging
import time

from ..protocol.errors import BrokerError, ErrorCode
from ..protocol.framing import DEFAULT_MAX_FRAME, LARGE_BLOB
from ..record_batch import pack_single
from ..rpc import ConnectionClosed
from .accumulator import OpenBatch, RecordAccumulator, TopicBatches, record_size
from .config import Config
from .connection import LogConnection, deadline_of, parse_bootstrap, remaining, tls_context
from .errors import ConfigError, KafkaError, KafkaException, error_from_wire, exception_from
from .message import make_message
from .partitioner import KeyPartitioner
from .produce_requests import CONNECTION_CLOSED, DELIVERY_TIMED_OUT, PURGED, PURGED_IN_FLIGHT, ProduceRequests

log = logging.getLogger("clients.log")

_PRODUCER_KEYS = {
    "linger.ms", "queue.buffering.max.ms", "batch.size", "batch.num.messages", "acks",
    "request.required.acks", "queue.buffering.max.messages", "queue.buffering.max.kbytes",
    "message.timeout.ms", "delivery.timeout.ms", "request.timeout.ms", "on_delivery",
    "delivery.report.only.error", "max.in.flight.requests.per.connection", "max.in.flight",
    "dr_cb", "dr_msg_cb", "partitioner", "retries", "message.send.max.retries", "retry.backoff.ms",
    "retry.backoff.max.ms",
}
# Records with values under this many bytes take the fast path; a batch closes that much
# before its byte limit, so the record that fills it can never take it over the limit.
_SMALL = 16 * 1024
_BATCH_OVERHEAD = 128  # the 39-byte header, the records array header and estimate slack
# linger.ms 0 sends a record at once only while fewer than this many produce requests are
# unanswered; past that, records gather into the next batch until a reply comes back (as
# librdkafka batches under load: its I/O thread is busy while the application produces).
# Not 1: a record held behind one unanswered request waits for its reply *and* for the
# application's next produce()/poll() (there is no I/O thread to send it when the reply
# comes), ~100 us more at 10,000 records/s; at 4 a producer only holds once the server is
# four requests behind, which is when batching pays.
_IDLE_WINDOW = 4
# While records are held that way, look for replies (one non-blocking recv) at most this often.
_HOLD_RECHECK = 0.0001


def _as_bytes(x, what: str):
    if x is None or x.__class__ is bytes:
        return x
    if isinstance(x, str):
        return x.encode("utf-8")
    if isinstance(x, (bytearray, memoryview)):
        return bytes(x)
    raise TypeError(f"{what} must be str, bytes or None, got {type(x).__name__} (serialize it first)")


# The local outcomes of ProduceRequests, as librdkafka reports them.
_LOCAL_ERRORS = {
    DELIVERY_TIMED_OUT: (KafkaError._MSG_TIMED_OUT, "Local: Message timed out"),
    PURGED: (KafkaError._PURGE_QUEUE, "Local: Purged in queue"),
    PURGED_IN_FLIGHT: (KafkaError._PURGE_INFLIGHT, "Local: Purged in flight"),
    CONNECTION_CLOSED: (KafkaError._TRANSPORT, "Local: Broker transport failure"),
}


def _kafka_error(error: tuple) -> KafkaError:
    """The KafkaError of a `ProduceRequests` outcome's error pair (code, message)."""
    local = _LOCAL_ERRORS.get(error[0])
    if local is not None:
        return KafkaError(local[0], f"{local[1]} ({error[1]})", retriable=local[0] == KafkaError._TRANSPORT)
    return error_from_wire(error[0], error[1])


class _OpenBatch(OpenBatch):
    """An OpenBatch (`accumulator.py`) with what the blocking producer adds: a linger
    deadline, its size and count limits, and per-record callbacks."""

    __slots__ = ("callbacks", "deadline", "last_index", "max_size", "hard_size")

    def __init__(self, topic: str, partition: int, deadline: float, max_count: int, max_size: int, hard_size: int):
        OpenBatch.__init__(self, topic, partition)
        self.last_index = max_count - 1  # the batch is full once a record lands at this index
        self.max_size = max_size    # close once this full (batch.size, leaving room for one small record)
        self.hard_size = hard_size  # never exceed: what the server accepts
        self.callbacks = None  # {row index: callback} for records with their own callback
        self.deadline = deadline


class _SentAlone:
    """The batch of one record sent alone (`Producer._send_single`): what `_delivered` reads
    of an `_OpenBatch`, without its builder."""

    __slots__ = ("topic", "partition", "rows", "size", "first_ts")
    callbacks = None
    dflt = 0

    def __init__(self, topic: str, partition: int, rows: list, size: int, first_ts: int):
        self.topic = topic
        self.partition = partition
        self.rows = rows
        self.size = size
        self.first_ts = first_ts


class Producer:
    """`Producer({'bootstrap.servers': 'host:port', ...})`, as confluent_kafka.Producer."""

    def __init__(self, config=None, **kwargs):
        conf = dict(config or {})
        conf.update(kwargs)
        cfg = Config(conf, _PRODUCER_KEYS, "Producer")
        self._host, self._port = parse_bootstrap(cfg.get("bootstrap.servers"))
        self._client_id = cfg.str("client.id", "rdkafka")
        self._credentials = cfg.credentials()
        self._ssl_context = tls_context(cfg)   # security.protocol SSL / SASL_SSL (clients/tls.py)
        linger = cfg.float("linger.ms", cfg.float("queue.buffering.max.ms", 5.0))
        self._linger = max(linger, 0.0) / 1000.0
        self._batch_bytes = max(cfg.int("batch.size", 1_000_000), 1)
        self._batch_count = max(cfg.int("batch.num.messages", 10_000), 1)
        # librdkafka's message.max.bytes: the largest request (here: batch) the producer makes.
        self._message_max_bytes = max(cfg.int("message.max.bytes", 1_000_000), 1024)
        acks = cfg.get("acks", cfg.get("request.required.acks", -1))
        acks = -1 if str(acks).lower() == "all" else int(acks)
        if acks not in (-1, 0, 1):
            raise ConfigError(f"acks must be 0, 1, -1 or 'all', got {acks!r}")
        self._acks = acks
        self._max_queued = cfg.int("queue.buffering.max.messages", 100_000)
        self._max_queued_bytes = cfg.int("queue.buffering.max.kbytes", 1_048_576) * 1024
        self._message_timeout = cfg.int("message.timeout.ms", cfg.int("delivery.timeout.ms", 300_000)) / 1000.0
        self._request_timeout_ms = cfg.int("request.timeout.ms", 30_000)
        self._max_in_flight = max(cfg.int("max.in.flight.requests.per.connection",
                                          cfg.int("max.in.flight", 1_000_000)), 1)
        self._on_delivery = cfg.get("on_delivery") or cfg.get("dr_cb") or cfg.get("dr_msg_cb")
        self._only_errors = cfg.bool("delivery.report.only.error", False)
        self._error_cb = cfg.get("error_cb")
        self._conn: LogConnection | None = None
        # The record accumulator (accumulator.py), and two names for its parts: topic name ->
        # TopicBatches, and the open batches oldest first (the first has the next linger deadline).
        self._acc = RecordAccumulator()
        self._topics = self._acc.topics
        self._open = self._acc.open
        # Closed batches on their way (produce_requests.py): queued, in flight, then an outcome.
        # max_request is set once the connection's max_frame is known.
        # A batch failed with a retriable error goes again (after retry.backoff.ms, doubling up
        # to retry.backoff.max.ms) until `retries` or message.timeout.ms runs out, as librdkafka's.
        retries = cfg.int("retries", cfg.int("message.send.max.retries", 2_147_483_647))
        backoff = max(cfg.int("retry.backoff.ms", 100), 1) / 1000.0
        backoff_max = max(cfg.int("retry.backoff.max.ms", 1000) / 1000.0, backoff)
        self._requests = ProduceRequests(acks, self._request_timeout_ms, DEFAULT_MAX_FRAME, self._max_in_flight,
                                         self._message_timeout, retries, backoff, backoff_max)
        self._retry_at = 0.0          # after a failed connect, when to try again
        self._reports = collections.deque()  # (callback, error, message) to serve in poll()
        self._count = 0               # records in closed batches not yet reported
        self._bytes = 0
        try:
            # librdkafka's partitioner names and default (consistent_random: CRC32 of the key).
            self._keys = KeyPartitioner(cfg.str("partitioner", "consistent_random"))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self._closed = False
        try:
            self._connect()
            max_frame = self._conn.state.max_frame
        except KafkaException as exc:
            # As with librdkafka, a producer can be made while the server is away; records
            # wait for it (up to message.timeout.ms).
            log.warning("minilog producer: %s; will connect when records are sent", exc.args[0])
            max_frame = DEFAULT_MAX_FRAME
        # One produce request is one frame: a batch (with the envelope) must fit in max_frame.
        self._max_request = self._requests.max_request = max_frame - 64 * 1024
        self._batch_bytes = min(self._batch_bytes, self._max_request)
        # linger.ms 0 closes a batch at once (its deadline is in the past) -- unless requests
        # are already in flight, see _held.
        self._linger_deadline = (lambda: float("-inf")) if self._linger == 0 else (
            lambda: time.monotonic() + self._linger)
        self._idle_window = min(self._max_in_flight, _IDLE_WINDOW) if self._linger == 0 else None
        # linger.ms 0: a record that finds nothing waiting leaves alone, at once (_send_single).
        self._alone = self._idle_window is not None

    # ---- connection and metadata --------------------------------------------------------
    def _connect(self) -> LogConnection:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = LogConnection(self._host, self._port, self._client_id, credentials=self._credentials,
                                           ssl_context=self._ssl_context)
            except (OSError, BrokerError) as exc:
                raise KafkaException(KafkaError(KafkaError._TRANSPORT,
                                                f"cannot connect to {self._host}:{self._port}: {exc}"))
        return self._conn

    def _topic(self, topic: str) -> TopicBatches | KafkaError | None:
        if not isinstance(topic, str) or not topic:
            raise TypeError("topic must be a non-empty str")
        try:
            # As Kafka producers do: the broker creates a missing topic if its
            # auto-create setting allows it (minilog's default does).
            meta = self._connect().call("metadata", {"topics": [topic], "allow_auto_create": True})
        except ConnectionClosed as exc:
            self._connection_lost(exc)
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, f"metadata for {topic!r}: {exc}")) from None
        except BrokerError as exc:
            if exc.code == "NOT_FOUND":
                return None
            raise exception_from(exc) from None
        info = (meta.get("topics") or {}).get(topic)
        if not info or not info.get("partitions"):
            error = (info or {}).get("error")
            if error and error[0] == ErrorCode.NOT_AUTHORIZED:
                return error_from_wire(error[0], error[1])   # reported as librdkafka does: TOPIC_AUTHORIZATION_FAILED
            return None
        limit = self._message_max_bytes
        try:
            limit = min(limit, int((info.get("config") or {}).get("max.message.bytes", limit)))
        except (TypeError, ValueError):
            pass
        count = len(info["partitions"])
        return self._acc.add_topic(topic, count, self._keys.null_key_partition(count), limit)

    def list_topics(self, topic=None, timeout=-1):
        from .admin import fetch_cluster_metadata
        return fetch_cluster_metadata(self._connect(), topic, timeout)

    # ---- produce --------------------------------------------------------------------------
    def produce(self, topic, value=None, key=None, partition=-1, on_delivery=None, timestamp=0,
                headers=None, callback=None, _mono=time.monotonic):
        """Queue one record; its delivery report is served by a later poll() or flush()."""
        # The fast path, taken by the common call forms -- produce(topic, bytes), with
        # partition=, with a bytes key=, or both: one append to the open batch (the sticky
        # partition's, or the named or hashed one's), a size sum, three comparisons. A record
        # without a key is appended as its value alone (a plain record, see BatchBuilder).
        if (value.__class__ is bytes and not timestamp and headers is None and on_delivery is None
                and callback is None):
            t = self._topics.get(topic)
            if t is not None:
                if key is None:
                    if partition < 0:
                        acc = t.current
                    elif partition.__class__ is int and partition < t.num_partitions:
                        acc = t.batches[partition]
                    else:
                        acc = None
                    if acc is not None:
                        size = len(value) + 16
                        if size < _SMALL:
                            rows = acc.rows
                            rows.append(value)
                            acc.size += size
                            if len(rows) > acc.last_index or acc.size >= acc.max_size or acc.deadline <= _mono():
                                self._after_append(t, acc)
                            return
                    elif self._alone and (partition < 0 or partition.__class__ is int and partition < t.num_partitions):
                        if self._send_single(t, partition, None, value):
                            return
                elif key.__class__ is bytes:
                    # The key's hash (a dict hit when seen), then the same append, of a row.
                    if partition < 0:
                        partition = self._keys.partition(key, t.num_partitions)
                        if partition < 0:
                            partition = t.sticky
                    if partition.__class__ is int and partition < t.num_partitions:
                        acc = t.batches[partition]
                        size = len(value) + 16 + len(key)
                        if acc is not None and size < _SMALL:
                            rows = acc.rows
                            n = len(rows)
                            rows.append((n, acc.dflt, key, value, None))
                            acc.tuples += 1
                            acc.size += size
                            if n >= acc.last_index or acc.size >= acc.max_size or acc.deadline <= _mono():
                                self._after_append(t, acc)
                            return
                        if acc is None and self._alone and self._send_single(t, partition, key, value):
                            return
        self._produce(topic, value, key, partition, on_delivery or callback, timestamp, headers)

    def _produce(self, topic, value, key, partition, cb, timestamp, headers):
        if value is not None and value.__class__ is not bytes:
            value = _as_bytes(value, "value")
        t = self._topics.get(topic)
        if t is None:
            t = self._topic(topic)
            if isinstance(t, KafkaError):
                self._report_now(cb, t, topic, partition, key, value)
                return
            if t is None:
                self._report_now(cb, KafkaError(
                    KafkaError.UNKNOWN_TOPIC_OR_PART, f"topic {topic!r} does not exist and the server does not create topics on first use; create it with AdminClient.create_topics"),
                    topic, partition, key, value)
                return
        if key is not None:
            if key.__class__ is not bytes:
                key = _as_bytes(key, "key")
            if partition < 0:
                partition = self._keys.partition(key, t.num_partitions)
        if partition < 0:
            partition = t.sticky
        if not isinstance(partition, int) or not 0 <= partition < t.num_partitions:
            raise KafkaException(KafkaError(
                KafkaError._UNKNOWN_PARTITION,
                f"topic {topic!r} has {t.num_partitions} partitions, no partition {partition!r}"))
        if headers is not None:
            if isinstance(headers, dict):
                headers = list(headers.items())
            headers = [(str(k), _as_bytes(v, "header value")) for k, v in headers]
        size = record_size(key, value, headers)
        if size + _BATCH_OVERHEAD > t.max_batch:
            raise KafkaException(KafkaError(
                KafkaError.MSG_SIZE_TOO_LARGE,
                f"a record of about {size} bytes cannot fit a batch of at most {t.max_batch} bytes "
                f"(message.max.bytes and the topic's max.message.bytes)"))
        acc = t.batches[partition]
        if acc is not None and acc.rows and acc.size + size > acc.hard_size:
            self._close(t, acc)  # a large record would overflow this batch: start a new one
            acc = None
        if acc is None:
            # queue.buffering.max.messages counts closed batches; an open batch closes when it
            # would take the queue past the limit, so the next record finds the queue full.
            room = self._max_queued - self._count
            if room <= 0 or self._bytes >= self._max_queued_bytes:
                self._make_room()
                room = max(self._max_queued - self._count, 1)
            acc = self._acc.opened(t, _OpenBatch(t.name, partition, self._linger_deadline(), min(self._batch_count, room),
                                                 min(self._batch_bytes, t.max_batch - _SMALL - _BATCH_OVERHEAD),
                                                 t.max_batch - _BATCH_OVERHEAD))
        rows = acc.rows
        self._append_slow(acc, key, value, timestamp, headers, cb, size)
        if len(rows) > acc.last_index or acc.size >= acc.max_size or acc.deadline <= time.monotonic():
            self._after_append(t, acc)

    def _send_single(self, t: TopicBatches, partition: int, key, value: bytes) -> bool:
        """linger.ms 0 and nothing waiting: send the record at once as a batch of its own.

        What the general path would do for it (open a batch, append, close it as due, queue it,
        make a request of it, encode and write that) comes to the same bytes on the wire
        (`record_batch.pack_single`, `ProduceRequests.encode_single`) and the same bookkeeping,
        in a few calls instead of ~75: the time from produce() to the socket is on every
        record's latency. False (nothing done) unless it applies: the connection is up, no
        batch is open, queued or waiting to be retried (those go first), fewer than
        _IDLE_WINDOW requests are unanswered (else `_held` gathers records), the queue limits
        have room, and the record is small."""
        requests = self._requests
        conn = self._conn
        if (self._open or requests.ready or requests.retrying or requests.in_flight >= self._idle_window
                or conn is None or conn.closed or self._count >= self._max_queued
                or self._bytes >= self._max_queued_bytes):
            return False
        size = len(value) + 16 if key is None else len(value) + 16 + len(key)
        if size >= _SMALL or size + _BATCH_OVERHEAD > t.max_batch:
            return False
        if partition < 0:
            partition = t.sticky
        # The frame first: what comes before the write is on the record's latency; the
        # bookkeeping after it is not (replies are only read by this thread, later).
        stamp = time.time_ns() // 1_000_000
        data = pack_single(key, value, stamp)
        topic = t.name
        rid = conn.state.next_id() if self._acks else 0
        try:
            conn.write_frame(requests.encode_single(rid, topic, partition, data))
            lost = None
        except ConnectionClosed as exc:
            lost = exc
        now = time.monotonic()
        self._count += 1
        self._bytes += size
        if t.num_partitions > 1:
            self._acc.sent_alone(t, partition)
        batch = _SentAlone(topic, partition, [value] if key is None else [(0, 0, key, value, None)], size, stamp)
        if lost is None and rid:
            request = requests.sent_single(topic, partition, data, batch, now, rid)
            conn.callbacks[rid] = functools.partial(self._on_reply, request)   # state.expect's dict
            return True
        request = requests.single(topic, partition, data, batch, now)
        if lost is not None:
            # Queued again: it leaves on the next connection, after the unanswered requests.
            requests.unsent(request)
            self._connection_lost(lost)
        else:
            self._settle(requests.sent(request, now, None))
        return True

    def _after_append(self, t: TopicBatches, acc: _OpenBatch) -> None:
        """A record made its batch full or found it due: close it (and any other due batch) and send."""
        if len(acc.rows) > acc.last_index or acc.size >= acc.max_size:
            self._close(t, acc)
        self._close_due()

    def _held(self, now: float) -> bool:
        """linger.ms 0 under load: keep due batches open while a request is unanswered.

        Sending a request costs a syscall that wakes the server (~20-30 us of CPU on each side);
        one per record at 10k records/s is what made latency collapse on a busy machine. So
        with linger.ms 0 a batch leaves at once only while fewer than _IDLE_WINDOW requests
        are in flight; otherwise its records wait for the reply, and the batch that then
        leaves carries all that arrived meanwhile. An idle producer pays no latency for this;
        a busy one sends fewer, larger requests. The batches stay open (so they keep
        growing); their deadline moves _HOLD_RECHECK ahead, so that the produce() fast path
        looks for the reply (one non-blocking recv) at most that often.
        """
        window = self._idle_window
        if window is None or self._requests.in_flight < window:
            return False
        conn = self._conn
        if conn is not None and not conn.closed:
            self._pump(0)
            if self._requests.in_flight < window:
                return False
        else:
            return False  # no connection: _send_ready keeps the batches and retries
        later = now + _HOLD_RECHECK
        for _, acc in self._open:
            acc.deadline = later
        return True

    def _append_slow(self, acc, key, value, timestamp, headers, cb, size):
        index = acc.append(key, value, timestamp or None, headers, size)
        if cb is not None:
            if acc.callbacks is None:
                acc.callbacks = {}
            acc.callbacks[index] = cb

    def _report_now(self, cb, err, topic, partition, key, value):
        cb = cb or self._on_delivery
        if cb is not None:
            self._reports.append((cb, err, make_message(topic, partition, -1001, None, key, value, None, err)))

    def _make_room(self):
        """The queue is at its limit: flush what lingers and take acks; BufferError if still full."""
        self._close_all()
        self._send_ready()
        if self._conn is not None and not self._conn.closed and self._requests.in_flight:
            self._pump(0)
        if self._count >= self._max_queued or self._bytes >= self._max_queued_bytes:
            raise BufferError(f"Local: Queue full ({self._count} messages waiting for delivery; "
                              "call poll() to serve delivery reports or raise queue.buffering.max.messages)")

    # ---- batches to requests ----------------------------------------------------------------
    def _close(self, t: TopicBatches, acc: _OpenBatch) -> None:
        self._acc.closing(t, acc)
        self._count += len(acc.rows)
        self._bytes += acc.size
        self._requests.add(t.name, acc.partition, acc.pack(), acc, time.monotonic())

    def _close_due(self) -> None:
        now = time.monotonic()
        if self._open and self._open[0][1].deadline <= now and self._held(now):
            self._send_ready()
            return
        while self._open and self._open[0][1].deadline <= now:
            t, acc = self._open[0]
            self._close(t, acc)
        self._send_ready()

    def _close_all(self) -> None:
        while self._open:
            t, acc = self._open[0]
            self._close(t, acc)

    def _send_ready(self) -> None:
        """Write the produce requests `ProduceRequests` makes of the queued batches (as many as
        the in-flight limit allows), connecting first if the connection is gone."""
        requests = self._requests
        if not requests.ready and not requests.retrying:
            return
        conn = self._conn
        if conn is None or conn.closed:
            self._expire()
            if time.monotonic() < self._retry_at or not (requests.ready or requests.retrying):
                return
            try:
                conn = self._connect()
            except KafkaException as exc:
                # The server is away (a restart?): keep the batches and try again shortly;
                # they fail with _MSG_TIMED_OUT once message.timeout.ms has passed.
                self._retry_at = time.monotonic() + 0.1
                log.info("minilog producer: %s; will retry", exc.args[0])
                return
        acks = self._acks
        now = time.monotonic()
        while True:
            request = requests.next_request(now)
            if request is None:
                break
            try:
                # Large batches go to the socket as they are (send_parts_with), not copied into a
                # frame; a request of small ones is packed whole, which is cheaper.
                large = any(len(item[2]) >= LARGE_BLOB for item in request.items)
                if acks == 0:
                    conn.send_parts_with("produce", request.args, large=large)
                    rid = None
                else:
                    rid = conn.send_parts_with("produce", request.args, functools.partial(self._on_reply, request),
                                               large=large)
            except ConnectionClosed as exc:
                requests.unsent(request)
                self._connection_lost(exc)
                return
            delivered = requests.sent(request, now, rid)
            if delivered:
                self._settle(delivered)
        try:
            conn.flush()
        except ConnectionClosed as exc:
            self._connection_lost(exc)
            return
        # With several requests unanswered, take the replies already here, so a produce loop
        # that never polls still reads them (one non-blocking recv).
        if requests.in_flight > 4:
            self._pump(0)

    def _on_reply(self, request, result, error) -> None:
        if self._open and self._idle_window is not None:
            for _, acc in self._open:  # batches held for this reply (see _held) are due now
                acc.deadline = float("-inf")
        if error is not None:
            self._settle(self._requests.failed(request, (error.code, error.message), time.monotonic()))
            return
        outcomes = self._requests.completed(request, result, time.monotonic())
        if len(outcomes) == 1:
            batch, base, err = outcomes[0]
            if err is None:
                self._delivered(batch, None, base)   # one batch stored: the usual reply
                return
        self._settle(outcomes)

    def _settle(self, outcomes) -> None:
        """Turn `ProduceRequests` outcomes (batch, base offset, error) into delivery reports."""
        errors = {}
        for acc, base, error in outcomes:
            if error is not None:
                err = errors.get(error)
                if err is None:
                    err = errors[error] = _kafka_error(error)
                self._delivered(acc, err, base)
            else:
                self._delivered(acc, None, base)

    def _delivered(self, acc: _OpenBatch, err, base) -> None:
        """Queue the delivery report of each record of `acc` (offset base + index, or the error)."""
        rows = acc.rows
        self._count -= len(rows)
        self._bytes -= acc.size
        on_delivery = self._on_delivery
        callbacks = acc.callbacks
        if on_delivery is None and callbacks is None:
            return
        if err is None and self._only_errors:
            return
        first = acc.first_ts
        plain_ts = first + acc.dflt   # the timestamp of plain records (rows that are just a value)
        topic, partition = acc.topic, acc.partition
        reports = self._reports
        for i, r in enumerate(rows):
            cb = callbacks.get(i, on_delivery) if callbacks is not None else on_delivery
            if cb is None:
                continue
            offset = base + i if err is None and base >= 0 else -1001
            if r.__class__ is tuple:
                msg = make_message(topic, partition, offset, first + r[1], r[2], r[3], r[4], err)
            else:
                msg = make_message(topic, partition, offset, plain_ts, None, r, None, err)
            reports.append((cb, err, msg))

    def _connection_lost(self, exc) -> None:
        """The connection broke: the unanswered batches go again on the next connection
        (`ProduceRequests.connection_lost`)."""
        conn = self._conn
        if conn is not None:
            conn.closed = True
            conn.callbacks.clear()
        self._requests.connection_lost()

    def _pump(self, timeout) -> None:
        """Send what is queued and handle the replies that come within `timeout` s (0: those
        already here, by the connection's one-step read of small replies)."""
        try:
            if timeout == 0:
                self._conn.receive_replies()
            else:
                self._conn.pump(timeout)
        except ConnectionClosed as exc:
            self._connection_lost(exc)
        if self._conn is not None and self._conn.async_errors:
            self._async_error()

    def _async_error(self) -> None:
        """Hand the oldest error for a request sent without a reply to error_cb (or the log)."""
        err = self._conn.async_errors.popleft()
        if self._error_cb is not None:
            self._error_cb(exception_from(err.exception()).args[0])
        else:
            log.warning("minilog producer: %s: %s", err.code, err.message)

    def _expire(self) -> None:
        """Fail batches not delivered within message.timeout.ms: queued ones (no connection)
        and requests without a reply (their late replies are dropped)."""
        outcomes, rids = self._requests.expire(time.monotonic())
        if rids and self._conn is not None:
            for rid in rids:
                self._conn.callbacks.pop(rid, None)
        if outcomes:
            self._settle(outcomes)

    # ---- serving reports ------------------------------------------------------------------
    def _serve(self) -> int:
        served = 0
        reports = self._reports
        while reports:
            cb, err, msg = reports.popleft()
            cb(err, msg)
            served += 1
        return served

    def poll(self, timeout=None) -> int:
        """Serve delivery reports (waiting up to `timeout` s for one); returns how many were served."""
        if timeout == 0:
            # The call a produce loop makes after each record: with no batch queued or waiting
            # to be retried, it is the general loop's one pass cut to what can apply -- serve
            # reports, take the replies already here (one non-blocking recv: the connection's
            # one-step read of small replies, receive_replies), close and send the batches now
            # due (a reply that just came releases those held for it, see _held), serve.
            requests = self._requests
            if not (requests.ready or requests.retrying):
                served = self._serve() if self._reports else 0
                conn = self._conn
                if conn is not None and conn.callbacks and not conn.closed:
                    try:
                        conn.receive_replies()
                    except ConnectionClosed as exc:
                        self._connection_lost(exc)
                    if conn.async_errors:
                        self._async_error()
                if self._open:
                    self._close_due()
                return served + self._serve() if self._reports else served
        deadline = deadline_of(timeout if timeout is not None else -1)
        served = self._serve()
        while True:
            if self._open:
                self._close_due()
            if self._requests.ready or self._requests.retrying:
                self._send_ready()  # batches waiting for a connection, or retries due
            busy = self._conn_busy()
            if served or (deadline is not None and time.monotonic() >= deadline):
                if busy:
                    self._pump(0)
                    if self._open:
                        self._close_due()  # a reply that just came in releases held batches
                return served + self._serve()
            retry_at = self._requests.retry_at()
            if not busy and not self._open and retry_at is None:
                if deadline is None:
                    return served  # nothing outstanding: waiting forever would hang the caller
                time.sleep(min(remaining(deadline), 0.05))
                continue
            wait = remaining(deadline)
            holding = self._idle_window is not None and self._requests.in_flight >= self._idle_window
            if self._open and not holding:  # held batches wait for a reply, not for a time
                until_linger = max(self._open[0][1].deadline - time.monotonic(), 0.0)
                wait = until_linger if wait is None else min(wait, until_linger)
            if retry_at is not None:  # a batch waits out its retry backoff
                until_retry = max(retry_at - time.monotonic(), 0.0)
                wait = until_retry if wait is None else min(wait, until_retry)
            if busy:
                self._pump(wait)
                self._expire()
            else:
                time.sleep(wait)
                if retry_at is not None:
                    self._expire()
            served += self._serve()

    def _conn_busy(self) -> bool:
        return self._conn is not None and not self._conn.closed and bool(self._conn.callbacks)

    def flush(self, timeout=None) -> int:
        """Send everything and wait for its delivery reports (serving them); returns len(self)."""
        deadline = deadline_of(timeout if timeout is not None else -1)
        self._close_all()
        self._send_ready()
        while True:
            self._serve()
            if self._count <= 0 and not self._reports:
                return 0
            if deadline is not None and time.monotonic() >= deadline:
                return len(self)
            if self._requests.ready or self._requests.retrying:
                self._send_ready()
            if self._requests.in_flight:
                self._pump(min(remaining(deadline), 1.0) if deadline is not None else 1.0)
                self._expire()
            else:
                # Batches wait for a connection or out a retry's backoff (or for their reports).
                retry_at = self._requests.retry_at()
                wait = 0.01 if retry_at is None else min(max(retry_at - time.monotonic(), 0.0), 0.1)
                if deadline is not None:
                    wait = min(wait, remaining(deadline))
                time.sleep(wait)
                self._expire()

    def purge(self, in_queue=True, in_flight=True, blocking=True) -> None:
        """Drop records not yet delivered, as confluent-kafka does: those not sent yet
        (`in_queue`: reports carry _PURGE_QUEUE) and those sent and unanswered (`in_flight`:
        _PURGE_INFLIGHT; a reply that still comes is dropped, so whether the server stored them
        is unknown). The reports are served by the next poll() or flush()."""
        if in_flight:
            outcomes, rids = self._requests.purge_in_flight()
            if rids and self._conn is not None:
                for rid in rids:
                    self._conn.callbacks.pop(rid, None)
            self._settle(outcomes)
        if in_queue:
            self._close_all()
            self._settle(self._requests.purge())

    def __len__(self) -> int:
        return self._count + self._acc.records() + len(self._reports)

    def __bool__(self) -> bool:
        return True

    def close(self, timeout=None) -> int:
        left = self.flush(timeout) if not self._closed else 0
        self._closed = True
        if self._conn is not None:
            self._conn.close()
        return left

    # confluent-kafka has no close() on Producer before 2.x; both spellings are harmless.
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
