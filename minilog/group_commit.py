"""Group commit: many `acks=all` producers share one fsync, run off the event loop.

A produce with `acks=-1` may only be answered once its records are on disk. One fsync costs
150 µs to several ms, so doing one per request (and on the event loop, which would stall every
other client meanwhile) caps the broker at a few thousand durable produces per second.
`GroupCommit` instead collects the partitions whose waiters need a flush, and runs one round
of fsyncs in a thread executor (`loop.run_in_executor`); every request whose last offset the
round covers is answered when it ends. Requests that arrive while a round is in flight wait
for the next round, which starts as soon as the current one ends: under load each fsync
covers everything appended while the previous one ran.

The storage engine (`minilog.storage.PartitionLog`) is single-threaded, so a round is split
in three with its public flush API: on the loop, `plog.prepare_flush()` notes the log end
offset and the file descriptors to sync; in the thread, only `FlushPlan.sync()` (os.fsync)
runs; back on the loop, `plog.complete_flush(end)` advances the log's flushed offset, which
the recovery-point checkpoint is written from.

The flushes the storage engine's own policy makes due (flush.messages, flush.ms, and every
`drop_behind_bytes` appended, whose plans also drop older pages from the page cache after the
fsync: `FlushPlan.sync`) come here too: the core (`minilog/broker.py`) sets each log's `flush_requester` to `request_flush`, which joins the log to
the next round without a waiter, so a produce or a storage tick never blocks the loop on an
fsync.
"""

from __future__ import annotations

import asyncio
import logging
import time

log = logging.getLogger("minilog.group_commit")


class FlushFailed(Exception):
    """The fsync failed (I/O error, disk gone) or the log was closed while it ran."""


class GroupCommit:
    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, executor=None):
        self._loop = loop
        self._executor = executor
        # log -> list of (offset that must be flushed, future)
        self._waiting: dict[object, list] = {}
        self._running = False
        self.rounds = 0          # fsync rounds run (a figure for server_info and tests)
        self.requests = 0        # waits answered
        self.fsync_seconds = 0.0  # time spent in fsync rounds (metrics)

    def wait_flushed(self, plog, offset: int) -> asyncio.Future:
        """A future done when every record below `offset` of `plog` is on disk."""
        loop = self._loop or asyncio.get_running_loop()
        fut = loop.create_future()
        if plog.flushed_offset >= offset:
            fut.set_result(None)
            return fut
        self._waiting.setdefault(plog, []).append((offset, fut))
        self._schedule(loop)
        return fut

    def request_flush(self, plog) -> None:
        """Flush `plog` up to its current end in the next round, with nobody waiting (flush policy)."""
        self._waiting.setdefault(plog, [])
        self._schedule(self._loop or asyncio.get_running_loop())

    def _schedule(self, loop) -> None:
        if not self._running:
            self._running = True
            # call_soon: requests parsed from the same read join this round.
            loop.call_soon(self._start_round)

    def _start_round(self) -> None:
        loop = self._loop or asyncio.get_running_loop()
        waiting, self._waiting = self._waiting, {}
        if not waiting:
            self._running = False
            return
        snapshots = []
        for plog, waiters in waiting.items():
            try:
                plan = plog.prepare_flush()
            except Exception as exc:  # a closed log: its segments are gone
                self._fail(waiters, exc)
                continue
            snapshots.append((plog, plan, waiters))
        task = loop.run_in_executor(self._executor, self._sync_all, snapshots)
        task.add_done_callback(lambda f: self._finish_round(f, snapshots))

    def _sync_all(self, snapshots) -> list:
        errors = []
        started = time.perf_counter()
        for _plog, plan, _waiters in snapshots:
            try:
                plan.sync()
                errors.append(None)
            except Exception as exc:  # EIO, ENOSPC, EBADF after a topic deletion
                errors.append(exc)
        # Written by the fsync thread only, read by the loop for metrics: a float store is atomic.
        self.fsync_seconds += time.perf_counter() - started
        return errors

    def _finish_round(self, done: asyncio.Future, snapshots) -> None:
        self.rounds += 1
        try:
            errors = done.result()
        except Exception as exc:
            errors = [exc] * len(snapshots)
        for (plog, plan, waiters), error in zip(snapshots, errors):
            if error is not None:
                log.error("fsync of %s failed: %s", getattr(plog, "directory", plog), error)
                self._fail(waiters, error)
                continue
            end = plog.complete_flush(plan.end_offset)
            later = []
            for offset, fut in waiters:
                if offset <= end:
                    if not fut.done():
                        fut.set_result(None)
                    self.requests += 1
                else:
                    later.append((offset, fut))
            if later:
                self._waiting.setdefault(plog, []).extend(later)
        if self._waiting:
            self._start_round()
        else:
            self._running = False

    @staticmethod
    def _fail(waiters, exc) -> None:
        for _offset, fut in waiters:
            if not fut.done():
                fut.set_exception(FlushFailed(f"{type(exc).__name__}: {exc}"))
