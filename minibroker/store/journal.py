"""MessageJournal: persistent messages in append-only segment files, with group commit.

What it holds
-------------
Every persistent message routed to a durable queue is one PUBLISH record (naming all its
durable queues); every settlement of a (message, queue) pair -- ack, dead-letter, expiry,
drop, purge -- is part of a SETTLE record; every delivery-count change is part of a DELIVERY
record. Records are appended to the active segment (`journal/<20-digit id>.seg`); the format
is in `records.py`. Nothing here knows about sockets or the broker's classes: plain data in,
plain data out.

Group commit (`commit`, `sync`, `_sync_loop`)
----------------------------------------------
Appends go into an in-memory buffer. A committer task writes the buffer to the file (`os.pwritev`
at the segment's logical end) and runs one `os.fdatasync` in a one-thread executor, so the event loop keeps accepting publishes while
the disk works; when it returns, every waiter whose records were written before the sync
started is resolved, and if more was appended meanwhile the next round starts at once. Under
load, one fsync covers everything appended while the previous one ran.

Fsync policies (`FSYNC_POLICIES`):
- `always`: `commit()` resolves only after the records are fdatasync'ed. A confirmed message
  survives a process crash, an OS crash and a power loss.
- `interval`: `commit()` resolves once the records are written to the file (page cache); an
  fdatasync runs every `fsync_interval_ms`. A confirmed message survives a process crash
  (kill -9); an OS crash or power loss may lose what was confirmed in the last interval.
- `never`: like `interval` but the journal never calls fdatasync (the kernel writes back in its
  own time, about 30 s on Linux); a power loss may lose any of it.
Under every policy, records not yet committed sit in process memory for at most one loop
turn (always) or one interval, and are lost with the process.

Preallocated segments (`_open_active`, `_preallocate`, `_zero_ahead`)
---------------------------------------------------------------------
A new segment is reserved whole with `os.posix_fallocate` and zero-filled a few MiB ahead of the
records, so an fdatasync of fresh appends has no file size or block allocation to commit. The
logical end is `Segment.written`; a sealed or cleanly closed segment is truncated to it.

Disk failures (`_fail`, `_probe`, `StorageFailure`)
---------------------------------------------------
A failed write or fdatasync drops the fresh PUBLISH records not yet durable (settled with
REJECTED, reported through `on_lost`; their commits fail, so their confirms become nacks) and
refuses new publishes until the background task's retry succeeds. Confirmed records are never
touched; settlements keep buffering and are retried.

Garbage collection and compaction (`maintain`, `_collect_garbage`, `_compact`)
-----------------------------------------------------------------------------
Each segment keeps in memory its count and bytes of live PUBLISH records, and `refs`: the
older segments its SETTLE/DELIVERY records talk about. A segment is deleted when it has no
live messages and no segment it refers to is still on disk (else deleting its settlements
would bring back messages still written in the older segment). A segment (not the active one)
whose live bytes are under `compact_ratio` of its size is compacted: its live PUBLISH records
are copied to the active segment (with their current queues and delivery counts), the copies
are fsynced, and the old segment is then dead and collected. Disk use follows the live
backlog. The segment a copy goes to refers to the segment it came from: the old one may wait
(it settles messages of an older one) with the stale original in it, and the copy's settlement,
written beside the copy, must not go before it.
The active segment itself is sealed early (`_reclaim_active`) when most of it is settled and
the journal is nearly quiet, so a deleted or purged queue frees its disk within seconds. While
the disk is failing, dead segments are still deleted (not compacted), which is what makes room.

Lazy bodies (`read_body`)
-------------------------
The journal keeps, per live message, one packed int: (segment, record offset, record length,
body length). `read_body(msg_id)` is one `os.pread` of exactly the body. Message ids are the
stable handle: compaction moves records, the id's location follows.

Clean-stop snapshot (`write_snapshot`, `_load_snapshot`)
---------------------------------------------------------
A clean stop writes `clean-stop.snapshot`: every live message's id, location, exchange,
routing key, properties and deadline (as the broker holds them), delivery counts, and every
segment's id, size and references. The next `open` uses it instead of a replay when it names
exactly the segment files on disk, with their sizes, and passes its CRC; it is deleted at that
start either way, so a crash of the next run replays.

Recovery (`open`)
-----------------
Segments are replayed in order; a damaged record followed by whole ones (a flipped bit in old,
fsynced data) is skipped with an ERROR and the records after it are kept (`records.next_record`);
a torn or corrupt tail is cut at the last whole record and logged (the zeros of a preallocated segment's unused tail are the end of the journal, not damage). Replay rebuilds the index, per-segment live counts and references, delivery counts,
and returns the live messages per queue, ordered by message id, without bodies.
"""

import asyncio
import collections
import concurrent.futures
import errno
import logging
import os
import struct
import time
import zlib
from typing import NamedTuple

import msgpack

from .definitions import fsync_directory
from .records import (DELIVERY, HEADER_SIZE, PUBLISH, RECORD_HEADER, SEGMENT_HEADER, SETTLE,
                      decode_segment_header, encode_record, encode_segment_header, iter_records, next_record,
                      nonzero_end)

log = logging.getLogger("minibroker.store")

FSYNC_POLICIES = ("always", "interval", "never")
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
DEFAULT_FSYNC_INTERVAL_MS = 200
DEFAULT_COMPACT_RATIO = 0.5
# Preallocated segments are zero-filled this far ahead of the records (`_zero_ahead`).
ZERO_AHEAD_BYTES = 4 << 20
_ZEROS = bytes(1 << 20)
# Write the append buffer to the file once it holds this much, whatever the policy.
WRITE_OUT_BYTES = 1 << 20
# The active segment is sealed early (`_reclaim_active`) when at least this many of its bytes
# are settled, most of it is settled, and it grew by less than RECLAIM_QUIET_BYTES since the
# previous maintenance pass: so deleting or purging a queue frees its disk within seconds,
# not after a whole segment of further traffic.
RECLAIM_MIN_BYTES = 4 << 20
RECLAIM_QUIET_BYTES = 1 << 20

# Settlement reasons, recorded for the reader of a journal dump; replay treats all alike.
ACK, DEAD_LETTER, EXPIRED, DROPPED, PURGED, REJECTED = range(6)

_RECORD_HEADER_PACK = RECORD_HEADER.pack
_PUBLISH_CRC = zlib.crc32(bytes([PUBLISH]))
_crc32 = zlib.crc32
_IOV_MAX = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024)
_SEG_SHIFT, _OFF_SHIFT, _LEN_SHIFT = 96, 64, 32
_MASK32 = (1 << 32) - 1


def _pack_loc(seg: int, off: int, rec_len: int, body_len: int) -> int:
    return (seg << _SEG_SHIFT) | (off << _OFF_SHIFT) | (rec_len << _LEN_SHIFT) | body_len


def _unpack_loc(loc: int) -> tuple[int, int, int, int]:
    return loc >> _SEG_SHIFT, (loc >> _OFF_SHIFT) & _MASK32, (loc >> _LEN_SHIFT) & _MASK32, loc & _MASK32


class StorageFailure(OSError):
    """The journal cannot make records durable now (disk full, I/O error); `cause` says why."""

    def __init__(self, cause: OSError):
        super().__init__(cause.errno, f"{describe_os_error(cause)}: {cause.strerror or cause}")
        self.cause = cause


def describe_os_error(exc: OSError) -> str:
    """What a person should look at: the disk is full, or failing."""
    if isinstance(exc, StorageFailure):
        exc = exc.cause
    return {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded",
            errno.EIO: "disk I/O error", errno.EROFS: "file system read-only"}.get(exc.errno, "disk error")


class RecoveredMessage(NamedTuple):
    """A live message of one queue as recovery found it (no body: see read_body)."""
    msg_id: int
    exchange: str
    routing_key: str
    properties: dict      # shared among equal messages: treat as read-only
    body_size: int
    published_at: int     # ms since the epoch
    delivery_count: int
    redelivered: bool     # delivered at least once before the restart
    # From a clean-stop snapshot: when the message expires (ms since the epoch; 0: never), as
    # the broker had it. None after a replay: the owner computes it from published_at.
    deadline_ms: int | None = None


class Recovery(NamedTuple):
    queues: dict          # {queue: [RecoveredMessage, ...]} in publish order
    messages: int         # distinct live messages
    bytes: int            # live record bytes on disk
    segments: int
    truncated_bytes: int  # torn or corrupt tail cut off
    seconds: float
    from_snapshot: bool = False   # the clean-stop snapshot was used instead of a replay


# The clean-stop snapshot (`write_snapshot`, `_load_snapshot`): one file beside the segments.
SNAPSHOT_NAME = "clean-stop.snapshot"
SNAPSHOT_MAGIC = b"MBSNAP01"
_SNAPSHOT_HEADER = struct.Struct(">8sQI")   # magic, body length, CRC32 of the body
# 2: the head lists `fanout_one_left`; a version-1 snapshot is not used (the start replays).
SNAPSHOT_VERSION = 2
_MASK64 = (1 << 64) - 1


class Segment:
    __slots__ = ("id", "path", "fd", "size", "written", "synced", "zeroed", "live_count", "live_bytes", "refs")

    def __init__(self, seg_id: int, path: str, fd: int, size: int):
        self.id = seg_id
        self.path = path
        self.fd = fd
        self.size = size        # logical size, buffered appends included
        self.written = size     # bytes handed to the kernel
        self.synced = size      # bytes known to be on disk
        self.zeroed = size      # bytes written at least once (data or zeros): past here, extents are unwritten
        self.live_count = 0
        self.live_bytes = 0
        self.refs: set[int] = set()


def segment_name(seg_id: int) -> str:
    return f"{seg_id:020d}.seg"


class MessageJournal:
    def __init__(self, directory: str, fsync: str = "always",
                 fsync_interval_ms: int = DEFAULT_FSYNC_INTERVAL_MS,
                 segment_bytes: int = DEFAULT_SEGMENT_BYTES,
                 compact_ratio: float = DEFAULT_COMPACT_RATIO, preallocate: bool = True):
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync policy must be one of {', '.join(FSYNC_POLICIES)}, not {fsync!r}")
        self.directory = directory
        self.policy = fsync
        self.fsync_interval = fsync_interval_ms / 1000.0
        self.segment_bytes = segment_bytes
        self.compact_ratio = compact_ratio
        self.preallocate = preallocate
        self.segments: dict[int, Segment] = {}    # id -> Segment, oldest first
        self._active: Segment | None = None
        self._index: dict[int, int] = {}          # msg_id -> packed location
        self._fanout: dict[int, set] = {}         # msg_id -> queues still pending (only if > 1)
        self._delivery: dict[int, dict] = {}      # msg_id -> {queue: delivery_count} (delivered, unsettled)
        self._next_id = 1
        self._buf: list[bytes] = []
        self._buf_bytes = 0
        self._packer = msgpack.Packer(use_bin_type=True)
        # Group commit state.
        self._seq = 0            # records appended
        self._written_seq = 0    # records handed to the kernel
        self._durable_seq = 0    # records fsynced
        self._waiters: collections.deque = collections.deque()   # (seq, future)
        self._sync_task: asyncio.Task | None = None
        self._force = False
        self._unsynced: list[Segment] = []   # rolled segments with writes not yet fsynced
        self._dir_dirty = False
        self._syncing: set[int] = set()
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="journal-fsync")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._background: asyncio.Task | None = None
        self._maintaining = False
        self._closed = False
        self._active_mark = None   # (segment id, size) of the active segment at the last maintenance pass
        self._copy_seq = 0         # seq of the last compaction copy: its original goes once this is durable
        # Disk failures (`_fail`): fresh PUBLISH records not yet durable, as (seq, msg_id, queue
        # or queues), oldest first; the failure in force, if any; who hears of lost messages.
        self._fresh: collections.deque = collections.deque()
        self._publish_seq = 0     # seq of the last fresh PUBLISH appended
        self._answered_seq = 0    # fresh publishes up to here are durable or were reported lost
        self.failure: OSError | None = None
        self._fail_scheduled = False
        self._fsync_failed = False
        self._last_published_at = None   # replay: consecutive records share the int object
        self.on_lost = None       # on_lost(msg_ids, exc): the store drops those messages from memory
        self.stats = collections.Counter()

    # ==== recovery ===========================================================================
    def open(self, durable_queues=None, on_message=None) -> Recovery:
        """Replay the segments; return the live messages per queue. Sync, no loop needed.

        With `on_message(queue, RecoveredMessage)`, live messages are handed over one by one in
        publish order instead of being collected in `Recovery.queues` (which is then empty), so
        a large backlog is never held twice in memory.

        When `durable_queues` is given, messages of queues not in it (deleted while the broker
        was down, or whose deletion record was lost) are settled now, so they never return.
        """
        began = time.monotonic()
        os.makedirs(self.directory, exist_ok=True)
        names = sorted(n for n in os.listdir(self.directory) if n.endswith(".seg"))
        # msg_id -> (loc, pending queue (str) or queues (set), exchange, rk, props_bin, published_at, deliveries)
        # Replay state lives in the index itself until the end (one table, not two, at the peak).
        state: dict[int, tuple] = self._index
        props_cache: dict[bytes, bytes] = {}
        truncated = 0
        max_id = 0
        deadlines = self._load_snapshot(names, state)
        if deadlines is not None:
            max_id = self._next_id - 1
            names = ()          # no replay: the snapshot holds what it would have found
        for name in names:
            seg_id = int(name[:-4])
            path = os.path.join(self.directory, name)
            fd = os.open(path, os.O_RDWR)
            size = os.fstat(fd).st_size
            header = os.pread(fd, SEGMENT_HEADER.size, 0)
            next_id = decode_segment_header(header)
            if next_id is None:
                os.close(fd)
                if size <= SEGMENT_HEADER.size:
                    # Created, but its header never fully reached the disk: it holds nothing.
                    os.unlink(path)
                    log.warning("journal segment %s was created but never written (%d bytes); removed", path, size)
                else:
                    aside = path + ".corrupt"
                    os.rename(path, aside)
                    log.error("journal segment %s has no valid header; moved aside to %s (%d bytes)",
                              path, aside, size)
                truncated += size
                continue
            max_id = max(max_id, next_id - 1)
            seg = Segment(seg_id, path, fd, size)
            self.segments[seg_id] = seg
            start = SEGMENT_HEADER.size
            while True:
                records = iter_records(fd, start, size)
                while True:
                    try:
                        off, rtype, payload = next(records)
                    except StopIteration as stop:
                        good_end = stop.value
                        break
                    try:
                        max_id = self._replay(seg, off, rtype, payload, state, props_cache, max_id)
                    except Exception as exc:
                        # A whole record with a right CRC but a payload of the wrong shape: written
                        # by something else, or a bug. Skipped like a damaged one, below.
                        log.error("journal segment %s: record at offset %d has a valid CRC but an unreadable "
                                  "payload (%s: %s)", path, off, type(exc).__name__, exc)
                        records.close()
                        good_end = off
                        break
                if good_end >= size:
                    break
                # A damaged record followed by whole ones is not a torn tail (a flipped bit, a stray
                # write in fsynced data): skip it and keep everything after it.
                resume = next_record(fd, good_end, size)
                if resume is None:
                    break
                log.error("journal segment %s: %d damaged bytes at offset %d skipped; the records after them "
                          "are kept. What the damaged record held is lost: a message published in it is gone, "
                          "an ack or delivery count recorded in it is undone (those messages are delivered "
                          "again)", path, resume - good_end, good_end)
                start = resume
            if good_end < size:
                # Past the last whole record: the zeros of a preallocated segment (the end of
                # the journal, not damage), maybe preceded by a torn record. Only non-zero
                # bytes count as cut; the file is truncated either way, releasing the space.
                torn_end = nonzero_end(fd, good_end, size)
                if torn_end > good_end:
                    log.warning("journal segment %s: cut %d bytes of torn or corrupt tail at offset %d "
                                "(the last whole record ends there)%s", path, torn_end - good_end, good_end,
                                f"; {size - torn_end} bytes of unused preallocated space follow" if size > torn_end else "")
                    truncated += torn_end - good_end
                os.ftruncate(fd, good_end)
                os.fsync(fd)
                seg.size = seg.written = seg.synced = good_end
        self._next_id = max_id + 1
        # Turn replay state into the live index and the per-queue lists.
        queues: dict[str, list] = collections.defaultdict(list)
        orphans: dict[str, list] = collections.defaultdict(list)
        orphan_segments: set[int] = set()
        recovered_queues: set[str] = set()
        decoded_props: dict[bytes, dict] = {}
        live_bytes = 0
        for msg_id in sorted(state):
            loc, pending, exchange, rk, props_bin, published_at, deliveries = state[msg_id]
            props = decoded_props.get(props_bin)
            if props is None:
                props = decoded_props[props_bin] = msgpack.unpackb(props_bin, raw=False) if props_bin else {}
            seg_id, _off, rec_len, body_len = _unpack_loc(loc)
            kept = set()
            for q in ((pending,) if type(pending) is str else pending):
                if durable_queues is not None and q not in durable_queues:
                    orphans[q].append(msg_id)
                    orphan_segments.add(seg_id)
                    continue
                kept.add(q)
                count = deliveries.get(q, 0) if deliveries else 0
                rm = RecoveredMessage(msg_id, exchange, rk, props, body_len, published_at, count, count > 0,
                                      None if deadlines is None else deadlines.get(msg_id, 0))
                if on_message is None:
                    queues[q].append(rm)
                else:
                    on_message(q, rm)
                    recovered_queues.add(q)
            if not kept:
                del state[msg_id]
                continue
            state[msg_id] = loc     # from replay tuple to the index's packed location
            if type(pending) is not str:
                # The record names several queues: remember which are still pending, even if only
                # one is left, or compaction would copy the record's full list forward.
                self._fanout[msg_id] = kept
            if deliveries:
                kept_deliveries = {q: c for q, c in deliveries.items() if q in kept and c > 0}
                if kept_deliveries:
                    self._delivery[msg_id] = kept_deliveries
            seg = self.segments[seg_id]
            seg.live_count += 1
            seg.live_bytes += rec_len
            live_bytes += rec_len
        props_cache.clear()
        self._open_active()
        # The settlements below talk about these segments: keep the new one until they are gone.
        self._active.refs.update(orphan_segments)
        for q, ids in orphans.items():
            log.info("journal: dropping %d messages of queue %r, which is no longer durable or declared", len(ids), q)
            self._append(SETTLE, [q, PURGED, ids])
        if orphans:
            self.flush_sync()
        recovery = Recovery(dict(queues), len(self._index), live_bytes, len(self.segments), truncated,
                            time.monotonic() - began, deadlines is not None)
        log.info("journal recovered %d messages (%d bytes live) in %d queues from %d segments in %.3f s%s%s",
                 recovery.messages, live_bytes, len(recovered_queues or recovery.queues), recovery.segments,
                 recovery.seconds, " from the clean-stop snapshot (no replay)" if deadlines is not None else "",
                 f"; cut {truncated} bytes of torn tail" if truncated else "")
        return recovery

    # ==== clean-stop snapshot ==================================================================
    def _snapshot_path(self) -> str:
        return os.path.join(self.directory, SNAPSHOT_NAME)

    def write_snapshot(self, queues) -> bool:
        """At a clean stop, after everything is written and fsynced: save what `open` needs to
        skip the replay. Returns whether a snapshot was written.

        `queues` yields (queue name, [(msg_id, exchange, routing_key, properties_bin,
        deadline_ms or None), ...]) for every live message of every durable queue, as the broker
        holds them. The snapshot is kept only if that covers the journal's live (message,
        queue) pairs exactly; otherwise (a message the broker no longer holds, say an unacked
        one whose connection did not close in time) the next start replays.

        Layout after the header (magic, body length, CRC32 of the body): a stream of msgpack
        objects, so neither side ever holds the whole backlog twice: a map (version, next id,
        every segment's [id, size, refs], the ids of several-queue records with one queue left), then per queue its name followed by one array per
        message: [msg_id, location >> 64, location & 2**64-1, exchange, routing_key,
        properties_bin, deadline_ms or nil, {queue: delivery count} or nil].
        """
        if self.failure is not None or self._fsync_failed or self._buf:
            return False
        path = self._snapshot_path()
        tmp = path + ".tmp"
        index = self._index
        fanout = self._fanout
        delivery = self._delivery
        pack = msgpack.Packer(use_bin_type=True).pack
        # A record naming several queues with one left pending: without this the next start
        # would take it for a one-queue record, and compaction would copy the record's full
        # queue list forward, bringing back the queues already settled.
        one_left = [msg_id for msg_id, pending in fanout.items() if len(pending) == 1]
        head = pack({"version": SNAPSHOT_VERSION, "next_id": self._next_id,
                     "segments": [[seg.id, seg.written, sorted(seg.refs)] for seg in self.segments.values()],
                     "fanout_one_left": one_left})
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        done = False
        try:
            _write_all(fd, _SNAPSHOT_HEADER.pack(SNAPSHOT_MAGIC, 0, 0))   # filled in at the end
            out = [head]
            out_bytes = len(head)
            crc = 0
            length = 0
            pairs = 0
            for name, msgs in queues:
                out.append(pack(name))
                for msg_id, exchange, rk, props_bin, deadline in msgs:
                    loc = index.get(msg_id)
                    if loc is None or (msg_id in fanout and name not in fanout[msg_id]):
                        log.info("journal: no clean-stop snapshot (queue %r holds message %d, which the journal "
                                 "does not have live for it); the next start replays", name, msg_id)
                        return False
                    # The packed location is 128 bits: msgpack takes it as two 64-bit halves.
                    item = pack((msg_id, loc >> 64, loc & _MASK64, exchange, rk, props_bin, deadline,
                                 delivery.get(msg_id)))
                    out.append(item)
                    out_bytes += len(item)
                    pairs += 1
                    if out_bytes >= WRITE_OUT_BYTES:
                        chunk = b"".join(out)
                        crc = zlib.crc32(chunk, crc)
                        _write_all(fd, chunk)
                        length += len(chunk)
                        out, out_bytes = [], 0
            expected = len(index) + sum(len(p) - 1 for p in fanout.values())
            if pairs != expected:
                log.info("journal: no clean-stop snapshot (the queues hold %d of the journal's %d live messages); "
                         "the next start replays", pairs, expected)
                return False
            chunk = b"".join(out)
            crc = zlib.crc32(chunk, crc)
            _write_all(fd, chunk)
            length += len(chunk)
            os.pwrite(fd, _SNAPSHOT_HEADER.pack(SNAPSHOT_MAGIC, length, crc), 0)
            os.fsync(fd)
            done = True
        finally:
            os.close(fd)
            if not done:
                os.unlink(tmp)
        os.replace(tmp, path)
        fsync_directory(self.directory)
        log.info("journal: clean-stop snapshot of %d messages written (%d bytes)", pairs, length)
        return True

    def _load_snapshot(self, names, state: dict):
        """Fill `state` and `segments` from the clean-stop snapshot; None when there is none to use.

        Used only when its CRC is right and it names exactly the segment files on disk, with
        their sizes (a clean stop is the last writer of every segment; any later start, even
        one killed at once, opens a new segment, so a stale snapshot never matches). Whatever
        the outcome, the file is removed before anything else is written: it describes this
        stop only, and a crash of the next run must replay. Returns {msg_id: deadline_ms} for
        the messages that expire.
        """
        path = self._snapshot_path()
        if os.path.exists(path + ".tmp"):
            os.unlink(path + ".tmp")     # a stop killed while writing it
        if not os.path.exists(path):
            return None
        try:
            try:
                return self._fill_from_snapshot(path, names, state)
            finally:
                os.unlink(path)
                fsync_directory(self.directory)
        except (ValueError, KeyError, TypeError, IndexError, OSError, msgpack.UnpackException) as exc:
            for seg in self.segments.values():
                os.close(seg.fd)
            self.segments.clear()
            state.clear()
            self._next_id = 1
            log.warning("journal: clean-stop snapshot not used (%s: %s); replaying the journal",
                        type(exc).__name__, exc)
            return None

    def _fill_from_snapshot(self, path: str, names, state: dict) -> dict:
        with open(path, "rb") as f:
            magic, length, crc = _SNAPSHOT_HEADER.unpack(f.read(_SNAPSHOT_HEADER.size))
            if magic != SNAPSHOT_MAGIC:
                raise ValueError("wrong magic")
            got, n = 0, 0
            while chunk := f.read(1 << 20):
                got = zlib.crc32(chunk, got)
                n += len(chunk)
            if n != length or got != crc:
                raise ValueError("it fails its length or CRC check")
            f.seek(_SNAPSHOT_HEADER.size)
            items = msgpack.Unpacker(f, raw=False, read_size=1 << 20)
            head = next(items)
            if head["version"] != SNAPSHOT_VERSION:
                raise ValueError(f"version {head['version']!r}")
            segments = head["segments"]
            on_disk = {int(n[:-4]): os.path.getsize(os.path.join(self.directory, n)) for n in names}
            if {seg_id: size for seg_id, size, _refs in segments} != on_disk:
                raise ValueError("the segment files changed since it was written")
            for seg_id, size, refs in segments:
                seg_path = os.path.join(self.directory, segment_name(seg_id))
                fd = os.open(seg_path, os.O_RDWR)
                seg = self.segments[seg_id] = Segment(seg_id, seg_path, fd, size)
                seg.refs = set(refs)
                if decode_segment_header(os.pread(fd, SEGMENT_HEADER.size, 0)) is None:
                    raise ValueError(f"segment {segment_name(seg_id)} has no valid header")
            live = self.segments
            now_ms = int(time.time() * 1000)
            deadlines = {}
            props_cache: dict[bytes, bytes] = {}
            name = None
            for item in items:
                if type(item) is str:
                    name = _intern(item)
                    continue
                msg_id, loc_hi, loc_lo, exchange, rk, props_bin, deadline, deliveries = item
                if name is None or (loc_hi >> (_SEG_SHIFT - 64)) not in live:
                    raise ValueError("an entry points into a segment that is not there")
                entry = state.get(msg_id)
                if entry is not None:    # one record for several queues
                    pending = entry[1] if type(entry[1]) is set else {entry[1]}
                    pending.add(name)
                    state[msg_id] = (entry[0], pending) + entry[2:]
                    continue
                state[msg_id] = ((loc_hi << 64) | loc_lo, name, _intern(exchange), _intern(rk),
                                 props_cache.setdefault(props_bin, props_bin), now_ms, deliveries)
                if deadline is not None:
                    deadlines[msg_id] = deadline
        for msg_id in head["fanout_one_left"]:
            entry = state.get(msg_id)
            if entry is not None and type(entry[1]) is str:
                state[msg_id] = (entry[0], {entry[1]}) + entry[2:]
        self._next_id = int(head["next_id"])
        return deadlines

    def _replay(self, seg, off, rtype, payload, state, props_cache, max_id):
        rec = msgpack.unpackb(payload, raw=False, use_list=True)
        if rtype == PUBLISH:
            msg_id, queues, exchange, rk, props_bin, published_at, deliveries, body = rec
            props_bin = props_cache.setdefault(props_bin, props_bin)   # one bytes object per property set
            loc = _pack_loc(seg.id, off, HEADER_SIZE + len(payload), len(body))
            # A later PUBLISH of the same id is a compaction copy: it carries the current state.
            # The stale original is still on disk, so this segment (where the copy's settlement
            # may sit) must outlive it, as `_compact` recorded (rebuilt here for a replay).
            earlier = state.get(msg_id)
            if earlier is not None:
                self._add_ref(seg, earlier[0])
            pending = queues[0] if len(queues) == 1 else set(queues)
            last = self._last_published_at
            if published_at == last:
                published_at = last     # a batch shares one timestamp object
            else:
                self._last_published_at = published_at
            state[msg_id] = (loc, pending, _intern(exchange), _intern(rk), props_bin, published_at,
                             dict(deliveries) if deliveries else None)
            return max(max_id, msg_id)
        if rtype == SETTLE:
            queue, _reason, ids = rec
            for msg_id in ids:
                entry = state.get(msg_id)
                if entry is None:
                    continue
                self._add_ref(seg, entry[0])
                pending = entry[1]
                if type(pending) is str:
                    if pending == queue:
                        del state[msg_id]
                    continue
                pending.discard(queue)
                if not pending:
                    del state[msg_id]
                elif entry[6]:
                    entry[6].pop(queue, None)
            return max(max_id, max(ids, default=0))
        if rtype == DELIVERY:
            queue, flat = rec
            top = max_id
            for i in range(0, len(flat), 2):
                msg_id, count = flat[i], flat[i + 1]
                top = max(top, msg_id)
                entry = state.get(msg_id)
                if entry is None:
                    continue
                pending = entry[1]
                if not (pending == queue if type(pending) is str else queue in pending):
                    continue
                if entry[6] is None:
                    entry = state[msg_id] = entry[:6] + ({},)
                entry[6][queue] = count
                self._add_ref(seg, entry[0])
            return top
        return max_id

    def _add_ref(self, seg: Segment, loc: int) -> None:
        target = loc >> _SEG_SHIFT
        if target != seg.id:
            seg.refs.add(target)

    def _open_active(self, reserve: int | None = None) -> None:
        """Start a fresh active segment (recovered segments are never appended to).

        `reserve`: bytes to preallocate (the whole segment by default). A segment opened by
        `_reclaim_active` on a quiet journal reserves only ZERO_AHEAD_BYTES, so freeing the
        old one gives its disk back; `_zero_ahead` extends it as records arrive.
        """
        seg_id = max(self.segments, default=0) + 1
        path = os.path.join(self.directory, segment_name(seg_id))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        header = encode_segment_header(self._next_id)
        self._preallocate(fd, path, self.segment_bytes if reserve is None else min(reserve, self.segment_bytes))
        os.pwrite(fd, header, 0)
        seg = Segment(seg_id, path, fd, len(header))
        seg.synced = 0
        self.segments[seg_id] = seg
        old = self._active
        if old is not None:
            # Sealed: give back its unused preallocated space (the next fdatasync of it, which
            # every rolled segment gets, makes the new size durable too).
            os.ftruncate(old.fd, old.written)
            self._unsynced.append(old)
        self._active = seg
        self._dir_dirty = True

    def _preallocate(self, fd: int, path: str, size: int) -> None:
        """Reserve the whole segment now, so an fdatasync of fresh appends writes data only.

        Appending to a growing file makes every fdatasync also commit the file's new size and
        block allocation to the file-system journal (4 KiB + fdatasync here: 1.4-3x the rate
        into a preallocated, zero-filled file; docs/minibroker-durability.md 5.1). With the
        file's blocks and size set once here, the
        records are written at explicit offsets (`os.pwritev`) inside it; the logical end is
        `Segment.written`, and recovery reads the zeros after it as the end of the journal.
        """
        if not self.preallocate:
            return
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:   # a file system without it, or no room: appends still work
            log.warning("journal segment %s could not be preallocated (%s); appending without", path, exc)

    # ==== appends ==============================================================================
    def append_publish(self, queues, exchange: str, routing_key: str, properties, body: bytes,
                       published_at: int | None = None, properties_bin: bytes | None = None) -> int:
        """Journal a persistent message for its durable `queues`; returns its message id.

        `properties_bin` is `pack_properties(properties)` when the caller already has it.
        """
        if self.failure is not None:
            raise StorageFailure(self.failure)
        msg_id = self._next_id
        self._next_id += 1
        props_bin = properties_bin if properties_bin is not None else self.pack_properties(properties)
        if published_at is None:
            published_at = int(time.time() * 1000)
        queues = list(queues)
        self._append_publish_record(msg_id, queues, exchange, routing_key, props_bin, published_at, None, body)
        if len(queues) > 1:
            self._fanout[msg_id] = set(queues)
        self._fresh.append((self._seq, msg_id, queues))
        self._publish_seq = self._seq
        return msg_id

    def append_publish_one(self, queue: str, exchange: str, routing_key: str, properties_bin: bytes,
                           body: bytes) -> int:
        """`append_publish` for the broker's hot path: one queue, properties already packed.

        The same record as `append_publish`, built inline (header and payload go to the buffer
        as two pieces for writev, with no concatenated copy); the general path stays the
        readable reference and the tests check both.
        """
        if self.failure is not None:
            raise StorageFailure(self.failure)
        msg_id = self._next_id
        self._next_id = msg_id + 1
        payload = self._packer.pack([msg_id, [queue], exchange, routing_key, properties_bin,
                                     int(time.time() * 1000), {}, body])
        n = HEADER_SIZE + len(payload)
        seg = self._active
        if seg.size + n > self.segment_bytes or self._closed:
            # Rare: roll the segment (or refuse, closed) through the general path.
            seg, off, n = self._append_payload(PUBLISH, payload)
        else:
            off = seg.size
            seg.size = off + n
            buf = self._buf
            buf.append(_RECORD_HEADER_PACK(len(payload), _crc32(payload, _PUBLISH_CRC), PUBLISH))
            buf.append(payload)
            self._buf_bytes += n
            self._seq += 1
            if self._buf_bytes >= WRITE_OUT_BYTES:
                try:
                    self._write_out()
                except OSError as exc:
                    self._fail_soon(exc)
            if self._sync_task is None and self.policy == "always" and self._loop is not None:
                self._kick()
        self._fresh.append((self._seq, msg_id, queue))
        self._publish_seq = self._seq
        self._index[msg_id] = (seg.id << _SEG_SHIFT) | (off << _OFF_SHIFT) | (n << _LEN_SHIFT) | len(body)
        seg.live_count += 1
        seg.live_bytes += n
        return msg_id

    def pack_properties(self, properties) -> bytes:
        return self._packer.pack(properties) if properties else b""

    def _append_publish_record(self, msg_id, queues, exchange, rk, props_bin, published_at, deliveries, body):
        payload = self._packer.pack([msg_id, queues, exchange, rk, props_bin, published_at, deliveries or {}, body])
        seg, off, rec_len = self._append_payload(PUBLISH, payload)
        self._index[msg_id] = _pack_loc(seg.id, off, rec_len, len(body))
        seg.live_count += 1
        seg.live_bytes += rec_len

    def append_settle(self, queue: str, msg_ids, reason: int = ACK) -> None:
        """Journal that `queue` is done with `msg_ids` (ack, dead-letter, expiry, drop, purge)."""
        settled = []
        active = self._active
        index = self._index
        for msg_id in msg_ids:
            loc = index.get(msg_id)
            if loc is None:
                continue
            pending = self._fanout.get(msg_id)
            if pending is not None:
                if queue not in pending:
                    continue
                pending.discard(queue)
                if len(pending) == 0:
                    del self._fanout[msg_id]
            settled.append(msg_id)
            seg_id = loc >> _SEG_SHIFT
            if seg_id != active.id:
                active.refs.add(seg_id)
            if pending:
                d = self._delivery.get(msg_id)
                if d:
                    d.pop(queue, None)
                continue
            del index[msg_id]
            self._delivery.pop(msg_id, None)
            seg = self.segments[seg_id]
            seg.live_count -= 1
            seg.live_bytes -= (loc >> _LEN_SHIFT) & _MASK32
        if settled:
            self._append(SETTLE, [queue, reason, settled])
            self.stats["settles"] += len(settled)

    def append_delivery(self, queue: str, counts) -> None:
        """Journal delivery counts: `counts` is [(msg_id, delivery_count), ...], count >= 1.

        A message with a DELIVERY record comes back after a restart with redelivered=True and
        its last delivery count, so x-delivery-limit keeps counting across restarts.
        """
        flat = []
        active = self._active
        for msg_id, count in counts:
            loc = self._index.get(msg_id)
            if loc is None:
                continue
            pending = self._fanout.get(msg_id)
            if pending is not None and queue not in pending:
                continue
            d = self._delivery.get(msg_id)
            if d is None:
                d = self._delivery[msg_id] = {}
            d[queue] = count
            flat += (msg_id, count)
            seg_id = loc >> _SEG_SHIFT
            if seg_id != active.id:
                active.refs.add(seg_id)
        if flat:
            self._append(DELIVERY, [queue, flat])

    def _append(self, rtype: int, obj) -> None:
        self._append_payload(rtype, self._packer.pack(obj))

    def _append_payload(self, rtype: int, payload: bytes):
        if self._closed:
            raise RuntimeError("the message journal is closed")
        rec = encode_record(rtype, payload)
        seg = self._active
        if seg.size + len(rec) > self.segment_bytes and seg.size > SEGMENT_HEADER.size:
            try:
                self._write_out()
            except OSError as exc:
                log.error("journal write to %s failed: %s; not rolling the segment yet", seg.path, exc)
            else:
                self._open_active()
                seg = self._active
        off = seg.size
        n = len(rec)
        seg.size = off + n
        self._buf.append(rec)
        self._buf_bytes += n
        self._seq += 1          # also the count of records appended (records_appended)
        if self._buf_bytes >= WRITE_OUT_BYTES:
            try:
                self._write_out()
            except OSError as exc:
                self._fail_soon(exc)
        if self.policy == "always" and self._sync_task is None and self._loop is not None:
            self._kick()
        return seg, off, n

    def write_out_now(self) -> None:
        """Hand what was appended to the kernel now (it then survives a process crash); a disk
        error is handled as a failed write-out is (`_fail_soon`), never raised."""
        try:
            self._write_out()
        except OSError as exc:
            self._fail_soon(exc)

    def _write_out(self) -> None:
        """Hand the append buffer to the kernel (page cache): survives kill -9 from here on.

        On an I/O error (disk full) what was not written stays in the buffer, in order, and the
        error is raised; the next write-out retries. Nothing is reported durable meanwhile.
        """
        if self._buf:
            buf = self._buf
            self._buf = []
            self._buf_bytes = 0
            seg = self._active
            written = 0
            try:
                if seg.written + self._pending_bytes(buf) > seg.zeroed and seg.zeroed < self.segment_bytes:
                    self._zero_ahead(seg)
                # pwritev at the logical end (the file is preallocated, so not O_APPEND), and
                # not a joined copy: no second megabyte-sized buffer per write-out.
                for i in range(0, len(buf), _IOV_MAX):
                    chunk = buf[i:i + _IOV_MAX]
                    done = os.pwritev(seg.fd, chunk, seg.written)
                    want = sum(map(len, chunk))
                    if done < want:   # a short write: finish it plainly
                        view = memoryview(b"".join(chunk))[done:]
                        while view:
                            n = os.pwrite(seg.fd, view, seg.written + done)
                            done += n
                            view = view[n:]
                    written = i + len(chunk)
                    seg.written += want
                    self.stats["bytes_written"] += want
            except OSError:
                # A partly written record needs no cleanup: the retry writes at the same offset.
                rest = buf[written:]
                self._buf = rest + self._buf
                self._buf_bytes = sum(map(len, self._buf))
                self.stats["write_errors"] += 1
                raise
        self._written_seq = self._seq
        if self.policy != "always":   # written is as safe as these policies promise
            self._fresh.clear()
            self._answered_seq = self._seq

    @staticmethod
    def _pending_bytes(buf) -> int:
        return sum(map(len, buf))

    def _zero_ahead(self, seg: Segment) -> None:
        """Write zeros over the next ZERO_AHEAD_BYTES of the preallocated segment.

        posix_fallocate leaves *unwritten* extents; the first data write into one must convert
        it, and that conversion is a file-system journal commit at the next fdatasync -- nearly
        the cost of a growing file. Zeros written once here, a few MiB at a time and ahead of
        the records, turn the extents into written ones (one conversion per step, flushed with
        the next fdatasync); the fsyncs of the records that follow carry data only.
        """
        if not self.preallocate:
            seg.zeroed = self.segment_bytes
            return
        start = max(seg.zeroed, seg.written)
        end = min(self.segment_bytes, start + ZERO_AHEAD_BYTES)
        view = memoryview(_ZEROS)
        pos = start
        while pos < end:
            pos += os.pwrite(seg.fd, view[:min(len(_ZEROS), end - pos)], pos)
        seg.zeroed = end
        self.stats["bytes_zeroed"] += end - start

    # ==== group commit =========================================================================
    def commit(self) -> asyncio.Future:
        """A future resolved when everything appended so far is as safe as the policy promises."""
        loop = self._loop or self._bind_loop()
        fut = loop.create_future()
        if self.failure is not None and self._answered_seq >= self._publish_seq:
            # Every publish so far is durable or was reported lost; what is still pending
            # (settlements) is retried by the background task, and holds no confirm back.
            fut.set_result(None)
        elif self.policy != "always":
            try:
                self._write_out()
                fut.set_result(None)
            except OSError as exc:
                self._waiters.append((self._seq, fut))
                self._fail_soon(exc)
        elif self._durable_seq >= self._seq:
            fut.set_result(None)
        else:
            self._waiters.append((self._seq, fut))
            self._kick()
        return fut

    def sync(self) -> asyncio.Future:
        """A future resolved once everything appended so far is fsynced, whatever the policy."""
        loop = self._loop or self._bind_loop()
        fut = loop.create_future()
        if self._durable_seq >= self._seq and not self._unsynced and not self._dir_dirty:
            fut.set_result(None)
            return fut
        if self.failure is not None:
            fut.set_exception(StorageFailure(self.failure))
            return fut
        self._waiters.append((self._seq, fut))
        self._force = True
        self._kick()
        return fut

    def _bind_loop(self):
        self._loop = asyncio.get_running_loop()
        return self._loop

    def _kick(self) -> None:
        if self._sync_task is None and self.failure is None:   # while failed, the background task retries
            self._sync_task = self._loop.create_task(self._sync_loop())

    async def _sync_loop(self):
        try:
            while not self._closed and (self._waiters or self._force
                                        or (self.policy == "always" and self._durable_seq < self._seq)):
                self._force = False
                await self._sync_round()
        except Exception as exc:
            self._sync_task = None
            self._fail(exc if isinstance(exc, OSError) else OSError(errno.EIO, f"{type(exc).__name__}: {exc}"))
        finally:
            self._sync_task = None

    # ==== disk failures ========================================================================
    def _fail_soon(self, exc: OSError) -> None:
        """A write failed inside an append or a commit: handle it once the caller is done."""
        if not self._fail_scheduled and self._loop is not None:
            self._fail_scheduled = True
            self._loop.call_soon(self._fail, exc)

    def _fail(self, exc: OSError) -> None:
        """A write or fsync failed: publishes not yet durable are lost; refuse new ones.

        The fresh PUBLISH records appended since the last durable point cannot be promised any
        more (after a failed fdatasync Linux may already have dropped the dirty pages), so they
        are settled here (a REJECTED SETTLE record follows them: if their bytes ever reach the
        disk, replay still does not bring them back), their ids leave the index, waiting
        commits fail (their confirms become nacks) and `on_lost` tells the store to drop the
        messages from memory. Until a retry succeeds (`_probe`), new publishes are refused
        (`StorageFailure`); settlements and delivery counts keep buffering and are retried,
        since losing them only means redelivery.
        """
        self._fail_scheduled = False
        first = self.failure is None
        self.failure = exc
        self.stats["storage_failures"] += 1
        lost = list(self._fresh)
        self._fresh.clear()
        self._answered_seq = self._publish_seq
        if lost and self.on_lost is not None:
            # Before they leave the index: the owner may still read a body it wants to keep.
            self.on_lost([msg_id for _seq, msg_id, _q in lost], exc)
        by_queue: dict[str, list] = {}
        for _seq, msg_id, queues in lost:
            for q in ((queues,) if type(queues) is str else queues):
                by_queue.setdefault(q, []).append(msg_id)
        for q, ids in by_queue.items():
            self.append_settle(q, ids, REJECTED)
        if first or lost:
            log.error("journal: %s (%s: %s); %d persistent messages not yet durable were dropped and their "
                      "publishes nacked; new persistent publishes are refused until the disk recovers",
                      describe_os_error(exc), type(exc).__name__, exc, len(lost))
        err = StorageFailure(exc)
        while self._waiters:
            _, fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(err)

    async def _probe(self) -> None:
        """While failed: try to write and fsync what is pending; on success, accept publishes again."""
        if self._sync_task is not None:
            return
        try:
            await self._sync_round()
        except OSError as exc:
            self.failure = exc
            return
        log.warning("journal: the disk accepts writes again; persistent publishes are accepted again "
                    "(failed for %s)", describe_os_error(self.failure))
        self.failure = None

    async def _sync_round(self):
        self._write_out()
        target = self._written_seq
        segs = self._unsynced + [self._active]
        self._unsynced = []
        dir_dirty, self._dir_dirty = self._dir_dirty, False
        marks = [(seg, seg.written) for seg in segs]
        fds = [seg.fd for seg in segs]
        self._syncing.update(seg.id for seg in segs)
        try:
            took = await self._loop.run_in_executor(self._executor, _fdatasync_all, fds,
                                                    self.directory if dir_dirty else None)
            self.stats["fsync_us"] += int(took * 1e6)
        except BaseException as exc:
            if isinstance(exc, OSError):
                # Linux may have dropped the dirty pages that failed to reach the disk and will
                # not report it again: a later successful fsync proves nothing about them. So no
                # segment is deleted (nor compacted) until a restart re-reads what is really there.
                self._fsync_failed = True
            # Nothing is known to be on disk: the next round syncs these files again.
            self._unsynced = [seg for seg in segs if seg is not self._active] + self._unsynced
            self._dir_dirty = self._dir_dirty or dir_dirty
            raise
        finally:
            self._syncing.difference_update(seg.id for seg in segs)
        for seg, mark in marks:
            seg.synced = max(seg.synced, mark)
        self.stats["fsyncs"] += 1
        self._durable_seq = target
        fresh = self._fresh
        while fresh and fresh[0][0] <= target:
            fresh.popleft()
        if self._answered_seq < target:
            self._answered_seq = target
        waiters = self._waiters
        while waiters and waiters[0][0] <= target:
            _, fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)

    def flush_sync(self) -> None:
        """Write and fsync everything now, blocking (startup, shutdown, tests)."""
        self._write_out()
        for seg in self._unsynced + [self._active]:
            os.fdatasync(seg.fd)
            seg.synced = seg.written
        self._unsynced = []
        fsync_directory(self.directory)
        self._dir_dirty = False
        self._durable_seq = self._answered_seq = self._seq
        self._fresh.clear()
        self.stats["fsyncs"] += 1

    # ==== background work ======================================================================
    def start(self) -> None:
        """Bind to the running loop and start the interval fsync and the maintenance task."""
        self._bind_loop()
        self._background = self._loop.create_task(self._background_loop())

    async def _background_loop(self):
        period = self.fsync_interval if self.policy == "interval" else 0.2
        last_maintain = time.monotonic()
        while True:
            await asyncio.sleep(period)
            try:
                if self.failure is not None:
                    await self._probe()
                    continue
                if self.policy == "interval":
                    await self.sync()
                else:
                    self._write_out()
                if time.monotonic() - last_maintain >= 1.0:
                    last_maintain = time.monotonic()
                    await self.maintain()
            except asyncio.CancelledError:
                raise
            except StorageFailure:
                pass           # already reported by _fail
            except OSError as exc:
                self._fail(exc)
            except Exception:
                log.exception("journal background work failed")

    async def maintain(self) -> dict:
        """Seal a mostly-settled active segment, compact mostly-dead segments, then delete dead
        ones. Returns what it did.

        While the disk is failing (`failure`), only dead segments are deleted, and only when no
        compaction copy is still waiting to be made durable: that is what frees room on a full
        disk once a queue is deleted or purged. After a failed fdatasync nothing is deleted.
        """
        if self._maintaining or self._fsync_failed:
            return {"compacted": 0, "deleted": 0, "rolled": 0}
        if self.failure is not None:
            deleted = self._collect_garbage() if self._durable_seq >= self._copy_seq else 0
            return {"compacted": 0, "deleted": deleted, "rolled": 0}
        self._maintaining = True
        try:
            rolled = self._reclaim_active()
            compacted = 0
            for seg in list(self.segments.values()):
                if seg is self._active or seg.live_count == 0 or seg.id not in self.segments:
                    continue
                data_bytes = seg.size - SEGMENT_HEADER.size
                if seg.live_bytes < self.compact_ratio * data_bytes:
                    await self._compact(seg)
                    compacted += 1
            if compacted or rolled:
                await self.sync()    # the copies (and a sealed segment) are on disk before any original goes
            deleted = self._collect_garbage()
            return {"compacted": compacted, "deleted": deleted, "rolled": rolled}
        finally:
            self._maintaining = False

    def _reclaim_active(self) -> int:
        """Seal the active segment when most of it is settled and the journal is nearly quiet.

        The active segment is never compacted or deleted, so without this a queue deleted or
        purged on a quiet broker kept its bytes until a whole segment of new records had been
        written. Sealed, the old segment is an ordinary one: deleted when dead, compacted (its
        live records copied forward) when under `compact_ratio`. The new active segment
        reserves only ZERO_AHEAD_BYTES, or nothing would be freed. Busy journals roll by
        filling their segment, as before.
        """
        seg = self._active
        mark, self._active_mark = self._active_mark, (seg.id, seg.size)
        data = seg.size - SEGMENT_HEADER.size
        if (mark is None or mark[0] != seg.id or seg.size - mark[1] >= RECLAIM_QUIET_BYTES
                or data - seg.live_bytes < RECLAIM_MIN_BYTES or seg.live_bytes >= self.compact_ratio * data):
            return 0
        self._write_out()
        self._open_active(reserve=ZERO_AHEAD_BYTES)
        self._active_mark = None
        self.stats["reclaim_rolls"] += 1
        log.info("journal: sealed the active segment %s early: %d of its %d bytes are settled",
                 segment_name(seg.id), data - seg.live_bytes, data)
        return 1

    async def _compact(self, seg: Segment) -> None:
        """Copy the live PUBLISH records of `seg` to the active segment."""
        self._write_out()
        copied = 0
        records = iter_records(seg.fd, SEGMENT_HEADER.size, seg.written)
        for n, (off, rtype, payload) in enumerate(records):
            if n % 4096 == 4095:
                await asyncio.sleep(0)   # a 64 MiB segment is ~250k records: let clients in meanwhile
            if rtype != PUBLISH:
                continue
            msg_id = _peek_msg_id(payload)
            loc = self._index.get(msg_id)
            if loc is None or loc >> _SEG_SHIFT != seg.id or (loc >> _OFF_SHIFT) & _MASK32 != off:
                continue   # settled, or already copied: no need to unpack it
            rec = msgpack.unpackb(payload, raw=False)
            _, queues, exchange, rk, props_bin, published_at, _deliveries, body = rec
            pending = self._fanout.get(msg_id)
            if pending is not None:
                queues = sorted(pending)
            seg.live_count -= 1
            seg.live_bytes -= HEADER_SIZE + len(payload)
            self._append_publish_record(msg_id, queues, exchange, rk, props_bin, published_at,
                                        self._delivery.get(msg_id), body)
            # The copy's segment refers to the original's: a later settlement of the copy may be
            # written in the copy's own segment (no reference then), and while a stale original
            # is on disk, deleting that settlement would bring the message back at a replay.
            self._active.refs.add(seg.id)
            self.stats["compaction_copies"] += 1
            self._copy_seq = self._seq
            copied += 1
            if copied % 512 == 0:
                await asyncio.sleep(0)   # let publishers and consumers in
        self.stats["compactions"] += 1
        log.info("journal: compacted segment %s, copied %d live messages forward", segment_name(seg.id), copied)

    def _collect_garbage(self) -> int:
        deleted = 0
        changed = True
        while changed:
            changed = False
            for seg in list(self.segments.values()):
                if seg is self._active or seg.live_count or seg.id in self._syncing or seg in self._unsynced:
                    continue
                if any(r in self.segments for r in seg.refs):
                    continue
                os.close(seg.fd)
                os.unlink(seg.path)
                del self.segments[seg.id]
                deleted += 1
                changed = True
        if deleted:
            self.stats["segments_deleted"] += deleted
            try:
                fsync_directory(self.directory)
            except OSError as exc:   # the files are gone already; the entries reach the disk later
                log.warning("journal: directory fsync after deleting segments failed: %s", exc)
                self._dir_dirty = True
        return deleted

    # ==== reads =================================================================================
    def read_body(self, msg_id: int) -> bytes:
        """The body of a live message, read from its segment with one pread."""
        loc = self._index.get(msg_id)
        if loc is None:
            raise KeyError(f"message {msg_id} is not in the journal (settled or never journaled)")
        seg_id, off, rec_len, body_len = _unpack_loc(loc)
        seg = self.segments[seg_id]
        end = off + rec_len
        if end > seg.written:
            try:
                self._write_out()
            except OSError:
                return self._body_from_buffer(seg, end, body_len)
        body = os.pread(seg.fd, body_len, end - body_len)
        if len(body) != body_len:
            raise OSError(f"journal segment {seg.path} is shorter than its index says (message {msg_id})")
        return body

    def _body_from_buffer(self, seg: Segment, end: int, body_len: int) -> bytes:
        """A body whose record could not be written yet (failing disk): it is still in the buffer."""
        if seg is not self._active:
            raise OSError(f"journal segment {seg.path}: record not written and not buffered")
        data = b"".join(self._buf)
        rel = end - seg.written
        return data[rel - body_len:rel]

    def location(self, msg_id: int):
        """(segment id, record offset, record length, body length) of a live message, or None."""
        loc = self._index.get(msg_id)
        return None if loc is None else _unpack_loc(loc)

    def __contains__(self, msg_id: int) -> bool:
        return msg_id in self._index

    @property
    def records_appended(self) -> int:
        return self._seq

    @property
    def live_messages(self) -> int:
        return len(self._index)

    def disk_bytes(self) -> int:
        return sum(seg.size for seg in self.segments.values())

    # ==== shutdown ==============================================================================
    async def close(self) -> None:
        if self._closed:
            return
        if self._background is not None:
            self._background.cancel()
            try:
                await self._background
            except (asyncio.CancelledError, Exception):
                pass
        while self._sync_task is not None:
            try:
                await asyncio.shield(self._sync_task)
            except Exception:
                break
        self.close_sync()

    def close_sync(self, snapshot=None) -> None:
        """Flush, fsync and close, blocking. Safe while a committer round is in flight.

        `snapshot`: a callable returning what `write_snapshot` takes, called once everything is
        on disk, so the next start can skip the replay.
        """
        if self._closed:
            return
        if self._background is not None:
            self._background.cancel()
        self._executor.shutdown(wait=True)   # no fdatasync still running on a file we close
        try:
            self._write_out()
            # A clean close leaves no preallocated tail behind (recovery would only skip it).
            os.ftruncate(self._active.fd, self._active.written)
            self.flush_sync()
            if snapshot is not None:
                try:
                    self.write_snapshot(snapshot())
                except Exception as exc:   # the next start replays; nothing else depends on it
                    log.error("journal: clean-stop snapshot could not be written (%s: %s); the next start "
                              "replays", type(exc).__name__, exc)
                    try:
                        os.unlink(self._snapshot_path() + ".tmp")
                    except OSError:
                        pass
        except OSError as exc:
            # Nothing confirmed is at stake (it was durable before its confirm went out); what
            # is lost is unconfirmed publishes and recent settlements (redelivered after restart).
            log.error("journal: could not flush at shutdown (%s: %s); records not yet written are lost",
                      describe_os_error(exc), exc)
        self._closed = True
        if self._sync_task is not None:
            self._sync_task.cancel()
        for seg in self.segments.values():
            os.close(seg.fd)
        while self._waiters:
            _, fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)   # everything is on disk now

    def abandon(self) -> None:
        """Drop everything not yet handed to the kernel and close the files: a process crash."""
        self._closed = True
        if self._background is not None:
            self._background.cancel()
        if self._sync_task is not None:
            self._sync_task.cancel()
        for seg in self.segments.values():
            try:
                os.close(seg.fd)
            except OSError:
                pass
        self._executor.shutdown(wait=False)


_INT_FORMATS = {0xcc: ">B", 0xcd: ">H", 0xce: ">I", 0xcf: ">Q"}


def _peek_msg_id(payload: bytes) -> int:
    """The message id of a PUBLISH payload (first element of its array) without unpacking it."""
    first = payload[1]
    if first < 0x80:                     # positive fixint
        return first
    fmt = _INT_FORMATS.get(first)
    if fmt is None:
        return msgpack.unpackb(payload, raw=False)[0]
    return struct.unpack_from(fmt, payload, 2)[0]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fdatasync_all(fds, directory) -> float:
    """Runs in the committer's thread; returns the seconds the disk took."""
    began = time.perf_counter()
    for fd in fds:
        os.fdatasync(fd)
    if directory is not None:
        fsync_directory(directory)
    return time.perf_counter() - began


_interned: dict = {}


def _intern(s):
    """One string object per distinct exchange / routing key across a million recovered messages."""
    if type(s) is not str:
        return s
    v = _interned.get(s)
    if v is None:
        if len(_interned) > 100_000:
            _interned.clear()
        v = _interned[s] = s
    return v
