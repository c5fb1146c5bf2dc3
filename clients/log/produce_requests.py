"""Produce requests, sans-IO: closed batches in, `produce` request arguments out; replies,
failures and the passing of time in, one outcome per batch out.

Both log producers (`clients/log/producer.py`, blocking, and `clients/aio_log/producer.py`,
asyncio) hand their closed batches to a `ProduceRequests` and send what it returns; it owns
the send queue, the requests in flight and the mapping of a reply back to its batches, and
knows nothing of sockets, futures, callbacks or clocks (the caller passes `now`). So the
rules below exist once, and `tests/log_clients/test_log_clients_produce_requests.py` checks
them without a server.

- `add(topic, partition, data, batch, now)`: a closed, packed batch joins the send queue
  (`ready`), in the order batches closed. `batch` is the producer's own object, handed back in
  that batch's outcome.
- `next_request()`: the next `ProduceRequest` to write, or None while nothing is ready or
  `max_in_flight` requests are unanswered. A request carries at most one batch per partition
  (so its reply maps back by topic and partition) and stays within `max_request` bytes (one
  batch at least); a partition whose next batch is left out has all its later batches left
  out of that request too, so each partition's batches reach the server in the order they
  closed.
- `single(topic, partition, data, batch, now)`: `add` and `next_request` at once, for the
  one batch closed while nothing is queued or waiting to be retried and the in-flight limit
  has room (the caller checks): the request that carries it alone, whose frame
  `encode_single` makes without building its arguments (`args` is None until
  the request goes back to the queue, which builds them as for any other).
  `encode_single(rid, topic, partition, data)` may come first: a linger-0 producer, which
  sends nearly every record so, writes the frame before its bookkeeping, then calls
  `sent_single` (`single` and `sent` in one step) once it is written.
- `sent(request, now, token)`: it was written (`token`: the caller's handle for its reply, the
  request id). With `acks` 0 no reply comes, and the outcomes returned deliver its batches
  (offset unknown); otherwise it is in flight until `completed` or `failed`.
- `unsent(request)`: it could not be written: its batches go back to the front of the queue.
- `completed(request, result)`: the server's reply (`{"results": [[topic, partition,
  base_offset, error], ...]}`, docs/PROTOCOL.md): an outcome per batch. A reply that names no
  result for a batch, or a malformed one, fails that batch; a reply to a request no longer in
  flight (timed out, or its connection lost and its batches queued again) gives nothing.
- `failed(request, error)`: the whole request failed (an error reply, a closed connection).
- Retries, as librdkafka's: a batch that fails with a retriable error (`RETRIABLE`: the
  server's STORAGE_ERROR, Kafka's KAFKA_STORAGE_ERROR) is not an outcome while it has retries
  left (`retries`, librdkafka's `retries` / `message.send.max.retries`) and `now` is given:
  it waits in `retrying` for its backoff (`retry_backoff`, doubling per attempt up to
  `retry_backoff_max`, as librdkafka's `retry.backoff.ms` / `retry.backoff.max.ms`), then
  leaves again before every batch queued behind it, and ahead of its own partition's later
  batches, which wait for it. `retry_at()` says when the next one is due. It fails with
  its last error once out of retries, and with DELIVERY_TIMED_OUT once the delivery timeout
  passes (naming that error). Other errors fail their batches at once, as in librdkafka:
  a message too large, a corrupt batch, a denied or deleted topic will not change by waiting.
- `connection_lost()`: the unanswered requests' batches go back to the front of the queue, in
  the order they were sent, to leave again on the next connection. Their replies were lost,
  not necessarily their appends, so a batch may be stored twice (at-least-once, as Kafka
  without idempotence).
- `expire(now)`: with a `delivery_timeout`, fails queued batches closed longer ago than that
  and requests unanswered for that long; returns their outcomes and the tokens of the expired
  requests (whose late replies the caller must drop).
- `purge()`: fails every queued batch; `purge_in_flight()` every unanswered one, and names
  those requests so their replies are dropped (confluent-kafka's `purge(in_flight=True)`).

An outcome is a tuple `(batch, base_offset, error)`: `base_offset` is the offset of the
batch's first record (-1 when unknown), `error` None or a wire error pair `(code, message)` --
the server's codes (`clients/protocol/errors.ErrorCode`) or this module's local ones
(`CONNECTION_CLOSED`, `DELIVERY_TIMED_OUT`, `PURGED`, `PURGED_IN_FLIGHT`) -- which each producer turns into its
library's error type. Whether an error is worth retrying is the error type's business
(`KafkaError.retriable()`); this core retries what a lost connection left unanswered, and
the batches failed with a retriable error (above).
"""

import struct

import msgpack

from ..protocol.errors import ErrorCode
from ..protocol.framing import LENGTH
from ..protocol.frames import REQUEST

__all__ = ["ProduceRequest", "ProduceRequests", "CONNECTION_CLOSED", "DELIVERY_TIMED_OUT", "PURGED",
           "PURGED_IN_FLIGHT", "RETRIABLE"]

CONNECTION_CLOSED = "CONNECTION_CLOSED"    # the connection broke before the reply came
DELIVERY_TIMED_OUT = "DELIVERY_TIMED_OUT"  # not delivered within the delivery timeout
PURGED = "PURGED"                          # dropped from the queue by purge()
PURGED_IN_FLIGHT = "PURGED_IN_FLIGHT"      # given up while in flight, by purge_in_flight()
_NO_RESULT = "INTERNAL_ERROR"              # a reply with no (or a malformed) result for a batch
# The server's per-partition produce errors that librdkafka retries: STORAGE_ERROR (disk full or
# an I/O error, nothing stored) is Kafka's KAFKA_STORAGE_ERROR, retriable there. NOT_FOUND (the
# topic was deleted), MESSAGE_TOO_LARGE, CORRUPT_MESSAGE, BAD_REQUEST and NOT_AUTHORIZED fail
# at once; so does INTERNAL_ERROR, a server bug that a retry would only repeat.
RETRIABLE = frozenset({ErrorCode.STORAGE_ERROR})
_pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack
_REQUEST_HEAD = b"\x94" + _pack(REQUEST)   # [REQUEST, rid, "produce", args]: before the id
_SINGLE_HEADS = 1024                        # (topic, partition) frame middles kept by encode_single
# msgpack's smallest encodings of an unsigned int (a request id) and of a bin header.
_FIXINT = [bytes((i,)) for i in range(0x80)]
_UINT8, _UINT16, _UINT32 = struct.Struct(">BB"), struct.Struct(">BH"), struct.Struct(">BI")
_BIN8 = [bytes((0xC4, n)) for n in range(0x100)]


class ProduceRequest:
    """One `produce` request: its arguments (`args`, ready to send) and the queue items it carries."""

    __slots__ = ("args", "items", "sent_at", "token", "retried")

    def __init__(self, args: dict, items: list, sent_at: float = 0.0, token=None):
        self.args = args
        self.items = items   # (topic, partition, data, batch, closed_at), in the order they closed
        self.sent_at = sent_at   # when it was written (`sent`), and its reply's handle
        self.token = token
        self.retried = ()    # the `retrying` entries it carries (batches sent again)


class ProduceRequests:
    """A producer's closed batches on their way: queued (`ready`), then in flight, then an outcome."""

    __slots__ = ("acks", "timeout_ms", "max_request", "max_in_flight", "delivery_timeout", "ready",
                 "in_flight", "_requests", "retries", "retry_backoff", "retry_backoff_max", "retrying",
                 "_attempts", "_order", "_added", "_heads")

    def __init__(self, acks: int, timeout_ms: int, max_request: int, max_in_flight: int,
                 delivery_timeout: float | None = None, retries: int = 0, retry_backoff: float = 0.1,
                 retry_backoff_max: float = 1.0):
        if acks not in (-1, 0, 1):
            raise ValueError(f"acks must be -1, 0 or 1, got {acks!r}")
        self.acks = acks
        self.timeout_ms = timeout_ms              # the server's wait for acks=all, sent with each request
        self.max_request = max(int(max_request), 1)  # bytes of batch data one request may carry
        self.max_in_flight = max(int(max_in_flight), 1)
        self.delivery_timeout = delivery_timeout  # seconds from closing a batch to its outcome (None: no limit)
        self.ready: list = []                     # (topic, partition, data, batch, closed_at), oldest first
        self.in_flight = 0                        # requests written and not answered
        self._requests: dict[ProduceRequest, None] = {}  # those requests, in the order they were sent
        self.retries = max(int(retries), 0)       # times a batch is sent again after a retriable error
        self.retry_backoff = retry_backoff        # seconds before its first retry; doubles per attempt,
        self.retry_backoff_max = retry_backoff_max  # up to this
        # Batches failed with a retriable error, waiting to go again, in the order they closed:
        # (order, item, not before, error). They go before `ready`.
        self.retrying: list = []
        self._attempts: dict = {}                 # batch -> retries made so far (only batches retried)
        self._order: dict = {}                    # batch -> the order it closed in, until its outcome
        self._added = 0
        self._heads: dict = {}                    # (topic, partition) -> encode_single's bytes after the id

    # ---- batches in, requests out ---------------------------------------------------------
    def add(self, topic: str, partition: int, data: bytes, batch, now: float) -> None:
        self._added += 1
        self._order[batch] = self._added
        self.ready.append((topic, partition, data, batch, now))

    def next_request(self, now: float | None = None) -> ProduceRequest | None:
        """The next request to write (`now`: the clock, for retries' backoff; None: all are due)."""
        ready = self.ready
        if self.retrying:
            return self._next_with_retries(now)
        if not ready or self.in_flight >= self.max_in_flight:
            return None
        first = ready[0]
        if len(ready) == 1:  # the common case: one batch closed since the last request
            self.ready = []
            return self._request([first])
        items: list = []
        self._add_ready(items, set(), 0)
        return self._request(items)

    def single(self, topic: str, partition: int, data, batch, now: float) -> ProduceRequest:
        """`add` then `next_request` for a batch that closed alone: nothing `ready` or
        `retrying`, fewer than `max_in_flight` requests unanswered (the caller has checked).
        The request's `args` are None: `encode_single` makes its frame."""
        self._added += 1
        self._order[batch] = self._added
        return ProduceRequest(None, [(topic, partition, data, batch, now)])

    def sent_single(self, topic: str, partition: int, data, batch, now: float, token) -> ProduceRequest:
        """`single` then `sent(request, now, token)` in one step, for a one-batch request already
        written (its frame from `encode_single`) whose reply will come (`acks` not 0): the
        request, now in flight."""
        self._added += 1
        self._order[batch] = self._added
        request = ProduceRequest(None, [(topic, partition, data, batch, now)], now, token)
        self._requests[request] = None
        self.in_flight += 1
        return request

    def encode_single(self, rid: int, topic: str, partition: int, data) -> bytes:
        """The frame of the one-batch request `single` makes of (`topic`, `partition`, `data`),
        with request id `rid` (0 when no reply is wanted): byte for byte what
        `ClientConnectionState.encode_request` makes of its arguments, from bytes kept per
        topic and partition and one join. It may be made before `single` is called: a linger-0
        producer writes the frame first and does its bookkeeping after."""
        middle = self._heads.get((topic, partition))
        if middle is None:
            if len(self._heads) >= _SINGLE_HEADS:
                self._heads.clear()
            # "produce", the args map up to the batch: what follows the request id.
            middle = self._heads[(topic, partition)] = (
                _pack("produce") + b"\x83" + _pack("acks") + _pack(self.acks) + _pack("timeout_ms")
                + _pack(self.timeout_ms) + _pack("data") + b"\x91\x93" + _pack(topic) + _pack(partition))
        # The batch's bin header and the id's msgpack int from tables and struct, not msgpack:
        # after a pause, the first call into msgpack's packer costs ~1 us of cold code.
        n = len(data)
        blob = _BIN8[n] if n < 0x100 else (b"\xc5" + n.to_bytes(2, "big") if n < 0x10000 else
                                           b"\xc6" + n.to_bytes(4, "big"))
        if rid < 0x80:
            rid_bytes = _FIXINT[rid]
        elif rid < 0x10000:
            rid_bytes = _UINT16.pack(0xCD, rid) if rid >= 0x100 else _UINT8.pack(0xCC, rid)
        elif rid < 0x100000000:
            rid_bytes = _UINT32.pack(0xCE, rid)
        else:
            rid_bytes = _pack(rid)
        return b"".join((LENGTH.pack(len(_REQUEST_HEAD) + len(rid_bytes) + len(middle) + len(blob) + n),
                         _REQUEST_HEAD, rid_bytes, middle, blob, data))

    def _add_ready(self, items: list, seen: set, size: int) -> None:
        """Move the ready batches that fit into `items` (holding `size` bytes of the partitions
        in `seen` so far), in the order they closed. A partition with a batch left out (the
        request is full, or it is in `seen`) keeps its later batches back too: each partition's
        batches go in order."""
        limit, rest = self.max_request, []
        for item in self.ready:
            tp = (item[0], item[1])
            if tp in seen or (items and size + len(item[2]) > limit):
                seen.add(tp)
                rest.append(item)
            else:
                seen.add(tp)
                items.append(item)
                size += len(item[2])
        self.ready = rest

    def _next_with_retries(self, now: float | None) -> ProduceRequest | None:
        """next_request while batches wait to be retried: those due go first, in the order they
        closed; one still backing off holds its partition's later batches back."""
        if self.in_flight >= self.max_in_flight:
            return None
        items, seen, size, limit = [], set(), 0, self.max_request
        waiting, taken = [], []
        for entry in self.retrying:
            item = entry[1]
            tp = (item[0], item[1])
            if tp in seen or (now is not None and entry[2] > now) or (items and size + len(item[2]) > limit):
                seen.add(tp)
                waiting.append(entry)
            else:
                seen.add(tp)
                items.append(item)
                taken.append(entry)
                size += len(item[2])
        self.retrying = waiting
        self._add_ready(items, seen, size)
        if not items:
            return None
        request = self._request(items)
        request.retried = taken
        return request

    def retry_at(self) -> float | None:
        """When the next batch waiting to be retried is due (None: none waits)."""
        return min(entry[2] for entry in self.retrying) if self.retrying else None

    def _retry(self, item: tuple, error: tuple, now: float | None) -> bool:
        """Queue `item` (failed with `error`) to go again if the error is retriable and it has
        retries left; False: its outcome is the error."""
        if now is None or error[0] not in RETRIABLE:
            return False
        batch = item[3]
        done = self._attempts.get(batch, 0)
        if done >= self.retries:
            self._attempts.pop(batch, None)
            return False
        self._attempts[batch] = done + 1
        backoff = min(self.retry_backoff * (2 ** done), self.retry_backoff_max)
        self._wait_retry((self._order.get(batch, 0), item, now + backoff, error))
        return True

    def _wait_retry(self, entry: tuple) -> None:
        """File `entry` among the batches waiting to be retried, by the order batches closed
        (as librdkafka puts retried messages back in their partition queue by message id)."""
        retrying = self.retrying
        at = len(retrying)
        while at and retrying[at - 1][0] > entry[0]:   # nearly always appended at the end
            at -= 1
        retrying.insert(at, entry)

    def _outcome(self, item: tuple, base: int, error) -> tuple:
        batch = item[3]
        self._order.pop(batch, None)
        if self._attempts:
            self._attempts.pop(batch, None)
        return (batch, base, error)

    def _request(self, items: list) -> ProduceRequest:
        return ProduceRequest({"acks": self.acks, "timeout_ms": self.timeout_ms,
                               "data": [[topic, partition, data] for topic, partition, data, _, _ in items]}, items)

    def sent(self, request: ProduceRequest, now: float, token=None) -> list:
        """`request` was written; returns its outcomes when no reply will come (acks 0)."""
        if self.acks == 0:
            return [self._outcome(item, -1, None) for item in request.items]
        request.sent_at = now
        request.token = token if token is not None else True

        self._requests[request] = None
        self.in_flight += 1
        return []

    def unsent(self, request: ProduceRequest) -> None:
        """`request` could not be written: its batches go first in the queue again (those it
        retried back among the batches waiting to be retried, in their places)."""
        if request.retried:
            again = {id(entry[1]) for entry in request.retried}
            for entry in request.retried:
                self._wait_retry(entry)
            self.ready = [item for item in request.items if id(item) not in again] + self.ready
        else:
            self.ready = request.items + self.ready

    # ---- replies in, outcomes out -----------------------------------------------------------
    def _answered(self, request: ProduceRequest) -> bool:
        if request not in self._requests:
            return False
        del self._requests[request]
        self.in_flight -= 1
        return True

    def completed(self, request: ProduceRequest, result, now: float | None = None) -> list:
        """The reply to `request`: one outcome `(batch, base_offset, error)` per batch, but for
        the batches it queues to be retried (a retriable error, retries left, `now` given)."""
        items = request.items
        if len(items) == 1 and result.__class__ is dict:
            # One batch stored (a linger-0 producer's usual reply, one per record): its outcome,
            # without the map, and with `_answered` and `_outcome` written out.
            results = result.get("results")
            if results.__class__ is list and len(results) == 1:
                r, item = results[0], items[0]
                if (r.__class__ is list and len(r) == 4 and r[3] is None and r[2].__class__ is int
                        and r[0] == item[0] and r[1] == item[1]):
                    requests = self._requests
                    if request not in requests:
                        return []
                    del requests[request]
                    self.in_flight -= 1
                    batch = item[3]
                    self._order.pop(batch, None)
                    if self._attempts:
                        self._attempts.pop(batch, None)
                    return [(batch, r[2], None)]
        if not self._answered(request):
            return []
        results = result.get("results") if isinstance(result, dict) else None
        by_tp = {}
        if isinstance(results, (list, tuple)):
            for r in results:
                if isinstance(r, (list, tuple)) and len(r) >= 3:
                    by_tp[(r[0], r[1])] = r
        outcomes = []
        for item in request.items:
            topic, partition = item[0], item[1]
            r = by_tp.get((topic, partition))
            error = r[3] if r is not None and len(r) > 3 else None
            if error is not None:
                if isinstance(error, (list, tuple)) and len(error) >= 2:
                    error = (str(error[0]), str(error[1]))
                else:
                    error = (_NO_RESULT, f"unexpected error field {error!r:.100}")
                if not self._retry(item, error, now):
                    outcomes.append(self._outcome(item, -1, error))
            elif r is None or r[2].__class__ is not int:
                outcomes.append(self._outcome(item, -1, (_NO_RESULT, f"the server's produce reply gave no offset "
                                                                     f"for {topic}-{partition}")))
            else:
                outcomes.append(self._outcome(item, r[2], None))
        return outcomes

    def failed(self, request: ProduceRequest, error: tuple, now: float | None = None) -> list:
        """`request` failed as a whole (an error reply, or it could not be sent): each batch fails,
        or is queued to be retried (as in `completed`)."""
        if not self._answered(request) and request.token is not None:
            return []  # answered, timed out or given back to the queue already
        return [self._outcome(item, -1, error) for item in request.items if not self._retry(item, error, now)]

    def connection_lost(self) -> None:
        """The connection broke: unanswered requests' batches go back to the front, in order."""
        retry = [item for request in self._requests for item in request.items]
        self._requests.clear()
        self.in_flight = 0
        if retry and self.retrying:
            # Among batches waiting to be retried, which may have closed after some of these.
            for item in retry:
                self._wait_retry((self._order.get(item[3], 0), item, float("-inf"),
                                  (CONNECTION_CLOSED, "the connection was lost")))
        elif retry:
            self.ready = retry + self.ready

    def expire(self, now: float) -> tuple[list, list]:
        """Fail what has waited longer than `delivery_timeout`: (outcomes, expired request tokens)."""
        timeout = self.delivery_timeout
        if timeout is None:
            return [], []
        outcomes, tokens = [], []
        limit = now - timeout
        if any(entry[1][4] <= limit for entry in self.retrying):
            kept = []
            for entry in self.retrying:
                if entry[1][4] <= limit:
                    outcomes.append(self._outcome(entry[1], -1, (DELIVERY_TIMED_OUT, f"not delivered within the delivery "
                                                                                    f"timeout; last error: {entry[3][0]}: "
                                                                                    f"{entry[3][1]}")))
                else:
                    kept.append(entry)
            self.retrying = kept
        if any(item[4] <= limit for item in self.ready):
            kept = []
            for item in self.ready:
                if item[4] <= limit:
                    outcomes.append(self._outcome(item, -1, (DELIVERY_TIMED_OUT, "not sent within the delivery "
                                                                                 "timeout: no connection to the server")))
                else:
                    kept.append(item)
            self.ready = kept
        while self._requests:
            request = next(iter(self._requests))  # the oldest
            if request.sent_at > limit:
                break
            self._answered(request)
            tokens.append(request.token)
            outcomes.extend(self._outcome(item, -1, (DELIVERY_TIMED_OUT, "no produce reply within the delivery timeout"))
                            for item in request.items)
        return outcomes, tokens

    def purge(self) -> list:
        """Drop every queued batch, those waiting to be retried too (not those in flight): their
        outcomes, each failed with PURGED."""
        ready, self.ready = [entry[1] for entry in self.retrying] + self.ready, []
        self.retrying = []
        return [self._outcome(item, -1, (PURGED, "purged from the send queue")) for item in ready]

    def purge_in_flight(self) -> tuple[list, list]:
        """Give up every unanswered request: (their batches' outcomes, failed with
        PURGED_IN_FLIGHT, and the requests' tokens, whose replies the caller must drop)."""
        outcomes, tokens = [], []
        for request in self._requests:
            tokens.append(request.token)
            outcomes.extend(self._outcome(item, -1, (PURGED_IN_FLIGHT, "purged while in flight"))
                            for item in request.items)
        self._requests.clear()
        self.in_flight = 0
        return outcomes, tokens

    def __len__(self) -> int:
        """Batches queued (to be retried, too) or in flight."""
        return len(self.retrying) + len(self.ready) + sum(len(r.items) for r in self._requests)
