"""Long-poll wake-ups: a fetch parked at the end of a log waits here for the next append.

A consumer that has read everything sends a fetch with `max_wait_ms`; instead of answering
empty at once (and being asked again in a busy loop) the server parks it. `AppendWaiters`
keeps, per (topic, partition), the wake-up callables of the fetches parked on it; the produce
path calls `notify(key)` after each append, which calls them all. A fetch on several
partitions registers under each of them and is woken by whichever gets data first.

`ParkedFetch` is one parked fetch: woken, it reads again (`LogBroker.read`) and, once the
read is ready (`min_bytes` or an error), hands the rows to its `on_ready` callback *there and
then*, inside the append that woke it. So the consumer's reply is written in the same loop
turn as the append, before the producer's own reply, with no task, coroutine or future per
fetch: the msgpack fetch path (`minilog/server.py`, `MinilogServer._park_fetch`) writes its frame
from `on_ready`. The Kafka door awaits the same thing through `LogBroker.wait_for_records`, a
future over a `ParkedFetch`.

At `max_wait_ms` a fetch nothing woke is answered with whatever is there. The deadlines are
not one loop timer per fetch (making and cancelling one cost ~2-6 us, on a path where a live
consumer parks once per record and is almost always woken first): `AppendWaiters` keeps them
in one heap served by one loop timer, armed at the earliest deadline (`_expire_due`). A fetch
woken or cancelled leaves its heap entry behind, skipped when it comes due; once such
leftovers are most of the heap it is rebuilt without them, so it holds at most about twice the
fetches parked now (plus `_COMPACT_MIN`) whatever the clients' `max_wait_ms`.

A fetch answered more than once (a streamed session fetch) is parked again after its answer
(`ParkedFetch.park_again`), from inside it or, kept by `hold` meanwhile, from a loop callback:
the same object, its heap entry kept, its new deadline noted in it and honoured when the old
entry comes due.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging

log = logging.getLogger("minilog")

# A deadline due within this many seconds of the timer's run is answered in that run: libuv
# counts timers in whole milliseconds from the loop's cached time, so a timer may run a little
# before its deadline; answering then beats arming the timer again for a fraction of a ms.
_DUE_SLACK_S = 0.001
# Leftover entries (of fetches woken or cancelled) tolerated before a rebuild is considered.
_COMPACT_MIN = 64


class AppendWaiters:
    def __init__(self):
        self._by_partition: dict[tuple[str, int], set] = {}
        # (deadline in loop time, tie-breaker, ParkedFetch): the parked fetches' max_wait deadlines.
        self._deadlines: list = []
        self._ties = itertools.count()
        self._leftovers = 0          # entries of fetches no longer parked
        self._timer = None           # the one loop timer, armed at `_timer_at`
        self._timer_at = float("inf")

    def register(self, keys, wake) -> None:
        """Call `wake(key)` at the next append to any of `keys` (once: the waiter is then off that key)."""
        for key in keys:
            waiters = self._by_partition.get(key)
            if waiters is None:
                self._by_partition[key] = {wake}
            else:
                waiters.add(wake)

    def unregister(self, keys, wake) -> None:
        for key in keys:
            waiters = self._by_partition.get(key)
            if waiters is not None:
                waiters.discard(wake)
                if not waiters:
                    del self._by_partition[key]

    def notify(self, key) -> None:
        waiters = self._by_partition.pop(key, None)
        if waiters:
            for wake in waiters:
                try:
                    wake(key)
                except Exception:  # one broken waiter must not fail the append that woke it
                    log.exception("waking a fetch parked on %s failed", key)

    def notify_topic(self, topic: str) -> None:
        """Wake every fetch parked on a partition of `topic` (it was deleted)."""
        for key in [k for k in self._by_partition if k[0] == topic]:
            self.notify(key)

    def __len__(self) -> int:
        return sum(len(w) for w in self._by_partition.values())

    # ---- max_wait deadlines ------------------------------------------------------------
    @property
    def deadlines_held(self) -> int:
        """Entries in the deadline heap, leftovers included (what bounds its memory)."""
        return len(self._deadlines)

    def _park(self, parked: "ParkedFetch") -> None:
        """Wake `parked` at the next append to any of its keys (`register`), and answer it
        (`answer_now`) `parked._max_wait_s` from now unless it is done by then."""
        wake = parked._wake
        for key in parked._keys:   # register, inline: this runs once per parked fetch
            waiters = self._by_partition.get(key)
            if waiters is None:
                self._by_partition[key] = {wake}
            else:
                waiters.add(wake)
        loop = asyncio.get_running_loop()
        deadline = parked._deadline = loop.time() + parked._max_wait_s
        if parked._in_heap:
            # Parked again from inside its answer (`ParkedFetch.park_again`): its heap entry,
            # at an earlier deadline, moves to this one when it comes due (`_expire_due`), so a
            # streamed fetch parked once per record costs no heap push and leaves no leftover.
            return
        parked._in_heap = True
        heapq.heappush(self._deadlines, (deadline, next(self._ties), parked))
        if deadline < self._timer_at:
            self._arm(loop, deadline)

    def _unregister(self, parked: "ParkedFetch") -> None:
        """`parked` is off its partitions (woken, answered or cancelled)."""
        wake = parked._wake
        for key in parked._keys:   # unregister, inline: this runs once per woken fetch
            waiters = self._by_partition.get(key)
            if waiters is not None:
                waiters.discard(wake)
                if not waiters:
                    del self._by_partition[key]

    def _arm(self, loop, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = loop.call_at(deadline, self._expire_due)

    def _depart(self, parked: "ParkedFetch") -> None:
        """`parked` is done for good (answered and not parked again, or cancelled; already
        off its partitions): its heap entry, if it is still in the heap, is a leftover."""
        # Until its deadline comes or the heap is rebuilt, the heap entry keeps `parked`: let it
        # keep nothing else (its read's arguments, the front door's callback and what that
        # holds), or every live consumer's fetch leaves a dozen objects for the collector.
        parked._read = parked._read_args = parked._keys = parked._wake = parked._callback = None
        if not parked._in_heap:
            return
        parked._in_heap = False
        self._leftovers += 1
        heap = self._deadlines
        if self._leftovers > _COMPACT_MIN and self._leftovers * 2 > len(heap):
            # Amortised: a rebuild follows at least as many departures as it keeps entries.
            # In place: `_expire_due` may be walking it (an answer that cancels another fetch).
            heap[:] = [entry for entry in heap if entry[2]._callback is not None]
            heapq.heapify(heap)
            self._leftovers = 0

    def _expire_due(self) -> None:
        """The loop timer: answer every fetch whose deadline came, then arm for the next one."""
        self._timer = None
        self._timer_at = float("inf")
        loop = asyncio.get_running_loop()
        heap = self._deadlines
        due = loop.time() + _DUE_SLACK_S
        while heap and heap[0][0] <= due:
            _, tie, parked = heapq.heappop(heap)
            if parked._callback is None:
                self._leftovers -= 1
                continue
            if parked._deadline > due:
                # Parked again since this entry was pushed: it moves to the later deadline.
                heapq.heappush(heap, (parked._deadline, tie, parked))
                continue
            parked._in_heap = False
            if parked._on_ready is None:
                continue   # between its answer and its parking again: not waiting now
            try:
                parked.answer_now()
            except Exception:  # one broken fetch must not keep the others from their answer
                log.exception("answering a parked fetch at its max_wait failed")
        # An answer may have parked a new fetch, and armed the timer for its later deadline.
        if heap and heap[0][0] < self._timer_at:
            self._arm(loop, heap[0][0])


class ParkedFetch:
    """One fetch parked on `keys` until `read(*read_args)` is ready or `max_wait_s` passes; then
    `on_ready(rows)` runs (never from inside the constructor). `on_ready` may park it again
    (`park_again`): a fetch answered more than once (docs/minilog.md, "Fetch sessions") is one
    ParkedFetch for all its answers. `cancel()` unparks it."""

    __slots__ = ("_waiters", "_read", "_read_args", "_keys", "_on_ready", "_callback", "_wake", "_in_heap",
                 "_deadline", "_max_wait_s", "_held")

    def __init__(self, waiters: AppendWaiters, read, read_args: tuple, keys, max_wait_s: float, on_ready):
        self._waiters = waiters
        self._read = read          # read(*read_args) -> (rows, ready): the fetch's own read
        self._read_args = read_args
        self._keys = keys
        self._on_ready = on_ready  # while parked; None while answering and once done
        self._callback = on_ready  # until done for good: what `park_again` parks with
        self._wake = self._woken   # one bound method, so unregister finds what register added
        self._in_heap = False      # its deadline has an entry in waiters' heap
        self._deadline = 0.0       # in loop time; the heap entry's may be earlier (`_park`)
        self._max_wait_s = max_wait_s
        self._held = False         # answered, kept for `park_again` from the loop (`hold`)
        waiters._park(self)

    @property
    def done(self) -> bool:
        return self._on_ready is None

    def _woken(self, key) -> None:
        if self._on_ready is None:
            return
        rows, ready = self._read(*self._read_args)
        if ready:
            self._answer(rows)
        else:
            # Not min_bytes yet: notify took us off this key; wait for its next append too.
            self._waiters.register((key,), self._wake)

    def answer_now(self) -> None:
        """Answer with whatever there is now, as at `max_wait_s` (a fetch that supersedes it
        came: docs/minilog.md, "Fetch sessions")."""
        if self._on_ready is not None:
            rows, _ = self._read(*self._read_args)
            self._answer(rows)

    def _answer(self, rows) -> None:
        on_ready = self._on_ready
        self._on_ready = None
        waiters = self._waiters
        waiters._unregister(self)
        try:
            on_ready(rows)
        finally:
            if self._on_ready is None and self._callback is not None and not self._held:
                waiters._depart(self)   # not parked again by its answer, nor held: done for good

    def park_again(self, read_args: tuple) -> None:
        """From inside `on_ready`: park again, reading `read_args` when woken, with a new
        `max_wait_s` deadline; `on_ready` runs again at the next answer. Instead of a new
        ParkedFetch: no new object, no read now, no heap entry (`AppendWaiters._park`)."""
        if self._on_ready is not None or self._callback is None:
            raise RuntimeError("park_again is for the answer of a fetch being answered")
        self._read_args = read_args
        self._on_ready = self._callback
        self._held = False
        self._waiters._park(self)

    def hold(self) -> None:
        """From inside `on_ready`: keep this fetch after its answer, off its partitions and not
        waiting, for a `park_again` later (from a loop callback, once the answer's producer has
        its reply too) or a `release`; one of the two must follow. A held fetch's deadline
        entry stays in the heap (`AppendWaiters._expire_due` skips it while it is not parked)."""
        if self._on_ready is not None or self._callback is None:
            raise RuntimeError("hold is for the answer of a fetch being answered")
        self._held = True

    def release(self) -> None:
        """A held fetch is not parked again after all: done for good."""
        if self._held:
            self._held = False
            if self._on_ready is None and self._callback is not None:
                self._waiters._depart(self)

    def cancel(self) -> None:
        if self._on_ready is None:
            self.release()
            return
        self._on_ready = None
        self._waiters._unregister(self)
        self._waiters._depart(self)
