"""FetchSession: a log consumer's fetching, without I/O (sans-IO, in the manner of h11).

Both log consumers are thin adapters over it: `clients/log/consumer.py`'s `Consumer`
(confluent-kafka's API) and `clients/aio_log/consumer.py`'s `AIOKafkaConsumer` (aiokafka's).
The session holds, for every assigned partition, where the application is (`position`) and
where the data held ends (`fetch_offset`), and it:

- builds the `fetch` request's arguments (`fetch_request`) and returns them with a token; the
  adapter sends them however it sends, and hands the reply back (`accept`) with that token;
- keeps each reply's record bytes undecoded until the application asks for records, then
  decodes one partition result at a time (`take`) into the adapter's record objects, made by
  the adapter's `RecordBuilder` (confluent's `Message`, aiokafka's `ConsumerRecord`);
- checks every batch's CRC and turns a batch that cannot be read into a `FetchEvent` at its
  offset, in order after the records before it: with `check_crcs` the partition stops there
  (its position stays at the bad batch until a seek), without it exactly that batch is
  skipped;
- drops what was fetched for a partition whenever it is repositioned (assign, seek, pause,
  unassign): each partition has an *epoch*, bumped by every reposition, and fetched data,
  requests in flight and decoded records all carry the epoch they were fetched under;
- with a server that keeps fetch sessions (`continued`, the hello's `fetch-session` feature),
  keeps a second fetch in flight that continues where the first one's answer ends (its
  offsets nil: the server knows where that is), so that a fetch is parked on the server at
  every moment. A partition's offset is sent again (and resets the server's position)
  whenever it was repositioned, left out of the previous request, or a reply did not continue
  where the data held ends; each reply row says where it was read from, and a row that does
  not start at `fetch_offset` is dropped. A server that refuses the session
  (`fetch_refused`) leaves one fetch in flight, as before;
- with a server that answers a fetch more than once (the hello's `fetch-answers`) and
  `answers` above 1 (the blocking consumer's streamed fetches), keeps one such fetch in flight
  until its last answer (`more` in each answer, `_Token.left`), and sends its successor, which
  continues it, when one answer is left: one request serves a live partition's appends.

It leaves to the adapters the socket or transport, timers and waiting, where a starting
offset comes from (committed offsets, `auto.offset.reset`), group membership, and how an
event reaches the application (an error `Message` in the stream, or a raised exception).
"""

import collections
import gc

from ..record_batch import HEADER_SIZE, LOG_OVERHEAD, BatchError, check_crc, check_structure, read_header

# Raw fetched bytes held before the session stops asking for more.
PREFETCH_LIMIT = 64 * 1024 * 1024

# FetchEvent kinds.
CORRUPT = "corrupt"            # a batch that cannot be read, at its base offset
PARTITION_EOF = "eof"          # the application has every record up to the high watermark

# Whether the consumers continue fetches in the server's fetch session when it keeps them.
# Off: on a loaded machine it looked a few per cent better (fourteen interleaved pairs), but on
# a quiet one the latency bench's p50 was 349-398 µs with it against 268-285 µs without, in
# six interleaved pairs: a reply per record costs the consumer a wake-up per record
# (docs/clients-minilog.md, "Latency at 10,000 records/s"). Off, the consumers keep one fetch
# in flight.
CONTINUE_FETCHES = False
# Fetch requests kept in flight in a fetch session: the one parked on the server and the one
# queued behind it, which continues where the first one's answer ends.
CONTINUED_WINDOW = 2
# The session id this client's continued fetches name (one per connection is all it needs).
SESSION_ID = 1
# Whether the blocking consumer streams its fetches when the server can (the hello's
# `fetch-answers` feature): one fetch asks for up to STREAM_ANSWERS answers, and the server
# parks it again after each, so a record that lands finds it parked without the consumer
# sending a fetch per reply (docs/clients-minilog.md, "Streamed fetches").
STREAM_FETCHES = True
STREAM_ANSWERS = 32

_gc_isenabled, _gc_disable, _gc_enable = gc.isenabled, gc.disable, gc.enable
# Results at least this large are decoded with the cyclic GC paused (`_decode`).
_GC_PAUSE_BYTES = 8192
_DECODE_ERRORS = (BatchError, ValueError, TypeError, IndexError)
_BYTES = (bytes, bytearray, memoryview)


class FetchEvent:
    """Something other than records that the session hands out in a partition's stream."""

    __slots__ = ("kind", "topic", "partition", "offset", "text")

    def __init__(self, kind, topic, partition, offset, text):
        self.kind, self.topic, self.partition, self.offset, self.text = kind, topic, partition, offset, text

    def __repr__(self):
        return f"FetchEvent({self.kind}, {self.topic} [{self.partition}] at {self.offset}: {self.text})"


class PartitionFetch:
    """Fetch state of one assigned partition. Adapters subclass it to keep their own fields
    (a committed offset, a starting-offset wish) beside these."""

    __slots__ = ("topic", "partition", "position", "fetch_offset", "epoch", "paused", "failed", "eof_sent",
                 "hw", "log_start", "chained")

    def __init__(self, topic, partition):
        self.topic = topic
        self.partition = partition
        self.position = None      # the next offset the application gets; None: not resolved yet
        self.fetch_offset = None  # the next offset to ask the server for (where held data ends)
        self.epoch = 0            # bumped by every reposition: older fetched data is dropped
        self.paused = False
        self.failed = False       # no more fetches (a corrupt batch, an error) until a seek
        self.eof_sent = False
        self.hw = -1
        self.log_start = -1
        # The epoch under which the server's fetch session continues at this partition's
        # fetch_offset (its previous request named it, nothing broke since): the next request
        # may leave its offset nil. Any other value: send the offset.
        self.chained = None


class _Token(list):
    """What `fetch_request` hands the adapter with a request: `(part, offset or None, epoch)`
    per partition (None: continued in the server's fetch session), and for a streamed fetch
    how many more answers it may still get (`left`)."""

    __slots__ = ("continued", "left")


class RecordBuilder:
    """Turns one batch's records into the adapter's record objects.

    `records(topic, partition, header, body, offset)` decodes `body` (the msgpack array of
    `[offset_delta, timestamp_delta, key, value, headers]` after the header) into a sequence
    of records, leaving out those before `offset` (a batch may start before the offset asked
    for). It raises BatchError, ValueError, TypeError or IndexError when the body does not
    decode. `next_offset(record)` is the offset after that record. `event(event)` is what a
    `FetchEvent` becomes when it is handed out in the stream (`take` without `stop_at_event`).
    """

    def records(self, topic, partition, header, body, offset):
        raise NotImplementedError

    def next_offset(self, record) -> int:
        raise NotImplementedError

    def event(self, event: FetchEvent):
        return event


class FetchSession:
    """One consumer's fetch state; see the module docstring. Not thread-safe, does no I/O."""

    def __init__(self, builder: RecordBuilder, *, max_wait_ms=500, min_bytes=1, max_bytes=52428800,
                 partition_max_bytes=1048576, check_crcs=True, partition_eof=False,
                 prefetch_limit=PREFETCH_LIMIT):
        self.builder = builder
        self.max_wait_ms = max_wait_ms
        self.min_bytes = min_bytes
        self.max_bytes = max_bytes
        self.partition_max_bytes = partition_max_bytes
        self.check_crcs = check_crcs
        self.partition_eof = partition_eof
        self.prefetch_limit = prefetch_limit
        self.parts: dict = {}       # key (the adapter's (topic, partition)) -> PartitionFetch
        self.in_flight = 0          # fetch requests sent and not answered
        # Whether the server keeps fetch sessions (docs/PROTOCOL.md, "fetch"); the adapter sets
        # it from the hello, and a refusal (`fetch_refused`) clears it.
        self.continued = False
        # Answers each fetch asks for (more than 1: streamed; only in a fetch session); the
        # adapter sets it, and the newest request's token says how many it may still get.
        self.answers = 1
        self._newest = None
        # Whether the last reply left every partition it answered at its high watermark.
        self.at_end = False
        self.dirty = False          # positions moved under a fetch in flight: fetch again now
        # Fetched bytes held: undecoded, or decoded into records not all handed out yet (a
        # result's bytes count until its last chunk is taken), bounded by prefetch_limit.
        self.held_bytes = 0
        # Fetched, undecoded: (part, records bytes | FetchEvent | None for an EOF check, offset, epoch).
        self._raw = collections.deque()
        # Decoded: [part, records list | FetchEvent, next index, epoch, bytes it releases when gone].
        self._chunks = collections.deque()
        # Chunks `take` set aside while it takes only some partitions; back in front when it returns.
        self._aside: list = []

    # ---- the assignment and positions --------------------------------------------------------
    def replace(self, parts: dict) -> None:
        """Make `parts` (key -> PartitionFetch) the assignment. A partition object that is not
        kept (by identity) loses whatever was fetched for it."""
        kept = {id(p) for p in parts.values()}
        for part in self.parts.values():
            if id(part) not in kept:
                part.epoch += 1
        self.parts = parts
        if not parts:
            self._raw.clear()
            self._chunks.clear()
            self.held_bytes = 0
        self.dirty = True

    def add(self, key, part: PartitionFetch) -> None:
        """Assign one partition (replacing, and dropping the data of, one already assigned)."""
        old = self.parts.get(key)
        if old is not None and old is not part:
            old.epoch += 1
        self.parts[key] = part
        self.dirty = True

    def remove(self, key) -> PartitionFetch | None:
        part = self.parts.pop(key, None)
        if part is not None:
            part.epoch += 1
        return part

    def discard(self, part: PartitionFetch) -> None:
        """Drop everything fetched for `part` (held, decoded or still in flight)."""
        part.epoch += 1
        self.dirty = True

    def seek(self, part: PartitionFetch, offset) -> None:
        """The next record handed out for `part` is at `offset` (None: the adapter resolves it
        later and seeks again)."""
        part.position = part.fetch_offset = offset
        part.epoch += 1
        part.eof_sent = False
        part.failed = False
        self.dirty = True

    def pause(self, part: PartitionFetch) -> None:
        if not part.paused:
            part.paused = True
            part.epoch += 1  # what was prefetched is fetched again on resume
            if part.position is not None:
                part.fetch_offset = part.position

    def resume(self, part: PartitionFetch) -> None:
        if part.paused:
            part.paused = False
            self.dirty = True

    def connection_lost(self) -> None:
        """Requests in flight are gone: start each partition's fetching again from its position."""
        self.in_flight = 0
        self._newest = None
        for part in self.parts.values():
            part.epoch += 1
            part.fetch_offset = part.position
        self.dirty = True

    # ---- fetch requests and replies -----------------------------------------------------------
    def should_fetch(self) -> bool:
        """Whether to send a fetch now: none in flight (or positions moved under the one in
        flight), and less than the prefetch limit held. In a fetch session, two in flight: the
        one parked on the server and the one that continues after it."""
        return self.wanted() > 0

    def wanted(self) -> int:
        """How many fetch requests to send now (`should_fetch`): up to the window (one, or two in
        a fetch session), and one more when positions moved under those in flight."""
        if self.held_bytes >= self.prefetch_limit:
            return 0
        in_flight = self.in_flight
        if self.continued and self.answers > 1:
            # Streamed: one request, and its successor once it has one answer left at most (the
            # server serves the successor when the stream ends, so none is missed between).
            if in_flight == 0:
                return 1
            if in_flight == 1 and self._newest is not None and self._newest.left <= 1:
                return 1
            return 1 if self.dirty and in_flight <= 2 else 0
        # Two only at the end of the log: there a record must find a fetch parked. Behind it
        # (replay) one reply follows another anyway, and a second 1 MiB in flight only costs.
        window = CONTINUED_WINDOW if self.continued and self.at_end else 1
        if in_flight < window:
            return window - in_flight
        return 1 if self.dirty and in_flight <= window else 0

    def fetch_request(self):
        """`(args, token)` for one `fetch` request covering every partition that can fetch, or
        None when none can. Give the token back to `accept` (or `fetch_failed`)."""
        parts = [p for p in self.parts.values()
                 if not p.paused and not p.failed and p.fetch_offset is not None and p.fetch_offset >= 0]
        if not parts:
            return None
        size = self.partition_max_bytes
        args = {"max_wait_ms": self.max_wait_ms, "min_bytes": self.min_bytes, "max_bytes": self.max_bytes}
        token = _Token()
        token.left = 0
        token.continued = continued = self.continued
        if continued:
            # Nil: the server goes on where the previous request's answer ends. A partition
            # left out of this request is no longer continued by the server.
            named = set(map(id, parts))
            for p in self.parts.values():
                if p.chained is not None and id(p) not in named:
                    p.chained = None
            rows = []
            for p in parts:
                offset = None if p.chained == p.epoch else p.fetch_offset
                p.chained = p.epoch
                rows.append([p.topic, p.partition, offset, size])
                token.append((p, offset, p.epoch))
            args["session"] = SESSION_ID
            args["partitions"] = rows
            if self.answers > 1:
                args["answers"] = token.left = self.answers
                self._newest = token
        else:
            rows = args["partitions"] = []
            for p in parts:
                rows.append([p.topic, p.partition, p.fetch_offset, size])
                token.append((p, p.fetch_offset, p.epoch))
        self.in_flight += 1
        self.dirty = False
        return args, token

    def fetch_failed(self, token) -> None:
        """The request of `token` got an error reply (or none): it is no longer in flight."""
        self.in_flight = max(self.in_flight - 1, 0)
        if token.continued:
            self._break_chains(token)

    def fetch_refused(self, token) -> bool:
        """The request of `token` was refused as a bad request. If it was a continued fetch,
        the server does not keep fetch sessions (an older one): fetch with offsets, one request
        in flight, from now on, and return True (the refusal is not the application's error).
        Otherwise it is `fetch_failed`, and False."""
        self.fetch_failed(token)
        if not token.continued:
            return False
        self.continued = False
        self.dirty = True
        return True

    @staticmethod
    def _break_chains(token) -> None:
        # What the server did with the request is not known: send these offsets again.
        for part, _, epoch in token:
            if part.chained == epoch:
                part.chained = None

    def accept(self, token, result) -> tuple[list, bool]:
        """Take a fetch reply. Returns `(errors, prefetch)`: `errors` the partitions whose result
        was an error, as `(part, wire error field)` for the adapter to act on (its fetch offset
        is left where it was); `prefetch` whether the next fetch should be sent at once, before
        any of this is decoded: whenever records came (or positions moved meanwhile). On replay
        the server then reads the log while this client decodes; at the end of a live
        partition the next fetch is parked on the server again one decode and one application
        turn sooner, so the next record, which lands in that gap when records come every
        100 us, finds it waiting instead of waiting for it."""
        if isinstance(result, dict):
            more = result.get("more")
            rows = result.get("results")
        else:
            more = rows = None
        if isinstance(more, int) and more > 0:
            token.left = more   # a streamed fetch: it stays in flight for its next answer
        else:
            token.left = 0
            self.in_flight = max(self.in_flight - 1, 0)
        if not isinstance(rows, (list, tuple)):
            rows = ()
        # One partition asked and one row answered (a consumer of one partition): match it
        # directly instead of indexing the rows.
        by_tp = None if len(token) == 1 and len(rows) == 1 else {
            (r[0], r[1]): r for r in rows
            if isinstance(r, (list, tuple)) and len(r) >= 2 and isinstance(r[0], str) and isinstance(r[1], int)}
        errors = []
        got = False
        # Whether every partition answered is now at its high watermark (None: none answered).
        at_end = None
        raw = self._raw
        for part, offset, epoch in token:
            if by_tp is None:
                r = rows[0]
                if not (isinstance(r, (list, tuple)) and len(r) >= 2 and r[0] == part.topic
                        and r[1] == part.partition and isinstance(r[0], str) and isinstance(r[1], int)):
                    r = None
            else:
                r = by_tp.get((part.topic, part.partition))
            if r is None or part.epoch != epoch:
                if r is None and part.chained == epoch:
                    part.chained = None  # a continued partition the reply left out
                continue  # a reposition overtook this one
            fields = len(r)
            started = fields == 7 and isinstance(r[6], int)
            if started:
                offset = r[6]  # where the server read it from (a continued fetch's offset is nil)
            if part.fetch_offset != offset:
                # A newer fetch overtook this one, or the server's session went elsewhere
                # (a reply lost, out of order): drop it, and send the offset next time.
                if part.chained == epoch:
                    part.chained = None
                continue
            # The row as docs/PROTOCOL.md gives it: [topic, partition, error | nil, high
            # watermark, log start, record bytes | nil], and in a fetch session the offset it
            # was read from (`started`). The client checks what it is sent too, so that a
            # broken or foreign server gets an error in the partition's stream, not a crash.
            if not ((started or fields == 6) and (r[2] is None or (isinstance(r[2], (list, tuple)) and len(r[2]) >= 2))
                    and isinstance(r[3], int) and isinstance(r[4], int)
                    and (r[5] is None or isinstance(r[5], _BYTES))):
                part.chained = None
                errors.append((part, ["CORRUPT_MESSAGE", f"malformed fetch result from the server: {r!r:.120}"]))
                continue
            err, hw, log_start, records = r[2], r[3], r[4], r[5]
            if err is not None:
                part.chained = None
                errors.append((part, err))
                continue
            part.hw = hw
            part.log_start = log_start
            if records:
                # Advance the fetch offset over the whole batches received, reading headers only;
                # the headers are kept for the decode (`_decode`), which then reads none.
                end = offset
                pos, n = 0, len(records)
                spans = []
                try:
                    while n - pos >= HEADER_SIZE:
                        h = read_header(records, pos)
                        size = LOG_OVERHEAD + h.length
                        if pos + size > n:
                            break
                        spans.append((h, pos))
                        end = h.base_offset + h.record_count
                        pos += size
                except BatchError as exc:
                    # Keep the whole batches before the unreadable header; it stops the
                    # partition after them, whatever check_crcs says (there is no length to
                    # step over it by).
                    if pos:
                        raw.append((part, records, offset, epoch, spans))
                        self.held_bytes += n
                    raw.append((part, FetchEvent(CORRUPT, part.topic, part.partition, end,
                                                 f"corrupt record batch at offset {end}: {exc}"), end, epoch, None))
                    part.fetch_offset = end
                    if at_end is not False:
                        at_end = end >= hw
                    continue
                if end > offset:
                    part.fetch_offset = end
                    raw.append((part, records, offset, epoch, spans))
                    self.held_bytes += n
                    part.eof_sent = False
                    got = True
                    if at_end is not False:
                        at_end = end >= hw
                    continue
            if at_end is not False:
                at_end = offset >= hw
            if self.partition_eof and not part.eof_sent and offset >= hw:
                part.eof_sent = True
                raw.append((part, None, offset, epoch, None))
        if at_end is not None:
            self.at_end = at_end
        if self.continued:
            # The fetch that continues this one is parked on the server already: the next
            # one can wait for the adapter's next turn (`should_fetch`), after the records of
            # this reply are handed out, so its send is not on their way to the application.
            prefetch = self.in_flight == 0 and self.held_bytes < self.prefetch_limit
        else:
            prefetch = self.in_flight == 0 and self.held_bytes < self.prefetch_limit and (got or self.dirty)
        return errors, prefetch

    # ---- handing out records ------------------------------------------------------------------
    def has_data(self) -> bool:
        """Whether anything (records or events) may be waiting to be taken."""
        return bool(self._chunks or self._raw)

    def backlog(self) -> int:
        """How many fetched results and decoded chunks are held (it grows when data arrives)."""
        return len(self._chunks) + len(self._raw)

    def pending(self) -> int:
        """Decoded records (and events) not handed out yet."""
        return sum((len(c[1]) if c[1].__class__ is not FetchEvent else 1) - c[2] for c in self._chunks)

    def take(self, want: int, out: list, only=None, stop_at_event=False, grouped=False):
        """Move up to `want` records (and events, which count as one) into `out`, in fetch order,
        decoding as needed; each partition's position moves past what it handed out.

        `only`, a set of (topic, partition) keys, leaves other partitions' records in place.
        With `grouped`, `out` gets `(part, list of records)` pieces instead of the records.
        With `stop_at_event` an event is not put in `out`: if `out` is still empty it is
        returned (and consumed), otherwise it stays first in line and taking stops. Returns
        None otherwise."""
        chunks = self._chunks
        skipped = self._aside
        try:
            while want > 0:
                if chunks:
                    chunk = chunks[0]
                elif self._raw and self._decode():
                    chunk = chunks[0]
                else:
                    return None
                part, items, i, epoch, nbytes = chunk
                if part.epoch != epoch or part.paused:
                    chunks.popleft()
                    self.held_bytes -= nbytes
                    continue
                if only is not None and (part.topic, part.partition) not in only:
                    skipped.append(chunks.popleft())
                    continue
                if items.__class__ is FetchEvent:
                    if stop_at_event:
                        if out:
                            return None
                        chunks.popleft()
                        self.held_bytes -= nbytes
                        return items
                    chunks.popleft()
                    self.held_bytes -= nbytes
                    out.append(self.builder.event(items))
                    want -= 1
                    continue
                n = len(items)
                j = i + want
                if j >= n:
                    j = n
                    chunks.popleft()
                    self.held_bytes -= nbytes
                else:
                    chunk[2] = j
                if grouped:
                    out.append((part, items if i == 0 and j == n else items[i:j]))
                elif i == 0 and j == n:
                    out += items
                else:
                    out += items[i:j]
                want -= j - i
                part.position = self.builder.next_offset(items[j - 1])
            return None
        finally:
            if skipped:
                chunks.extendleft(reversed(skipped))
                skipped.clear()

    def _decode(self) -> bool:
        """Decode the oldest fetched result still wanted into chunks: its records, and an event
        per batch that cannot be read. `accept` read the headers of its whole batches and kept
        them (`spans`: header and position per batch), so this reads none. The last chunk a
        result makes carries its bytes (released once it is all handed out). False when there
        is nothing left to decode."""
        raw = self._raw
        chunks = self._chunks
        while raw:
            part, records, offset, epoch, spans = raw.popleft()
            if records is None:  # enable.partition.eof: at the high watermark when it got here?
                if part.epoch == epoch and part.position is not None and part.position >= part.hw:
                    chunks.append([part, FetchEvent(
                        PARTITION_EOF, part.topic, part.partition, part.hw,
                        f"Fetch from broker 0 reached end of partition at offset {part.hw} "
                        f"(HighwaterMark {part.hw})"), 0, epoch, 0])
                    return True
                continue
            if records.__class__ is FetchEvent:  # a header too broken to step over
                if part.epoch == epoch:
                    self._stop_at(part, records, [], 0)
                    return True
                continue
            nbytes = len(records)
            if part.epoch != epoch:
                self.held_bytes -= nbytes
                continue
            topic, partition = part.topic, part.partition
            build = self.builder.records
            before = len(chunks)
            got = []
            expected = offset  # where the next batch should start
            # msgpack's advice for unpacking many containers: pause the cyclic GC, which would
            # otherwise scan the young records every 700 allocations (this halves replay time).
            # Records hold no cycles; the collector runs as usual once the result is decoded.
            # Small results (a consumer at the end of a live log gets one record a reply) make
            # too few objects for the collector to run; pausing it would cost more than it saves.
            gc_was_on = nbytes >= _GC_PAUSE_BYTES and _gc_isenabled()
            if gc_was_on:
                _gc_disable()
            view = memoryview(records)
            try:
                for h, pos in spans:
                    try:
                        check_structure(h, pos)
                    except BatchError as exc:  # no length to step over it by: stop here
                        self._stop_at(part, FetchEvent(CORRUPT, topic, partition, expected,
                                                       f"corrupt record batch at offset {expected}: {exc}"), got, nbytes)
                        return True
                    try:
                        check_crc(view, h, pos)
                        recs = build(topic, partition, h, view[pos + HEADER_SIZE:pos + LOG_OVERHEAD + h.length], offset)
                    except _DECODE_ERRORS as exc:
                        base = h.base_offset
                        event = FetchEvent(CORRUPT, topic, partition, base,
                                           f"corrupt record batch at offset {base} ({h.record_count} records): {exc}")
                        if self.check_crcs:
                            self._stop_at(part, event, got, nbytes)
                            return True
                        # Skip exactly this batch, reported in its place in the stream.
                        if got:
                            chunks.append([part, got, 0, epoch, 0])
                            got = []
                        chunks.append([part, event, 0, epoch, 0])
                        expected = h.base_offset + h.record_count
                        continue
                    if got:
                        got += recs
                    else:
                        got = recs
                    expected = h.base_offset + h.record_count
            finally:
                if gc_was_on:
                    _gc_enable()
            if got:
                chunks.append([part, got, 0, epoch, nbytes])
                return True
            if len(chunks) > before:
                chunks[-1][4] = nbytes
                return True
            self.held_bytes -= nbytes
        return False

    def _stop_at(self, part, event: FetchEvent, got: list, nbytes: int) -> None:
        """A batch at `event.offset` cannot be read: hand out `got` (the records before it), then
        the event, which releases `nbytes` held; the partition fetches no more (its position
        stays there) until a seek."""
        stopped = part.epoch
        part.epoch += 1  # whatever was fetched after the bad batch is dropped
        part.failed = True
        # Records of this partition that `take` set aside (it was taking other partitions) were
        # decoded before this batch, so they come before it: they keep their place.
        for chunk in self._aside:
            if chunk[0] is part and chunk[3] == stopped:
                chunk[3] = part.epoch
        part.fetch_offset = event.offset
        if got:
            self._chunks.append([part, got, 0, part.epoch, 0])
        self._chunks.append([part, event, 0, part.epoch, nbytes])
