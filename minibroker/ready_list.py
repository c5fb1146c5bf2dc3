"""The ready messages of a queue, in delivery order: a plain FIFO, or one FIFO per priority.

Both kinds offer the same small interface the queue uses: `append(msg)`, `popleft()`, `len()`,
`requeue(msgs)`, `head()`, `drain_all()` and `remove_if(pred)`. `FifoReadyList` subclasses
`collections.deque`, so `append` and `popleft` on the hot path are C calls.
`PriorityReadyList` (for queues declared with `x-max-priority`) keeps a deque per priority level,
delivers the highest non-empty level first and stays FIFO within a level.

Requeue puts returned messages back where they were: every message gets a position when it
enters its queue (`Message.position`), each FIFO stays sorted by position, and `requeue` merges
the returned messages into the head by position, as RabbitMQ's classic queues do.
"""

import collections
import heapq
from operator import attrgetter

_position = attrgetter("position")


def _merge_into_head(dq: collections.deque, msgs: list) -> None:
    """Merge position-sorted `msgs` into the position-sorted deque `dq` (they belong near its head)."""
    last = msgs[-1].position
    if not dq or last < dq[0].position:
        dq.extendleft(reversed(msgs))
        return
    displaced = []
    while dq and dq[0].position < last:
        displaced.append(dq.popleft())
    dq.extendleft(reversed(list(heapq.merge(msgs, displaced, key=_position))))


class FifoReadyList(collections.deque):
    __slots__ = ()

    def requeue(self, msgs: list) -> None:
        if msgs:
            msgs.sort(key=_position)
            _merge_into_head(self, msgs)

    def head(self):
        return self[0] if self else None

    def drain_all(self) -> list:
        out = list(self)
        self.clear()
        return out

    def remove_if(self, pred) -> list:
        """Remove and return the messages for which pred(msg) is true, keeping the order of the rest."""
        removed = [m for m in self if pred(m)]
        if removed:
            kept = [m for m in self if not pred(m)]
            self.clear()
            self.extend(kept)
        return removed


class PriorityReadyList:
    """Ready messages of a priority queue: priority levels 0..max_priority, highest first."""

    __slots__ = ("levels", "count", "max_priority")

    def __init__(self, max_priority: int):
        self.max_priority = max_priority
        self.levels = [collections.deque() for _ in range(max_priority + 1)]
        self.count = 0

    def __len__(self):
        return self.count

    def __bool__(self):
        return self.count > 0

    def __iter__(self):
        for level in reversed(self.levels):
            yield from level

    def _level(self, msg):
        p = msg.priority
        return self.levels[p if p <= self.max_priority else self.max_priority]

    def append(self, msg) -> None:
        self._level(msg).append(msg)
        self.count += 1

    def popleft(self):
        for level in reversed(self.levels):
            if level:
                self.count -= 1
                return level.popleft()
        raise IndexError("pop from an empty ready list")

    def head(self):
        for level in reversed(self.levels):
            if level:
                return level[0]
        return None

    def requeue(self, msgs: list) -> None:
        if not msgs:
            return
        msgs.sort(key=_position)
        by_level: dict[int, list] = {}
        for m in msgs:
            by_level.setdefault(min(m.priority, self.max_priority), []).append(m)
        for p, group in by_level.items():
            _merge_into_head(self.levels[p], group)
        self.count += len(msgs)

    def drain_all(self) -> list:
        out = list(self)
        for level in self.levels:
            level.clear()
        self.count = 0
        return out

    def remove_if(self, pred) -> list:
        removed = []
        for level in self.levels:
            gone = [m for m in level if pred(m)]
            if gone:
                kept = [m for m in level if not pred(m)]
                level.clear()
                level.extend(kept)
                removed.extend(gone)
        self.count -= len(removed)
        return removed
