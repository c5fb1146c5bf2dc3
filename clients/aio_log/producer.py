"""AIOKafkaProducer: aiokafka's producer API over the minilog wire, with per-partition batching.

`send()` appends the record to its partition's open batch as a wire-ready row (a `_Batch`:
an `OpenBatch` of `clients/log/accumulator.py`, filed in the `RecordAccumulator` the blocking
producer uses too; rows in the layout of `clients/record_batch.py`). Keys map to partitions
with aiokafka's default partitioner (murmur2, `clients/log/partitioner.py`), keyless records
go to the topic's sticky partition. `send()` returns an awaitable
of its RecordMetadata. A batch closes when it reaches `max_batch_size` bytes (a record that
would take it past that starts the next batch, alone if it is larger, as in aiokafka; one larger
than `max_request_size` raises MessageSizeTooLargeError), or `linger_ms` after its first record (with linger_ms=0: at the end of the current event-loop iteration,
so records sent together travel together). Closed batches leave at once in `produce`
requests; many may be in flight. Which batches make a request and what its reply (or its
failure) means for each batch is decided by the sans-IO `ProduceRequests`
(`clients/log/produce_requests.py`, shared with the blocking producer): this class writes the
requests it returns and resolves each batch's future with its outcome.

Per-record work is the cost of a fast producer in Python, so a plain `send(topic, bytes)`
is one tuple appended to the sticky partition's open batch, and what it returns is a
`RecordFuture`: two slots (the batch and the record's index) on top of one asyncio Future per
*batch*, which the produce reply resolves with the batch's base offset. Awaiting a
RecordFuture, or asking it for result()/exception(), derives the RecordMetadata from that;
only an add_done_callback() makes a real per-record asyncio Future (aiokafka's send()
returns an asyncio.Future; ours behaves like one for await, done(), result(), exception(),
cancelled(), add_done_callback() and asyncio.gather/wait).
"""

import asyncio
from functools import partial

from ..aio_rpc import AsyncRpcConnection
from ..log.config import plain_credentials
from ..log.accumulator import OpenBatch, RecordAccumulator, record_size
from ..log.connection import parse_bootstrap
from ..log.partitioner import KeyPartitioner
from ..log.produce_requests import DELIVERY_TIMED_OUT, ProduceRequests
from ..protocol.errors import BrokerError
from ..rpc import ConnectionClosed
from ..record_batch import BatchBuilder as RecordBatchBuilder
from ..tls import aiokafka_tls
from .errors import KafkaConnectionError, KafkaError, KafkaTimeoutError, MessageSizeTooLargeError, \
    UnknownTopicOrPartitionError, from_wire
from .structs import RecordMetadata, TopicPartition

_MAX_IN_FLIGHT = 64  # produce requests unanswered before send() waits for a reply
_RECONNECT_BACKOFF = 0.1  # seconds between connection attempts (aiokafka's retry_backoff_ms)
# A send loop gives the event loop a turn once this many request bytes were queued since the
# last turn: often enough that requests leave while the loop goes on, rarely enough that they
# leave in large writes (each write is a syscall that wakes the server: ~0.1-0.3 ms on a busy
# machine, more than the records of a 16 KiB batch cost to produce).
_YIELD_BYTES = 256 * 1024


def _bootstrap(servers) -> tuple[str, int]:
    if isinstance(servers, (list, tuple)):
        servers = servers[0]
    return parse_bootstrap(servers)


def _as_bytes(x, what):
    if x is None or type(x) is bytes:
        return x
    if isinstance(x, (bytearray, memoryview)):
        return bytes(x)
    raise TypeError(f"{what} must be bytes or None (set a {what}_serializer), got {type(x).__name__}")


class _Batch(OpenBatch):
    """An OpenBatch (`clients/log/accumulator.py`) with what the asyncio producer adds: the
    timer that closes it and the future its produce reply resolves."""

    __slots__ = ("handle", "future", "tp")

    def __init__(self, topic, partition, future):
        OpenBatch.__init__(self, topic, partition)
        self.handle = None
        self.future = future  # resolves to the batch's base offset once the server has it
        self.tp = None

    def metadata(self, index: int) -> RecordMetadata:
        base = self.future.result()
        tp = self.tp
        if tp is None:
            tp = self.tp = TopicPartition(self.topic, self.partition)
        return RecordMetadata(self.topic, self.partition, tp, base + index if base >= 0 else -1,
                              self.timestamp_of(index), 0, -1)


class _SentBatch:
    """A batch of `send_batch()` on its way: its outcome resolves one RecordMetadata future."""

    __slots__ = ("topic", "partition", "first_ts", "future")

    def __init__(self, topic, partition, first_ts, future):
        self.topic, self.partition, self.first_ts, self.future = topic, partition, first_ts, future

    def settle(self, base: int, error) -> None:
        if self.future.done():
            return
        if error is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(RecordMetadata(self.topic, self.partition,
                                                  TopicPartition(self.topic, self.partition), base,
                                                  self.first_ts, 0, -1))


def _error(pair) -> KafkaError:
    """The aiokafka error of a `ProduceRequests` outcome's error pair (code, message)."""
    if pair[0] == DELIVERY_TIMED_OUT:
        return KafkaTimeoutError(pair[1])
    return from_wire(pair[0], pair[1])


class RecordFuture:
    """What send() returns: the RecordMetadata of one record of a batch, as an awaitable future."""

    __slots__ = ("_batch", "_index", "_future")

    def __init__(self, batch: _Batch, index: int):
        self._batch = batch
        self._index = index
        self._future = None  # a real per-record Future, made only for add_done_callback

    def __await__(self):
        fut = self._batch.future
        if not fut.done():
            yield from fut.__await__()
        return self._batch.metadata(self._index)

    def done(self) -> bool:
        return self._batch.future.done()

    def cancelled(self) -> bool:
        return self._batch.future.cancelled()

    def result(self) -> RecordMetadata:
        return self._batch.metadata(self._index)

    def exception(self):
        return self._batch.future.exception()

    def cancel(self, msg=None) -> bool:
        return False  # a record handed to the producer is not taken back (nor is it in aiokafka)

    def get_loop(self):
        return self._batch.future.get_loop()

    def _real(self) -> asyncio.Future:
        if self._future is None:
            batch_fut = self._batch.future
            fut = self._future = batch_fut.get_loop().create_future()

            def settle(_, fut=fut, rec=self):
                if fut.done():
                    return
                if batch_fut.cancelled():
                    fut.cancel()
                elif batch_fut.exception() is not None:
                    fut.set_exception(batch_fut.exception())
                else:
                    fut.set_result(rec.result())
            if batch_fut.done():
                settle(None)
            else:
                batch_fut.add_done_callback(settle)
        return self._future

    def add_done_callback(self, fn, *, context=None) -> None:
        self._real().add_done_callback(fn, context=context)

    def remove_done_callback(self, fn) -> int:
        return self._real().remove_done_callback(fn)

    def __repr__(self):
        state = "pending" if not self.done() else "done"
        return f"<RecordFuture {self._batch.topic}-{self._batch.partition} #{self._index} {state}>"


class BatchBuilder:
    """What `create_batch()` returns: collect records, then `send_batch()` them as one batch.

    aiokafka's API over the one builder, `clients/record_batch.BatchBuilder`: this adds the
    size limit, aiokafka's keyword arguments and the serializing checks."""

    def __init__(self, max_size):
        self._max = max_size
        self._batch = RecordBatchBuilder()

    def append(self, *, timestamp=None, key=None, value=None, headers=None):
        """Add a record; returns None when the batch is full (send it and start another)."""
        key, value = _as_bytes(key, "key"), _as_bytes(value, "value")
        headers = [(str(k), _as_bytes(v, "header value")) for k, v in headers] if headers else None
        n = record_size(key, value)
        batch = self._batch
        if batch.rows and batch.size + n > self._max:
            return None
        index = batch.append(key, value, timestamp, headers, n)
        return {"offset": index, "timestamp": batch.timestamp_of(index), "size": n}

    def record_count(self):
        return len(self._batch)

    def size(self):
        return self._batch.size

    @property
    def _first(self):
        return self._batch.first_ts

    def _build(self) -> bytes:
        return self._batch.pack()


class AIOKafkaProducer:
    def __init__(self, *, bootstrap_servers="localhost:9093", client_id=None, acks=1, key_serializer=None,
                 value_serializer=None, linger_ms=0, max_batch_size=16384, max_request_size=1048576,
                 request_timeout_ms=40000, loop=None, security_protocol="PLAINTEXT", ssl_context=None,
                 sasl_mechanism="PLAIN", sasl_plain_username=None, sasl_plain_password=None, retry_backoff_ms=100,
                 **ignored):
        self._host, self._port = _bootstrap(bootstrap_servers)
        self._credentials = plain_credentials(security_protocol, sasl_mechanism, sasl_plain_username,
                                              sasl_plain_password)
        self._client_id = client_id or "aiokafka-minilog"
        # TLS, checked now as aiokafka does (clients/tls.py); never a silent plaintext.
        self._ssl_context = aiokafka_tls(security_protocol, ssl_context)
        if acks == "all":
            acks = -1
        if acks not in (0, 1, -1):
            raise ValueError(f"acks must be 0, 1 or 'all', got {acks!r}")
        self._acks = acks
        self._key_serializer = key_serializer
        self._value_serializer = value_serializer
        # send()'s fast path serves records only when neither serializer is set (aiokafka calls
        # the key serializer on a None key too).
        self._plain = key_serializer is None and value_serializer is None
        self._linger = linger_ms / 1000.0
        self._max_batch = max(int(max_batch_size), 1)
        self._max_request = max(int(max_request_size), 1)
        self._request_timeout_ms = request_timeout_ms
        self._conn: AsyncRpcConnection | None = None
        # The record accumulator (clients/log/accumulator.py): per topic, its partition count,
        # the open batch of each partition and the sticky partition's (`current`: send's fast path).
        self._acc = RecordAccumulator()
        self._topics = self._acc.topics  # topic name -> TopicBatches, read once per send()
        self._keys = KeyPartitioner("murmur2_random")  # aiokafka's DefaultPartitioner
        # Closed batches on their way (clients/log/produce_requests.py): queued, in flight, outcome.
        # A batch not answered within twice request_timeout_ms of closing fails with
        # KafkaTimeoutError: aiokafka expires batches after request_timeout_ms, and a request
        # may wait that long on the server (acks=all), so its "maximum waiting time can be up to
        # 2 * request_timeout_ms".
        # A batch failed with a retriable error (KafkaStorageError) goes again after
        # retry_backoff_ms, as often as it takes within that timeout, as aiokafka's sender does.
        backoff = max(retry_backoff_ms, 1) / 1000.0
        self._requests = ProduceRequests(acks, request_timeout_ms, self._max_request, _MAX_IN_FLIGHT,
                                         2 * request_timeout_ms / 1000.0, 2_147_483_647, backoff, backoff)
        self._retry_timer = None  # the timer that sends the batches whose retry backoff is over
        self._expiry = None  # the timer that runs _expire while batches are on their way
        self._pending: set = set()  # reply futures of the requests in flight
        self._sent_since_yield = 0  # request bytes queued since send() last gave the loop a turn
        self._closed = False
        self._reconnecting = None  # the task that opens a new connection after one was lost

    async def _open(self) -> AsyncRpcConnection:
        try:
            return await AsyncRpcConnection.connect(self._host, self._port, self._client_id,
                                                    credentials=self._credentials, expect_server="minilog",
                                                    ssl_context=self._ssl_context)
        except (OSError, BrokerError, asyncio.TimeoutError) as exc:
            raise KafkaConnectionError(f"cannot connect to {self._host}:{self._port}: {exc}") from None

    async def start(self):
        self._conn = await self._open()

    # ---- a lost connection ----------------------------------------------------------------
    # As aiokafka's sender does, the producer outlives its connection: the batches it had not
    # seen answered go again, first and in order (ProduceRequests.connection_lost), on a new
    # connection opened in the background; batches that find none within the delivery timeout
    # fail with KafkaTimeoutError (_expire). A retried batch may be written twice, as in Kafka
    # without idempotence.
    def _connection_lost(self) -> None:
        self._requests.connection_lost()
        if self._reconnecting is None:
            self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())
        if self._expiry is None and len(self._requests):
            self._schedule_expiry()

    async def _reconnect(self) -> None:
        try:
            while True:
                try:
                    conn = await self._open()
                    break
                except KafkaConnectionError:
                    await asyncio.sleep(_RECONNECT_BACKOFF)
            old, self._conn = self._conn, conn
            if old is not None:
                await old.close()
        finally:
            self._reconnecting = None
        self._send_ready()

    async def _connected(self) -> AsyncRpcConnection:
        """The connection, once there is one again (bounded by request_timeout_ms)."""
        if self._conn.closed:
            self._connection_lost()
            try:
                await asyncio.wait_for(asyncio.shield(self._reconnecting), self._request_timeout_ms / 1000.0)
            except asyncio.TimeoutError:
                raise KafkaTimeoutError(f"no connection to {self._host}:{self._port} within "
                                        f"{self._request_timeout_ms} ms") from None
        return self._conn

    async def stop(self):
        if self._closed:
            return
        self._closed = True
        if self._conn is not None:
            try:
                await self.flush()
            finally:
                if self._expiry is not None:
                    self._expiry.cancel()
                    self._expiry = None
                if self._retry_timer is not None:
                    self._retry_timer.cancel()
                    self._retry_timer = None
                if self._reconnecting is not None:
                    self._reconnecting.cancel()
                await self._conn.close()

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, *exc):
        await self.stop()

    async def _call(self, op, args):
        try:
            return await (await self._connected()).call(op, args)
        except BrokerError as exc:
            raise from_wire(exc.code, exc.message) from None

    async def partitions_for(self, topic):
        n = await self._num_partitions(topic)
        return set(range(n))

    async def _num_partitions(self, topic) -> int:
        return (await self._topic(topic)).num_partitions

    async def _topic(self, topic):
        """The topic's TopicBatches in the accumulator, asking the server for its partitions first."""
        t = self._acc.topics.get(topic)
        if t is None:
            meta = await self._call("metadata", {"topics": [topic], "allow_auto_create": True})
            info = (meta.get("topics") or {}).get(topic) or {}
            n = len(info.get("partitions") or ())
            if not n:
                raise UnknownTopicOrPartitionError(f"topic {topic!r} does not exist")
            t = self._acc.topics.get(topic) or self._acc.add_topic(topic, n, self._keys.null_key_partition(n))
        return t

    async def send(self, topic, value=None, key=None, partition=None, timestamp_ms=None, headers=None):
        """Queue a record; returns a future (RecordFuture) that resolves to its RecordMetadata."""
        # The fast path, taken by the common forms -- send(topic, bytes), with a bytes key=,
        # with partition=, or both -- when no serializer is set: one row appended to the open
        # batch (the sticky partition's, or the named or hashed one's; a record without a key
        # is appended as its value alone) and a size sum.
        if timestamp_ms is None and headers is None and value.__class__ is bytes and self._plain:
            t = self._topics.get(topic)
            if t is not None:
                if key is None and partition is None:
                    batch = t.current
                    size = len(value) + 16
                else:
                    batch = None
                    if key is None or key.__class__ is bytes:
                        if partition is None:
                            partition = self._keys.partition(key, t.num_partitions) if key is not None else -1
                            if partition < 0:
                                partition = t.sticky
                        if partition.__class__ is int and 0 <= partition < t.num_partitions:
                            batch = t.batches[partition]
                    size = len(value) + 16 + (len(key) if key is not None else 0)
                if batch is not None:
                    size += batch.size
                    # A record that would take the batch past max_batch_size starts the next one
                    # (the slow path closes this batch), as aiokafka's batches never pass it.
                    if size <= self._max_batch:
                        rows = batch.rows
                        n = len(rows)
                        if key is None:
                            rows.append(value)   # a plain record (see clients/record_batch.BatchBuilder)
                        else:
                            rows.append((n, batch.dflt, key, value, None))
                            batch.tuples += 1
                        batch.size = size
                        if size == self._max_batch:
                            self._close(batch)
                        return RecordFuture(batch, n)
        return await self._send(topic, value, key, partition, timestamp_ms, headers)

    async def _send(self, topic, value, key, partition, timestamp_ms, headers):
        if self._conn is None:
            raise KafkaError("the producer is not started: await producer.start() first")
        if self._value_serializer is not None:
            value = self._value_serializer(value)
        if self._key_serializer is not None:
            key = self._key_serializer(key)
        value = _as_bytes(value, "value")
        key = _as_bytes(key, "key")
        t = self._acc.topics.get(topic) or await self._topic(topic)
        n = t.num_partitions
        keyless = False
        if partition is None:
            partition = self._keys.partition(key, n) if key is not None else -1
            if partition < 0:
                partition = t.sticky
                keyless = True
        elif not 0 <= partition < n:
            raise UnknownTopicOrPartitionError(f"topic {topic!r} has {n} partitions, no partition {partition}")
        if headers:
            headers = [(str(k), _as_bytes(v, "header value")) for k, v in headers]
        else:
            headers = None
        size = record_size(key, value, headers)
        if size > self._max_request:
            raise MessageSizeTooLargeError(
                f"a record of about {size} bytes is larger than max_request_size ({self._max_request})")
        batch = t.batches[partition]
        while batch is not None and batch.rows and batch.size + size > self._max_batch:
            # Full for this record: it opens the next batch (alone, if larger than
            # max_batch_size), so no batch grows past the size asked for, as in aiokafka.
            self._close(batch)
            if keyless:
                partition = t.sticky  # closing the sticky batch moved keyless records on
            batch = t.batches[partition]
        if batch is None:
            if self._sent_since_yield >= _YIELD_BYTES or len(self._pending) >= _MAX_IN_FLIGHT:
                # A send loop never suspends by itself (the fast path awaits nothing): give the
                # loop a turn every _YIELD_BYTES, so requests leave as the loop goes instead of
                # all at its end, and wait while _MAX_IN_FLIGHT requests are unanswered, so memory
                # stays bounded (aiokafka's send waits for a full batch to drain the same way).
                self._sent_since_yield = 0
                await asyncio.sleep(0)
                while len(self._pending) >= _MAX_IN_FLIGHT:
                    await asyncio.wait(self._pending, return_when=asyncio.FIRST_COMPLETED)
                batch = t.batches[partition]
        if batch is None:
            loop = asyncio.get_running_loop()
            batch = self._acc.opened(t, _Batch(topic, partition, loop.create_future()))
            batch.handle = (loop.call_later(self._linger, self._close, batch) if self._linger > 0
                            else loop.call_soon(self._close, batch))
        index = batch.append(key, value, timestamp_ms, headers, size)
        if batch.size >= self._max_batch:
            self._close(batch)
        return RecordFuture(batch, index)

    async def send_and_wait(self, topic, value=None, key=None, partition=None, timestamp_ms=None, headers=None):
        fut = await self.send(topic, value, key, partition, timestamp_ms, headers)
        return await fut

    def create_batch(self):
        return BatchBuilder(self._max_batch)

    async def send_batch(self, batch: BatchBuilder, topic, *, partition):
        n = await self._num_partitions(topic)
        if not 0 <= partition < n:
            raise UnknownTopicOrPartitionError(f"topic {topic!r} has {n} partitions, no partition {partition}")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._requests.add(topic, partition, batch._build(), _SentBatch(topic, partition, batch._first, fut),
                           loop.time())
        self._send_ready()
        return fut

    def _close(self, batch: _Batch) -> None:
        if not self._acc.closing(self._acc.topics[batch.topic], batch):
            return  # closed already (full, or by flush) before its timer ran
        batch.handle.cancel()
        # The request core keeps the batch's future, not the batch: the batch's rows are garbage
        # once packed unless a RecordFuture holds them, and keeping ~100 rows per batch in flight
        # alive made the cyclic collector's passes cost 0.1-0.2 us per record.
        self._requests.add(batch.topic, batch.partition, batch.pack(), batch.future, batch.future.get_loop().time())
        self._send_ready()

    def _send_ready(self) -> None:
        """Write the produce requests `ProduceRequests` makes of the queued batches."""
        requests = self._requests
        conn = self._conn
        if conn.closed:
            if len(requests):
                self._connection_lost()
            return
        loop = asyncio.get_running_loop()
        while True:
            request = requests.next_request(loop.time())
            if request is None:
                if self._expiry is None and len(requests):
                    self._schedule_expiry()
                retry_at = requests.retry_at()
                if retry_at is not None and self._retry_timer is None:
                    self._retry_timer = loop.call_at(retry_at, self._retry_due)
                return
            for item in request.items:
                self._sent_since_yield += len(item[2])
            try:
                reply = conn.send("produce", request.args, want_reply=self._acks != 0)
            except BrokerError as exc:
                self._settle(requests.failed(request, (exc.code, exc.message)))
                continue
            delivered = requests.sent(request, loop.time(), reply)
            if delivered:
                self._settle(delivered)
            else:
                self._pending.add(reply)
                reply.add_done_callback(partial(self._on_reply, request))

    def _retry_due(self) -> None:
        self._retry_timer = None
        self._send_ready()

    def _on_reply(self, request, reply) -> None:
        self._pending.discard(reply)
        if reply.cancelled():
            outcomes = self._requests.failed(request, (DELIVERY_TIMED_OUT, "produce request cancelled"))
        elif isinstance(reply.exception(), ConnectionClosed):
            # Every unanswered batch of the lost connection goes again on a new one. The first
            # such reply re-queues them all; later ones (or any after a reconnect) add nothing.
            if self._conn.closed:
                self._connection_lost()
            outcomes = []
        elif reply.exception() is not None:
            exc = reply.exception()
            outcomes = self._requests.failed(request, (getattr(exc, "code", "CONNECTION_CLOSED"),
                                                       getattr(exc, "message", str(exc))), self._loop_time())
        else:
            outcomes = self._requests.completed(request, reply.result(), self._loop_time())
        self._settle(outcomes)
        if self._requests.ready or self._requests.retrying:
            self._send_ready()  # batches held back by the in-flight limit, or to be retried

    @staticmethod
    def _loop_time() -> float:
        return asyncio.get_running_loop().time()

    def _schedule_expiry(self) -> None:
        # Checked a few times per delivery timeout (at most every second), only while batches
        # are on their way.
        period = min(max(self._requests.delivery_timeout / 8, 0.01), 1.0)
        self._expiry = asyncio.get_running_loop().call_later(period, self._expire)

    def _expire(self) -> None:
        """Fail the batches not delivered within the delivery timeout (KafkaTimeoutError)."""
        self._expiry = None
        requests = self._requests
        outcomes, replies = requests.expire(asyncio.get_running_loop().time())
        for reply in replies:
            self._pending.discard(reply)
            reply.cancel()  # a reply that still comes is dropped (the request is no longer in flight)
        self._settle(outcomes)
        if requests.ready:
            self._send_ready()
        if self._expiry is None and len(requests):
            self._schedule_expiry()

    @staticmethod
    def _settle(outcomes) -> None:
        """Resolve each batch's future from its outcome: a `_Batch`'s future with the base
        offset (its RecordFutures derive their metadata), a `send_batch` one with RecordMetadata."""
        for target, base, error in outcomes:
            error = None if error is None else _error(error)
            if target.__class__ is _SentBatch:
                target.settle(base, error)
            elif not target.done():
                if error is not None:
                    target.set_exception(error)
                else:
                    target.set_result(base)

    async def flush(self):
        """Send every open batch and wait until all requests in flight are answered."""
        for _, batch in list(self._acc.open):
            self._close(batch)
        while self._pending or self._requests.ready or self._requests.retrying:
            if self._pending:
                await asyncio.gather(*list(self._pending), return_exceptions=True)
            elif not self._requests.ready and self._reconnecting is None:
                # Only batches waiting out a retry's backoff: wait until the first is due (its
                # timer sends it), looking again at least every second for expired ones.
                loop = asyncio.get_running_loop()
                await asyncio.sleep(min(max(self._requests.retry_at() - loop.time(), 0.0), 1.0))
                self._send_ready()
            elif self._reconnecting is not None:
                # No connection: wait for the new one, looking again now and then, since the
                # batches waiting for it may expire meanwhile.
                await asyncio.wait({self._reconnecting}, timeout=_RECONNECT_BACKOFF)
            else:
                self._send_ready()
            await asyncio.sleep(0)  # let the reply callbacks resolve the record futures


AIOProducer = AIOKafkaProducer
