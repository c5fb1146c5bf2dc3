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
from `on_ready`. Its timer answers with whatever is there at `max_wait_ms`. The Kafka door
awaits the same thing through `LogBroker.wait_for_records`, a future over a `ParkedFetch`.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("minilog")


class AppendWaiters:
    def __init__(self):
        self._by_partition: dict[tuple[str, int], set] = {}

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


class ParkedFetch:
    """One fetch parked on `keys` until `read()` is ready or `max_wait_s` passes; then
    `on_ready(rows)` runs once (never from inside the constructor). `cancel()` unparks it."""

    __slots__ = ("_waiters", "_read", "_keys", "_on_ready", "_timer", "_wake")

    def __init__(self, waiters: AppendWaiters, read, keys, max_wait_s: float, on_ready):
        self._waiters = waiters
        self._read = read          # () -> (rows, ready): the fetch's own read
        self._keys = keys
        self._on_ready = on_ready
        self._wake = self._woken   # one bound method, so unregister finds what register added
        waiters.register(keys, self._wake)
        self._timer = asyncio.get_running_loop().call_later(max_wait_s, self._expired)

    @property
    def done(self) -> bool:
        return self._on_ready is None

    def _woken(self, key) -> None:
        if self._on_ready is None:
            return
        rows, ready = self._read()
        if ready:
            self._finish(rows)
        else:
            # Not min_bytes yet: notify took us off this key; wait for its next append too.
            self._waiters.register((key,), self._wake)

    def _expired(self) -> None:
        self._timer = None
        self.answer_now()

    def answer_now(self) -> None:
        """Answer with whatever there is now, as at `max_wait_s` (a fetch that supersedes it
        came: docs/minilog.md, "Fetch sessions")."""
        if self._on_ready is not None:
            rows, _ = self._read()
            self._finish(rows)

    def _finish(self, rows) -> None:
        on_ready = self._on_ready
        self.cancel()
        on_ready(rows)

    def cancel(self) -> None:
        if self._on_ready is None:
            return
        self._on_ready = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._waiters.unregister(self._keys, self._wake)
