"""AIOKafkaConsumer: aiokafka's consumer API over the minilog wire.

Two background tasks do the work while the application awaits `getone()`/`getmany()`:

- `_fetch_loop` keeps one `fetch` (a long poll on the server) in flight for every assigned,
  unpaused partition, and sends the next one as soon as a reply is in, so the server reads
  the log while this client decodes (prefetch). The fetching itself -- positions, epochs,
  the request's arguments, taking the reply, decoding records when `getone`/`getmany` take
  them, a corrupt batch -- is `clients/log/fetch_session.py`'s `FetchSession`, the one the
  confluent-style consumer uses; this module sends, awaits, and maps what the session
  reports to aiokafka's exceptions.
- `_group_loop` (only with a group_id and a subscription) runs the group protocol: join,
  the leader runs the assignor, sync, then heartbeats every `heartbeat_interval_ms` (as
  aiokafka's coordinator task, whatever the application does between `getmany` calls) and
  auto-commits; on REBALANCE_IN_PROGRESS it commits, calls the listener's
  `on_partitions_revoked` and joins again (eager protocol) -- or, when `cooperative-sticky`
  is the only strategy, keeps its partitions, rejoins, and gives up only those that move.
  The protocol is the blocking consumer's: `clients/log/group_protocol.py`'s `GroupMember`
  (no I/O) makes each request and reads each reply, so the two kinds of consumer can share a
  group; this task only sends, awaits and calls the listener.
"""

import asyncio
import logging
import re
import time

import msgpack
import msgspec

from ..aio_rpc import AsyncRpcConnection
from ..log.assignors import ASSIGNORS
from ..log.group_protocol import REJOIN, REJOIN_CODES, GroupMember, plan_assignments, read_members, subscribed_topics
from ..log.config import plain_credentials
from ..log.connection import keeps_fetch_sessions
from ..log.fetch_session import FetchSession, PartitionFetch, RecordBuilder
from ..protocol.errors import BrokerError, ErrorCode
from ..record_batch import BatchError
from ..tls import aiokafka_tls
from .errors import (CommitFailedError, ConsumerStoppedError, IllegalStateError, KafkaConnectionError, KafkaError,
                     from_field, from_wire)
from .producer import _bootstrap
from .structs import ConsumerRecord, OffsetAndMetadata, OffsetAndTimestamp, TopicPartition, batch_record_class

log = logging.getLogger("clients.aio_log")
_new = tuple.__new__
_unpackb = msgpack.unpackb
_Decoder = msgspec.msgpack.Decoder
# Batches with at least this many records are decoded by msgspec into a class made per batch
# (about 11 us to make); smaller ones through a list comprehension.
_CLASS_PER_BATCH = 64


class ConsumerRebalanceListener:
    """Subclass and pass to subscribe(listener=...); either method may be a coroutine."""

    def on_partitions_revoked(self, revoked):
        pass

    def on_partitions_assigned(self, assigned):
        pass


class _Part(PartitionFetch):
    """One assigned partition: the session's fetch state, and this consumer's offsets."""

    __slots__ = ("tp", "want", "committed")

    def __init__(self, tp, want=None):
        super().__init__(tp.topic, tp.partition)
        self.tp = tp
        self.hw = None            # aiokafka's highwater() is None until a fetch told it
        self.log_start = None
        self.want = want          # None: committed else reset; "earliest"/"latest"; or an offset
        self.committed = None


class _RecordBuilder(RecordBuilder):
    """The fetch session's records as ConsumerRecords (deserializers run when they are taken)."""

    def records(self, topic, partition, header, body, offset):
        base, first = header.base_offset, header.first_timestamp
        if header.record_count >= _CLASS_PER_BATCH:
            # msgspec builds each record in C (structs._BatchConsumerRecord), as the
            # confluent-style builder does (clients/log/message.py).
            raw = _Decoder(list[batch_record_class(topic, partition, base, first)]).decode(body)
            if len(raw) != header.record_count:
                raise BatchError(f"batch at offset {base} claims {header.record_count} records, holds {len(raw)}")
            return raw if base >= offset else raw[offset - base:]
        raw = _unpackb(body, use_list=False)
        if base < offset:
            raw = raw[offset - base:]  # the batch starts before the offset asked for
        # One C-level tuple per record.
        return [_new(ConsumerRecord, (topic, partition, base + od, first + td, 0, k, v, None,
                                      -1 if k is None else len(k), -1 if v is None else len(v), hd or ()))
                for od, td, k, v, hd in raw]

    def next_offset(self, record) -> int:
        return record.offset + 1


def _strategy_names(strategies):
    names = []
    for s in strategies:
        name = s if isinstance(s, str) else getattr(s, "name", None)
        if name not in ASSIGNORS:
            raise ValueError(f"unknown partition assignment strategy {s!r}; use one of {sorted(ASSIGNORS)}")
        names.append(name)
    return names


class AIOKafkaConsumer:
    def __init__(self, *topics, bootstrap_servers="localhost:9093", client_id=None, group_id=None,
                 key_deserializer=None, value_deserializer=None, fetch_max_wait_ms=500,
                 fetch_max_bytes=52428800, fetch_min_bytes=1, max_partition_fetch_bytes=1048576,
                 auto_offset_reset="latest", enable_auto_commit=True, auto_commit_interval_ms=5000,
                 session_timeout_ms=10000, heartbeat_interval_ms=3000, max_poll_interval_ms=300000,
                 partition_assignment_strategy=("roundrobin",), loop=None, security_protocol="PLAINTEXT",
                 ssl_context=None, sasl_mechanism="PLAIN", sasl_plain_username=None, sasl_plain_password=None,
                 **ignored):
        self._host, self._port = _bootstrap(bootstrap_servers)
        self._credentials = plain_credentials(security_protocol, sasl_mechanism, sasl_plain_username,
                                              sasl_plain_password)
        self._client_id = client_id or "aiokafka-minilog"
        # TLS, checked now as aiokafka does (clients/tls.py); never a silent plaintext.
        self._ssl_context = aiokafka_tls(security_protocol, ssl_context)
        self._group_id = group_id
        self._key_deserializer = key_deserializer
        self._value_deserializer = value_deserializer
        self._fetch_wait_ms = fetch_max_wait_ms
        self._fetch_max_bytes = fetch_max_bytes
        self._fetch_min_bytes = fetch_min_bytes
        self._partition_max_bytes = max_partition_fetch_bytes
        if auto_offset_reset not in ("earliest", "latest", "none"):
            raise ValueError(f"auto_offset_reset must be 'earliest', 'latest' or 'none', got {auto_offset_reset!r}")
        self._reset = auto_offset_reset
        self._auto_commit = enable_auto_commit and group_id is not None
        self._commit_interval = auto_commit_interval_ms / 1000.0
        self._session_timeout_ms = session_timeout_ms
        self._heartbeat = heartbeat_interval_ms / 1000.0
        self._rebalance_timeout_ms = max_poll_interval_ms
        self._strategies = _strategy_names(partition_assignment_strategy)
        self._initial_topics = topics
        self._conn: AsyncRpcConnection | None = None
        # Positions, prefetched data and decoding: no I/O in there (clients/log/fetch_session.py).
        # A corrupt batch stops its partition, as aiokafka's check_crcs (its default) does.
        self._session = FetchSession(_RecordBuilder(), max_wait_ms=fetch_max_wait_ms, min_bytes=fetch_min_bytes,
                                     max_bytes=fetch_max_bytes, partition_max_bytes=max_partition_fetch_bytes,
                                     check_crcs=True)
        self._data = asyncio.Event()
        self._changed = asyncio.Event()
        self._subscription: list[str] | None = None
        self._pattern = None
        self._listener: ConsumerRebalanceListener | None = None
        # The member's side of the group protocol, without I/O (group_protocol.py).
        self._member = GroupMember(group_id, self._strategies, session_timeout_ms, self._rebalance_timeout_ms,
                                   self._client_id)
        self._tasks: list[asyncio.Task] = []
        self._group_task: asyncio.Task | None = None
        self._closed = False
        self._error: BaseException | None = None

    # ---- lifecycle --------------------------------------------------------------------------
    async def start(self):
        try:
            self._conn = await AsyncRpcConnection.connect(self._host, self._port, self._client_id,
                                                          credentials=self._credentials, expect_server="minilog",
                                                          ssl_context=self._ssl_context)
        except (OSError, BrokerError, asyncio.TimeoutError) as exc:
            raise KafkaConnectionError(f"cannot connect to {self._host}:{self._port}: {exc}") from None
        self._fetch_max_bytes = max(min(self._fetch_max_bytes, self._conn.state.max_frame - 65536), 1024)
        self._session.max_bytes = self._fetch_max_bytes
        self._session.continued = keeps_fetch_sessions(self._conn)
        self._tasks.append(asyncio.ensure_future(self._fetch_loop()))
        if self._initial_topics:
            self.subscribe(topics=list(self._initial_topics))

    async def stop(self):
        if self._closed:
            return
        self._closed = True
        if self._group_task is not None:
            self._group_task.cancel()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, *( [self._group_task] if self._group_task else []),
                             return_exceptions=True)
        try:
            if self._group_id is not None and self._member.member_id and not self._conn.closed:
                if self._auto_commit:
                    await self._commit_positions()
                await self._conn.call(*self._member.leave_request(), timeout=5)
        except Exception as exc:  # leaving is best effort: the session timeout removes us anyway
            log.debug("leaving the group failed: %s", exc)
        self._data.set()
        await self._conn.close()

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, *exc):
        await self.stop()

    async def _call(self, op, args, timeout=30.0):
        try:
            return await self._conn.call(op, args, timeout=timeout)
        except BrokerError as exc:
            raise from_wire(exc.code, exc.message) from None

    @property
    def _parts(self) -> dict:
        """TopicPartition -> _Part, the assignment (held by the fetch session)."""
        return self._session.parts

    # ---- assignment ---------------------------------------------------------------------------
    def subscribe(self, topics=(), pattern=None, listener=None):
        if self._group_id is None:
            raise IllegalStateError("subscribe() needs a group_id; use assign() without one")
        if not topics and pattern is None:
            raise ValueError("subscribe() needs topics or a pattern")
        self._subscription = list(topics)
        self._pattern = re.compile(pattern) if pattern is not None else None
        self._listener = listener
        if self._group_task is None or self._group_task.done():
            self._group_task = asyncio.ensure_future(self._group_loop())

    def subscription(self):
        return set(self._subscription or ())

    def unsubscribe(self):
        if self._group_task is not None:
            self._group_task.cancel()
            self._group_task = None
        self._subscription = None
        self._set_assignment([])

    def assign(self, partitions):
        if self._subscription is not None:
            raise IllegalStateError("assign() cannot be mixed with subscribe()")
        self._set_assignment([TopicPartition(*tp) for tp in partitions])

    def _set_assignment(self, tps):
        new = {}
        for tp in tps:
            part = self._parts.get(tp)
            new[tp] = part if part is not None else _Part(tp)
        self._session.replace(new)  # a partition given up loses what was fetched for it
        self._changed.set()

    def assignment(self):
        return set(self._parts)

    # ---- positions and offsets -------------------------------------------------------------------
    def _part(self, tp) -> _Part:
        part = self._parts.get(tp)
        if part is None:
            raise IllegalStateError(f"{tp} is not assigned to this consumer")
        return part

    def _move(self, part, offset=None, want=None):
        part.want = want
        self._session.seek(part, offset)  # what was prefetched for it is dropped
        self._changed.set()

    def seek(self, partition, offset):
        if offset < 0:
            raise ValueError("offset must be >= 0; use seek_to_beginning()/seek_to_end()")
        self._move(self._part(partition), offset)

    async def seek_to_beginning(self, *partitions):
        for tp in partitions or list(self._parts):
            self._move(self._part(tp), None, "earliest")

    async def seek_to_end(self, *partitions):
        for tp in partitions or list(self._parts):
            self._move(self._part(tp), None, "latest")

    async def seek_to_committed(self, *partitions):
        for tp in partitions or list(self._parts):
            self._move(self._part(tp), None, None)

    async def position(self, partition):
        part = self._part(partition)
        while part.position is None:
            await self._resolve()
            if part.position is None:
                await asyncio.sleep(0.01)
        return part.position

    def highwater(self, partition):
        return self._part(partition).hw

    def last_stable_offset(self, partition):
        return self._part(partition).hw

    async def committed(self, partition):
        if self._group_id is None:
            raise IllegalStateError("committed() needs a group_id")
        result = await self._call("offset_fetch", {"group_id": self._group_id,
                                                   "partitions": [[partition.topic, partition.partition]]})
        for t, p, off, *_ in result.get("offsets", ()):
            return off if off is not None and off >= 0 else None
        return None

    async def _list_offsets(self, items):
        result = await self._call("list_offsets", {"partitions": [[tp.topic, tp.partition, ts] for tp, ts in items]})
        out = {}
        for r in result.get("results", ()):
            err = from_field(r[3] if len(r) > 3 else None)
            if err is not None:
                raise err
            out[TopicPartition(r[0], r[1])] = r[2]
        return out

    async def beginning_offsets(self, partitions):
        return await self._list_offsets([(tp, -2) for tp in partitions])

    async def end_offsets(self, partitions):
        return await self._list_offsets([(tp, -1) for tp in partitions])

    async def offsets_for_times(self, timestamps):
        found = await self._list_offsets(list(timestamps.items()))
        return {tp: (OffsetAndTimestamp(found[tp], timestamps[tp]) if found.get(tp, -1) >= 0 else None)
                for tp in timestamps}

    async def topics(self):
        meta = await self._call("metadata", {"topics": None})
        return set(meta.get("topics") or ())

    def partitions_for_topic(self, topic):
        return None

    def pause(self, *partitions):
        for tp in partitions:
            self._session.pause(self._part(tp))
        self._changed.set()

    def resume(self, *partitions):
        for tp in partitions:
            self._session.resume(self._part(tp))
        self._changed.set()

    def paused(self):
        return {tp for tp, p in self._parts.items() if p.paused}

    async def commit(self, offsets=None):
        if self._group_id is None:
            raise IllegalStateError("commit() needs a group_id")
        if offsets is None:
            items = [(tp, p.position, "") for tp, p in self._parts.items() if p.position is not None]
        else:
            items = []
            for tp, o in offsets.items():
                if isinstance(o, OffsetAndMetadata):
                    items.append((tp, o.offset, o.metadata or ""))
                else:
                    items.append((tp, int(o), ""))
        if not items:
            return
        await self._send_commit(items)

    async def _send_commit(self, items):
        member = self._member
        args = {"group_id": self._group_id, "generation_id": member.generation if member.member_id else -1,
                "member_id": member.member_id, "offsets": [[tp.topic, tp.partition, o, m] for tp, o, m in items]}
        try:
            result = await self._conn.call("offset_commit", args)
        except BrokerError as exc:
            if exc.code in REJOIN_CODES:
                raise CommitFailedError(f"{exc.code}: {exc.message}") from None
            raise from_wire(exc.code, exc.message) from None
        for r in result.get("results", ()):
            err = from_field(r[2] if len(r) > 2 else None)
            if err is not None:
                raise err
        for tp, o, _ in items:
            part = self._parts.get(tp)
            if part is not None:
                part.committed = o

    async def _commit_positions(self, only=None):
        items = [(tp, p.position, "") for tp, p in self._parts.items()
                 if p.position is not None and p.position != p.committed and (only is None or tp in only)]
        if items:
            await self._send_commit(items)

    async def _resolve(self):
        pending = [p for p in self._parts.values() if p.position is None]
        if not pending:
            return
        committed = {}
        if self._group_id is not None and any(p.want is None for p in pending):
            result = await self._call("offset_fetch", {"group_id": self._group_id, "partitions":
                                                       [[p.tp.topic, p.tp.partition] for p in pending if p.want is None]})
            committed = {TopicPartition(r[0], r[1]): r[2] for r in result.get("offsets", ()) if r[2] is not None and r[2] >= 0}
        lookups = []
        for p in pending:
            if isinstance(p.want, int):
                self._move(p, p.want)
            elif p.want is None and p.tp in committed:
                self._move(p, committed[p.tp])
                p.committed = committed[p.tp]
            else:
                mode = p.want or self._reset
                if mode == "none":
                    self._error = from_wire(ErrorCode.OFFSET_OUT_OF_RANGE, f"no committed offset for {p.tp} and "
                                                                           f"auto_offset_reset='none'")
                    self._data.set()
                    continue
                lookups.append((p, -2 if mode == "earliest" else -1))
        if lookups:
            found = await self._list_offsets([(p.tp, ts) for p, ts in lookups])
            for p, _ in lookups:
                if p.position is None and self._parts.get(p.tp) is p:
                    self._move(p, max(found.get(p.tp, 0), 0))

    # ---- fetching ------------------------------------------------------------------------------
    def _send_fetch(self):
        request = self._session.fetch_request()
        if request is None:
            return None, None
        args, token = request
        fut = self._conn.send("fetch", args)
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        return fut, token

    async def _fetch_loop(self):
        session = self._session
        flying = {}   # fetch future -> its session token, in the order sent
        try:
            while not self._closed:
                try:
                    await self._resolve()
                except KafkaError as exc:
                    log.warning("resolving positions failed: %s", exc)
                    await asyncio.sleep(0.2)
                    continue
                # As many fetches in flight as the session wants: one, or in a fetch session
                # two (the parked one and the one that continues after it).
                while session.should_fetch():
                    self._changed.clear()
                    fut, token = self._send_fetch()
                    if fut is None:
                        break
                    flying[fut] = token
                if not flying:
                    if session.held_bytes >= session.prefetch_limit:
                        await asyncio.sleep(0.01)
                    else:
                        await self._wait_changed(0.5)
                    continue
                changed = asyncio.ensure_future(self._changed.wait())
                await asyncio.wait([*flying, changed], return_when=asyncio.FIRST_COMPLETED)
                changed.cancel()
                for fut in [f for f in flying if f.done()]:
                    token = flying.pop(fut)
                    if fut.exception() is not None:
                        exc = fut.exception()
                        if (isinstance(exc, BrokerError) and exc.code == ErrorCode.BAD_REQUEST
                                and session.fetch_refused(token)):
                            continue  # a server without fetch sessions: offsets from now on
                        session.fetch_failed(token)
                        if self._conn.closed:
                            self._error = KafkaConnectionError(str(exc))
                            self._data.set()
                            return
                        log.warning("fetch failed: %s", exc)
                        await asyncio.sleep(0.1)
                        continue
                    # The records stay undecoded until getone/getmany take them; the loop goes
                    # round and sends the next fetch at once (prefetch).
                    errors, _ = session.accept(token, fut.result())
                    for part, err in errors:
                        if err[0] == ErrorCode.OFFSET_OUT_OF_RANGE and self._reset != "none":
                            self._move(part, None, self._reset)
                        else:
                            self._error = from_field(err)
                            self._data.set()
                    if session.has_data():
                        self._data.set()
                if flying and self._changed.is_set():
                    # The assignment moved: fetch again now; the replies still coming are
                    # ignored (in a fetch session the next fetch names its offsets, and the
                    # server answers the ones before it at once).
                    for token in flying.values():
                        session.fetch_failed(token)
                    flying.clear()
        except asyncio.CancelledError:
            pass

    async def _wait_changed(self, timeout):
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    def _take(self, max_records, partitions=None):
        """Up to `max_records` records by TopicPartition, decoded as they are taken. A corrupt
        batch raises KafkaError once, in its place after the records before it (as aiokafka
        with check_crcs), and its partition stops there until a seek."""
        want = max_records if max_records is not None else 1 << 30
        pieces = []
        session = self._session
        event = session.take(want, pieces, only=partitions, stop_at_event=True, grouped=True)
        if not session.has_data():
            self._data.clear()
        if event is not None:
            raise KafkaError(f"{event.text} in {event.topic}-{event.partition}")
        result = {}
        kd, vd = self._key_deserializer, self._value_deserializer
        for part, recs in pieces:
            if kd is not None or vd is not None:
                recs = [_new(ConsumerRecord, (r.topic, r.partition, r.offset, r.timestamp, r.timestamp_type,
                                              kd(r.key) if kd is not None else r.key,
                                              vd(r.value) if vd is not None else r.value, r.checksum,
                                              r.serialized_key_size, r.serialized_value_size, r.headers))
                        for r in recs]
            got = result.get(part.tp)
            if got is None:
                result[part.tp] = recs  # a list of its own (a chunk taken whole, or a slice)
            else:
                got += recs
        return result

    def _raise_pending(self):
        if self._error is not None:
            err, self._error = self._error, None
            raise err
        if self._closed:
            raise ConsumerStoppedError("the consumer is stopped")

    async def getone(self, *partitions):
        wanted = {TopicPartition(*tp) for tp in partitions} or None
        while True:
            self._raise_pending()
            got = self._take(1, wanted)
            if got:
                return next(iter(got.values()))[0]
            self._data.clear()
            await self._data.wait()

    async def getmany(self, *partitions, timeout_ms=0, max_records=None):
        wanted = {TopicPartition(*tp) for tp in partitions} or None
        deadline = time.monotonic() + timeout_ms / 1000.0
        while True:
            self._raise_pending()
            got = self._take(max_records, wanted)
            left = deadline - time.monotonic()
            if got or left <= 0:
                return got
            self._data.clear()
            try:
                await asyncio.wait_for(self._data.wait(), left)
            except asyncio.TimeoutError:
                pass

    def __aiter__(self):
        return self

    async def __anext__(self):
        try:
            return await self.getone()
        except ConsumerStoppedError:
            raise StopAsyncIteration from None

    # ---- the group ------------------------------------------------------------------------------
    def _resolve_topics(self, existing):
        names = set(self._subscription or ())
        if self._pattern is not None:
            names |= {t for t in existing if self._pattern.match(t)}
        return sorted(names)

    async def _listener_call(self, name, tps):
        if self._listener is None:
            return
        result = getattr(self._listener, name)(tps)
        if asyncio.iscoroutine(result):
            await result

    async def _group_loop(self):
        cooperative = self._member.cooperative
        try:
            while not self._closed and self._subscription is not None:
                try:
                    if await self._join_and_sync():
                        continue  # we gave partitions up: rejoin at once so the group hands them over
                    code = await self._heartbeat_until_rebalance()
                    if self._closed:
                        break
                    if cooperative and code == ErrorCode.REBALANCE_IN_PROGRESS:
                        continue  # incremental: keep reading the owned partitions while the group rebalances
                except (KafkaError, asyncio.TimeoutError) as exc:
                    log.info("group %s: %s; joining again", self._group_id, exc)
                    await asyncio.sleep(0.1)
                revoked = set(self._parts)
                if self._auto_commit and revoked:
                    try:
                        await self._commit_positions()
                    except KafkaError as exc:
                        log.info("commit before revoke failed: %s", exc)
                await self._listener_call("on_partitions_revoked", revoked)
                self._set_assignment([])
        except asyncio.CancelledError:
            pass

    async def _join_and_sync(self) -> bool:
        """Join and sync (the same protocol as the blocking consumer, `clients/log/group_protocol.py`).
        Returns True when a cooperative sync took partitions away (the member must rejoin)."""
        existing = ()
        if self._pattern is not None:
            existing = await self.topics()
        topics = self._resolve_topics(existing)
        owned = {}
        for tp in self._parts:
            owned.setdefault(tp.topic, []).append(tp.partition)
        member = self._member
        while True:
            try:
                joined = await self._conn.call(*member.join_request(topics, owned), timeout=None)
            except BrokerError as exc:
                if member.reply_failed(exc.code) == REJOIN:
                    continue
                raise from_wire(exc.code, exc.message) from None
            assignments = []
            if member.joined(joined):
                assignments = await self._assign(member.protocol, joined.get("members") or [])
            try:
                synced = await self._conn.call(*member.sync_request(assignments), timeout=None)
            except BrokerError as exc:
                if member.reply_failed(exc.code) == REJOIN:
                    continue
                raise from_wire(exc.code, exc.message) from None
            try:
                plan = member.synced(synced)
            except ValueError as exc:
                log.warning("group %s: %s", self._group_id, exc)
                plan = member.owned = {}
            tps = sorted(TopicPartition(t, p) for t, ps in plan.items() for p in ps)
            if not member.incremental():
                self._set_assignment(tps)
                await self._listener_call("on_partitions_assigned", set(tps))
                return False
            # Incremental: give up only what moved (committing it first), take only what is new.
            current, new = set(self._parts), set(tps)
            revoked, added = current - new, new - current
            if revoked:
                if self._auto_commit:
                    try:
                        await self._commit_positions(revoked)
                    except KafkaError as exc:
                        log.info("commit before revoke failed: %s", exc)
                await self._listener_call("on_partitions_revoked", revoked)
            self._set_assignment(sorted(current & new) + sorted(added))
            await self._listener_call("on_partitions_assigned", added)
            return bool(revoked)

    async def _assign(self, protocol, members):
        subscriptions, owned = read_members(members)
        topics = subscribed_topics(subscriptions)
        counts = {}
        if topics:
            meta = await self._call("metadata", {"topics": topics})
            counts = {t: len(info.get("partitions") or ()) for t, info in (meta.get("topics") or {}).items()}
        return plan_assignments(protocol, self._strategies, subscriptions, owned, counts)

    async def _heartbeat_until_rebalance(self):
        next_commit = time.monotonic() + self._commit_interval
        # Not `while True`: on Python 3.11 a cancel that lands just as a heartbeat's reply
        # arrives can be lost inside asyncio.wait_for (fixed in 3.12), and stop() would then
        # wait for this loop for ever. Returns None once the consumer is stopped.
        while not self._closed:
            await asyncio.sleep(self._heartbeat)
            try:
                await self._conn.call(*self._member.heartbeat_request())
            except BrokerError as exc:
                if self._member.reply_failed(exc.code) == REJOIN:
                    return exc.code
                raise from_wire(exc.code, exc.message) from None
            if self._auto_commit and time.monotonic() >= next_commit:
                next_commit = time.monotonic() + self._commit_interval
                try:
                    await self._commit_positions()
                except KafkaError as exc:
                    log.info("auto-commit failed: %s", exc)


AIOConsumer = AIOKafkaConsumer
