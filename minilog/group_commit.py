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
in three: on the loop, `_snapshot` notes the log end offset and the file descriptors to sync;
in the thread, only `os.fsync` (and the index flush of sealed segments, which no longer
change) runs; back on the loop, `_mark_flushed` advances the log's flushed offset, which the
recovery-point checkpoint is written from. What to flush on a timer (flush.ms) or a count
(flush.messages) stays the storage engine's business.
"""

from __future__ import annotations

import asyncio
import logging
import os

log = logging.getLogger("minilog.group_commit")


class FlushFailed(Exception):
    """The fsync failed (I/O error, disk gone) or the log was closed while it ran."""


def _snapshot(plog):
    """(end offset, [(fd, sealed segment or None)]) of what is appended but not yet flushed."""
    flushed = plog.flushed_offset
    todo = []
    for segment in plog.segments:
        if segment.next_offset > flushed or segment.active:
            todo.append((segment.fd, None if segment.active else segment))
    return plog.log_end_offset, todo


def _sync(todo) -> None:
    for fd, sealed in todo:
        os.fsync(fd)
        if sealed is not None and sealed.index is not None:
            sealed.index.flush()
            sealed.time_index.flush()


def _mark_flushed(plog, end: int) -> None:
    # PartitionLog has no public "these offsets were fsynced elsewhere" call; this adapter sets
    # the same field its own flush() sets, only ever forward.
    if end > plog._flushed_offset:
        plog._flushed_offset = end


class GroupCommit:
    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, executor=None):
        self._loop = loop
        self._executor = executor
        # log -> list of (offset that must be flushed, future)
        self._waiting: dict[object, list] = {}
        self._running = False
        self.rounds = 0          # fsync rounds run (a figure for server_info and tests)
        self.requests = 0        # waits answered

    def wait_flushed(self, plog, offset: int) -> asyncio.Future:
        """A future done when every record below `offset` of `plog` is on disk."""
        loop = self._loop or asyncio.get_running_loop()
        fut = loop.create_future()
        if plog.flushed_offset >= offset:
            fut.set_result(None)
            return fut
        self._waiting.setdefault(plog, []).append((offset, fut))
        if not self._running:
            self._running = True
            # call_soon: requests parsed from the same read join this round.
            loop.call_soon(self._start_round)
        return fut

    def _start_round(self) -> None:
        loop = self._loop or asyncio.get_running_loop()
        waiting, self._waiting = self._waiting, {}
        if not waiting:
            self._running = False
            return
        snapshots = []
        for plog, waiters in waiting.items():
            try:
                end, todo = _snapshot(plog)
            except Exception as exc:  # a closed log: its segments are gone
                self._fail(waiters, exc)
                continue
            snapshots.append((plog, end, todo, waiters))
        task = loop.run_in_executor(self._executor, self._sync_all, snapshots)
        task.add_done_callback(lambda f: self._finish_round(f, snapshots))

    @staticmethod
    def _sync_all(snapshots) -> list:
        errors = []
        for _plog, _end, todo, _waiters in snapshots:
            try:
                _sync(todo)
                errors.append(None)
            except Exception as exc:  # EIO, ENOSPC, EBADF after a topic deletion
                errors.append(exc)
        return errors

    def _finish_round(self, done: asyncio.Future, snapshots) -> None:
        self.rounds += 1
        try:
            errors = done.result()
        except Exception as exc:
            errors = [exc] * len(snapshots)
        for (plog, end, _todo, waiters), error in zip(snapshots, errors):
            if error is not None:
                log.error("fsync of %s failed: %s", getattr(plog, "directory", plog), error)
                self._fail(waiters, error)
                continue
            _mark_flushed(plog, end)
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
