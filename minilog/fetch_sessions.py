"""Fetch sessions of the msgpack door: a fetch that continues where the previous one ended.

A consumer at the end of a live partition wants a fetch parked on the server at every moment,
so that a record is answered inside the append that brings it. With one fetch in flight that
is not so: while a reply travels back, is decoded and the next fetch travels out, records land
with no fetch waiting. Sending the next fetch before the reply arrives needs its start offset,
which only the reply tells. So the server keeps it, as Kafka's incremental fetch sessions keep
each partition's fetch state on the broker: a `fetch` naming a `session` (a small number the
client picks, per connection) may give a partition's offset as nil, meaning "where this
session's previous fetch ended for it".

`FetchSession` (one per connection and session id, kept in the connection's state by
`FetchSessions`) holds:

- `positions`: (topic, partition) -> the offset after what the session's last answered fetch
  returned for it; only the partitions of that fetch;
- `waiting`: the session's fetches not started yet. Fetches of one session are served one
  after the other: the next starts (reads, and parks if there is nothing) only once the one
  before it is answered, so its nil offsets resolve to where that answer ended;
- `parked`: the started fetch while it waits on the server (long poll), if it does.

An explicit offset resets the partition's position. A fetch that brings one (a seek, an
assign, anything the client repositioned) does not wait out the long poll of the fetches
before it: they are answered at once with what there is (`supersede`). Each row of a session
fetch carries the offset it was read from, so the client checks continuity and drops what it
no longer wants. A nil offset for a partition the previous fetch did not name is refused
(BAD_REQUEST); where a position cannot be told (a reply whose end is unknown) it stays at the
row's start, so the next fetch reads the same records again, the client sees the break in
continuity and sends the offset.

A session fetch may ask for several answers (`answers`, up to `MAX_ANSWERS`; feature
`fetch-answers`): after each answer it goes back first in the session's line with nil offsets
and is served again, until its answers are used, another fetch of the session waits, an
explicit offset supersedes it, or an answer is large or holds an error
(`SessionFetch.next_answer`); each answer says how many follow (`more`). A live consumer then has a fetch parked when each record lands
without sending one per reply.

No broker state lives here, only what one connection asked for; the core (`LogBroker`) knows
nothing of sessions, and the Kafka door does not use them. minilog/server.py
(`MinilogServer.op_fetch`, `_start_session_fetch`, `_send_fetch`) drives it.
"""

from __future__ import annotations

import collections

from clients.protocol.errors import BrokerError, ErrorCode
from clients.record_batch import HEADER_SIZE, BatchError, read_header
from minilog.storage import FileSlice

# Sessions one connection may keep, and fetches one session may hold unanswered.
MAX_SESSIONS = 16
MAX_WAITING = 16
# Answers one fetch may ask for (`answers`), and the record bytes past which an answer is its
# fetch's last: a consumer that is behind gets one answer per request, as without `answers`,
# so what the server pushes ahead of the client's asking stays under answers x this.
MAX_ANSWERS = 64
ANSWER_GOES_ON_BELOW = 64 * 1024


class SessionFetch:
    """One fetch of a session: its request id, its partitions (offset None: continue), its limits
    and how many answers it may still get (`answers`; more than one: it streams)."""

    __slots__ = ("rid", "parts", "max_bytes", "min_bytes", "max_wait_ms", "error", "answers", "streams", "head")

    def __init__(self, rid, parts, max_bytes, min_bytes, max_wait_ms, answers=1):
        self.rid = rid
        self.error = None           # a BrokerError found when it started: answer with it
        self.parts = parts          # [(topic, partition, offset | None, partition_max_bytes)]
        self.max_bytes = max_bytes
        self.min_bytes = min_bytes
        self.max_wait_ms = max_wait_ms
        self.answers = answers
        self.streams = answers > 1  # its answers say how many more follow (`more`)
        self.head = None            # what its one-row answers share (fetch_response.streamed_frame_head)

    def next_answer(self, waiting: bool, records_bytes: int, error: bool = False) -> int:
        """The `more` of the answer going out now: how many answers follow it. No more
        follow when another fetch of the session waits (it starts instead), when this answer
        is large (the client is behind: it asks again, as without `answers`), or when a row
        of it is an error (served again, it would only meet the same error at once)."""
        if waiting or error or records_bytes >= ANSWER_GOES_ON_BELOW:
            self.answers = 1
        self.answers -= 1
        return self.answers

    def go_on(self) -> None:
        """Ready to be served again, where this answer ended (offsets nil)."""
        self.parts = [(topic, partition, None, pmax) for topic, partition, _, pmax in self.parts]


class FetchSession:
    __slots__ = ("positions", "waiting", "busy", "parked", "starts", "current")

    def __init__(self):
        self.positions: dict = {}
        self.waiting: collections.deque = collections.deque()
        self.busy = False        # a fetch of this session is started and not answered yet
        self.parked = None       # its ParkedFetch, while it waits on the server
        self.starts: list = []   # the started fetch's start offsets, per partition, in order
        self.current: SessionFetch | None = None   # the fetch started last

    def add(self, fetch: SessionFetch) -> None:
        if len(self.waiting) >= MAX_WAITING:
            raise BrokerError(ErrorCode.BAD_REQUEST,
                              f"a fetch session holds at most {MAX_WAITING} unanswered fetches")
        if any(p[2] is not None for p in fetch.parts):
            self.supersede()
        self.waiting.append(fetch)

    def supersede(self) -> None:
        """A repositioned fetch is coming: the fetches before it answer now, without waiting,
        and answer once (a stream of answers ends there)."""
        if self.busy and self.current is not None:
            self.current.answers = 1
        for earlier in self.waiting:
            earlier.max_wait_ms = 0
            earlier.answers = 1
        parked = self.parked
        if parked is not None:
            parked.answer_now()

    def start(self) -> SessionFetch | None:
        """The next fetch to serve, its offsets resolved (`fetch.parts` get ints), or None when
        one is being served or none waits. A nil offset with no position sets `fetch.error`
        instead: the fetch is done with, answer it with the error and start the next."""
        if self.busy or not self.waiting:
            return None
        fetch = self.waiting.popleft()
        positions = self.positions
        resolved = []
        starts = []
        for topic, partition, offset, pmax in fetch.parts:
            if offset is None:
                offset = positions.get((topic, partition))
                if offset is None:
                    fetch.error = BrokerError(ErrorCode.BAD_REQUEST,
                                              f"fetch session has no position for {topic}-{partition}: the "
                                              f"previous fetch of the session did not name it, give its offset")
                    return fetch
            starts.append(offset)
            resolved.append((topic, partition, offset, pmax))
        fetch.parts = resolved
        self.starts = starts
        self.busy = True
        self.current = fetch
        return fetch

    def go_on_at_end(self, fetch: SessionFetch, rows) -> list | None:
        """Just after `answered(rows)`, for the streamed fetch `fetch`, to be parked again at
        once: its parts resolved to where each row ended, and it is the started fetch again;
        None (nothing changed) unless every row ended at the high watermark it read, that is
        at the log end: a fetch cut short by its byte limits reads again instead."""
        positions = self.positions
        parts = []
        for (topic, partition, _, pmax), row in zip(fetch.parts, rows):
            end = positions[(topic, partition)]
            if end != row[3]:
                return None
            parts.append((topic, partition, end, pmax))
        fetch.parts = parts
        self.starts = [part[2] for part in parts]
        self.busy = True
        self.current = fetch
        return parts

    def answered(self, rows) -> list:
        """The started fetch's rows are going out: keep where each ended, and return each row's
        start offset (what the reply tells the client), in order."""
        starts = self.starts
        positions = {}
        for row, start in zip(rows, starts):
            positions[(row[0], row[1])] = _end_of(row, start)
        self.positions = positions
        self.busy = False
        self.parked = None
        return starts


def _end_of(row, start: int) -> int:
    """The offset after a read row's records; `start` when that is not known (see above)."""
    error, records = row[2], row[5]
    if error is not None or records is None:
        return start
    if type(records) is FileSlice:
        return start if records.next_offset is None else records.next_offset
    # Batches converted to this door's format: walk their headers (in memory, a few per reply).
    end, pos, n = start, 0, len(records)
    try:
        while n - pos >= HEADER_SIZE:
            h = read_header(records, pos)
            end = h.base_offset + h.record_count
            pos += h.size
    except BatchError:
        return start
    return end


class FetchSessions:
    """The fetch sessions of one connection, by the id the client gave."""

    __slots__ = ("_by_id",)

    def __init__(self):
        self._by_id: dict = {}

    def get(self, session_id: int) -> FetchSession:
        session = self._by_id.get(session_id)
        if session is None:
            if len(self._by_id) >= MAX_SESSIONS:
                raise BrokerError(ErrorCode.BAD_REQUEST, f"at most {MAX_SESSIONS} fetch sessions per connection")
            session = self._by_id[session_id] = FetchSession()
        return session
