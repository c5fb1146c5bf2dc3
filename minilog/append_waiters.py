"""Long-poll wake-ups: a fetch parked at the end of a log waits here for the next append.

A consumer that has read everything sends a fetch with `max_wait_ms`; instead of answering
empty at once (and being asked again in a busy loop) the server parks it. `AppendWaiters`
keeps, per (topic, partition), the futures of the fetches parked on it; the produce path calls
`notify(key)` after each append, which resolves them all, and the fetch reads again. A fetch
on several partitions registers one future under each of them and is woken by whichever
gets data first. The timer that ends the wait and the re-read are the fetch path's
(`minilog/broker.py`, `LogBroker.wait_for_records`).
"""

from __future__ import annotations

import asyncio


class AppendWaiters:
    def __init__(self):
        self._by_partition: dict[tuple[str, int], set[asyncio.Future]] = {}

    def register(self, keys, fut: asyncio.Future) -> None:
        for key in keys:
            self._by_partition.setdefault(key, set()).add(fut)

    def unregister(self, keys, fut: asyncio.Future) -> None:
        for key in keys:
            waiters = self._by_partition.get(key)
            if waiters is not None:
                waiters.discard(fut)
                if not waiters:
                    del self._by_partition[key]

    def notify(self, key) -> None:
        waiters = self._by_partition.pop(key, None)
        if waiters:
            for fut in waiters:
                if not fut.done():
                    fut.set_result(key)

    def notify_topic(self, topic: str) -> None:
        """Wake every fetch parked on a partition of `topic` (it was deleted)."""
        for key in [k for k in self._by_partition if k[0] == topic]:
            self.notify(key)

    def __len__(self) -> int:
        return sum(len(w) for w in self._by_partition.values())
