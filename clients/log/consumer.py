"""The confluent-kafka style Consumer: prefetching fetcher, offsets, and group membership.

The fetch path (docs/clients-minilog.md, "Consumer: prefetch") is `fetch_session.py`'s
`FetchSession`, which does no I/O: it holds each assigned partition's position and fetch
offset, builds each `fetch` request (`_send_fetch` sends it), takes the reply (`_on_fetch`,
run inside `LogConnection.pump`), and decodes records into `Message`s when `consume()`/`poll()`
take them (`message.MessageBuilder`). This module maps what the session reports to
confluent-kafka's behaviour: fetch errors, a corrupt batch or a partition EOF become error
`Message`s in the stream.

Group membership lives in `group.py`; this module calls into it from `_maintain()`.
"""

import collections
import functools
import gc
import logging
import time

from ..protocol.errors import BrokerError, ErrorCode
from ..rpc import ConnectionClosed
from .assignors import parse_strategies
from .config import Config
from .connection import (LogConnection, deadline_of, fetch_answers, keeps_fetch_sessions, parse_bootstrap, remaining,
                         tls_context)
from .errors import ConfigError, KafkaError, KafkaException, error_from_field, error_from_wire, exception_from
from .fetch_session import FetchSession, PartitionFetch
from .group import GroupMembership
from .message import MessageBuilder, error_message
from .topic_partition import OFFSET_BEGINNING, OFFSET_END, OFFSET_INVALID, OFFSET_STORED, TopicPartition

log = logging.getLogger("clients.log")

_CONSUMER_KEYS = {
    "group.id", "auto.offset.reset", "enable.auto.commit", "auto.commit.interval.ms",
    "session.timeout.ms", "heartbeat.interval.ms", "partition.assignment.strategy",
    "enable.partition.eof", "fetch.max.bytes", "fetch.wait.max.ms", "fetch.min.bytes",
    "max.partition.fetch.bytes", "fetch.message.max.bytes", "on_commit", "max.poll.interval.ms",
    "enable.auto.offset.store", "queued.max.messages.kbytes", "group.protocol.type", "check.crcs",
}
_gc_isenabled, _gc_disable, _gc_enable = gc.isenabled, gc.disable, gc.enable
_EARLIEST = {"earliest", "smallest", "beginning"}
_LATEST = {"latest", "largest", "end"}


class _Part(PartitionFetch):
    """One assigned partition: the session's fetch state, and this consumer's offsets."""

    __slots__ = ("need_reset", "stored", "committed", "want")

    def __init__(self, topic, partition, want=OFFSET_INVALID):
        super().__init__(topic, partition)
        self.need_reset = False
        self.stored = None        # offset stored for the next (auto) commit
        self.committed = None     # last offset committed by us
        self.want = want          # the offset asked for at assign(), resolved in _resolve()


class Consumer:
    """`Consumer({'bootstrap.servers': ..., 'group.id': ...})`, as confluent_kafka.Consumer."""

    def __init__(self, config=None, **kwargs):
        conf = dict(config or {})
        conf.update(kwargs)
        cfg = Config(conf, _CONSUMER_KEYS, "Consumer")
        self._host, self._port = parse_bootstrap(cfg.get("bootstrap.servers"))
        self._client_id = cfg.str("client.id", "rdkafka")
        self._credentials = cfg.credentials()
        self._ssl_context = tls_context(cfg)   # security.protocol SSL / SASL_SSL (clients/tls.py)
        self._group_id = cfg.str("group.id", None)
        self._reset = cfg.str("auto.offset.reset", "latest").lower()
        if self._reset not in _EARLIEST | _LATEST | {"error"}:
            raise ConfigError(f"auto.offset.reset must be earliest, latest or error, got {self._reset!r}")
        self._auto_commit = cfg.bool("enable.auto.commit", True) and self._group_id is not None
        self._auto_store = cfg.bool("enable.auto.offset.store", True)
        self._commit_interval = cfg.int("auto.commit.interval.ms", 5000) / 1000.0
        self._session_timeout_ms = cfg.int("session.timeout.ms", 45000)
        self._heartbeat_ms = cfg.int("heartbeat.interval.ms", 3000)
        self._rebalance_timeout_ms = cfg.int("max.poll.interval.ms", 300000)
        self._strategies = parse_strategies(cfg.get("partition.assignment.strategy", "range,roundrobin"))
        self._eof = cfg.bool("enable.partition.eof", False)
        self._fetch_max_bytes = cfg.int("fetch.max.bytes", 52428800)
        self._fetch_wait_ms = cfg.int("fetch.wait.max.ms", 500)
        self._fetch_min_bytes = cfg.int("fetch.min.bytes", 1)
        self._partition_max_bytes = cfg.int("max.partition.fetch.bytes", cfg.int("fetch.message.max.bytes", 1048576))
        self._on_commit = cfg.get("on_commit")
        # Only decides what a corrupt batch does (stop there, or skip it): CRCs are always checked.
        self._check_crcs = cfg.bool("check.crcs", False)
        self._conn = self._connect()
        # The server refuses frames over max_frame; a fetch reply must fit in one.
        self._fetch_max_bytes = max(min(self._fetch_max_bytes, self._conn.state.max_frame - 65536), 1024)
        # Positions, prefetched data and decoding: no I/O in there (fetch_session.py).
        self._session = FetchSession(MessageBuilder(), max_wait_ms=self._fetch_wait_ms,
                                     min_bytes=self._fetch_min_bytes, max_bytes=self._fetch_max_bytes,
                                     partition_max_bytes=self._partition_max_bytes, check_crcs=self._check_crcs,
                                     partition_eof=self._eof)
        self._fetch_mode()
        self._errors = collections.deque()    # error Messages to hand out from poll()
        self._group: GroupMembership | None = None
        self._subscription: list[str] | None = None
        self._on_assign = self._on_revoke = self._on_lost = None
        self._assigned_in_callback = False
        self._missing_reported: set = set()
        self._known_topics: set = set()
        self._watch_topics = False
        self._next_auto_commit = time.monotonic() + self._commit_interval
        self._closed = False

    @property
    def _parts(self) -> dict:
        """(topic, partition) -> _Part, the assignment (held by the fetch session)."""
        return self._session.parts

    # ---- connection ---------------------------------------------------------------------
    def _connect(self) -> LogConnection:
        try:
            return LogConnection(self._host, self._port, self._client_id, credentials=self._credentials,
                                 ssl_context=self._ssl_context)
        except (OSError, BrokerError) as exc:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT,
                                            f"cannot connect to {self._host}:{self._port}: {exc}")) from None

    def _check_open(self):
        if self._closed:
            raise RuntimeError("Consumer closed")

    def _call(self, op, args, timeout=30.0):
        try:
            return self._conn.call(op, args, timeout=timeout if timeout is not None and timeout >= 0 else 30.0)
        except ConnectionClosed as exc:
            self._reconnect()
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, str(exc))) from None
        except BrokerError as exc:
            raise exception_from(exc) from None
        except TimeoutError as exc:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, str(exc))) from None

    def _reconnect(self):
        """The connection died: start over on a new one (positions kept, in-flight work forgotten)."""
        old = self._conn
        old.closed = True
        old.callbacks.clear()
        self._session.connection_lost()
        try:
            self._conn = self._connect()
        except KafkaException as exc:
            self._conn = old
            self._report_error(exc.args[0])
            return
        self._fetch_mode()
        if self._group is not None:
            self._group.state = "UNJOINED"
            self._group._hb_in_flight = False

    def _fetch_mode(self) -> None:
        """How this connection's server lets us fetch: streamed fetches (several answers to
        one request, in a fetch session) where it can, else as `keeps_fetch_sessions` says."""
        session = self._session
        session.answers = fetch_answers(self._conn)
        session.continued = session.answers > 1 or keeps_fetch_sessions(self._conn)

    def _report_error(self, err: KafkaError) -> None:
        self._errors.append(error_message(err))

    # ---- subscription and assignment ------------------------------------------------------
    def subscribe(self, topics, on_assign=None, on_revoke=None, on_lost=None):
        self._check_open()
        if self._group_id is None:
            raise KafkaException(KafkaError(KafkaError._INVALID_ARG,
                                            "subscribe() needs 'group.id' in the Consumer configuration"))
        if isinstance(topics, str) or not all(isinstance(t, str) for t in topics):
            raise TypeError("subscribe() takes a list of topic names")
        self._subscription = list(topics)
        self._on_assign, self._on_revoke, self._on_lost = on_assign, on_revoke, on_lost
        if self._group is None:
            self._group = GroupMembership(self, self._group_id, self._strategies, self._session_timeout_ms,
                                          self._rebalance_timeout_ms, self._heartbeat_ms, self._client_id)
        else:
            # A new subscription: join again with it (eager: give everything back first).
            if not self._group.cooperative and self._parts:
                self._revoke_assignment(lost=False)
            self._group.rejoin()

    def unsubscribe(self):
        self._check_open()
        if self._group is not None:
            self._revoke_assignment(lost=False)
            self._group.leave()
            self._group = None
        self._subscription = None

    def _resolve_subscription(self) -> list[str]:
        """Subscribed topics that exist; entries starting with '^' are regexes over the existing topics.

        A named topic that does not exist is reported once (UNKNOWN_TOPIC_OR_PART from poll(),
        as librdkafka does) and remembered, so the group rejoins when it appears.
        """
        existing = set((self._call("metadata", {"topics": None}).get("topics") or {}).keys())
        names = set()
        missing = set()
        for t in self._subscription or ():
            if t.startswith("^"):
                import re
                rx = re.compile(t)
                names.update(x for x in existing if rx.match(x))
            elif t in existing:
                names.add(t)
            else:
                missing.add(t)
        for t in sorted(missing - self._missing_reported):
            self._report_error(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART,
                                          f"Subscribed topic not available: {t}: Broker: Unknown topic or partition"))
        self._missing_reported = missing
        self._watch_topics = bool(missing) or any(t.startswith("^") for t in self._subscription or ())
        self._known_topics = existing
        return sorted(names)

    def _subscription_changed(self) -> bool:
        """Whether a topic the subscription wants appeared since the last join (checked about once a second)."""
        existing = set((self._call("metadata", {"topics": None}).get("topics") or {}).keys())
        new = existing - self._known_topics
        if not new:
            return False
        if new & self._missing_reported:
            return True
        import re
        return any(re.match(t, x) for t in self._subscription or () if t.startswith("^") for x in new)

    def _partition_counts(self, topics) -> dict:
        if not topics:
            return {}
        try:
            meta = self._call("metadata", {"topics": list(topics)})
        except KafkaException:
            meta = {"topics": {}}
            for t in topics:  # one missing topic must not hide the others
                try:
                    meta["topics"].update(self._call("metadata", {"topics": [t]}).get("topics") or {})
                except KafkaException:
                    pass
        return {t: len(info.get("partitions") or ()) for t, info in (meta.get("topics") or {}).items()}

    def assign(self, partitions):
        """Read exactly these partitions (replacing the current assignment), from each one's offset."""
        self._check_open()
        self._assigned_in_callback = True
        new = {}
        for tp in partitions:
            # Every partition starts afresh, an assigned one too (as librdkafka's assign()
            # does): from the offset given, else the committed one.
            new[(tp.topic, tp.partition)] = _Part(tp.topic, tp.partition, tp.offset)
        self._session.replace(new)  # what was fetched for the old assignment is dropped wherever it is

    def unassign(self):
        self._check_open()
        self._assigned_in_callback = True
        self._session.replace({})

    def incremental_assign(self, partitions):
        """Add partitions to the assignment, leaving the others (and their positions) as they are."""
        self._check_open()
        self._assigned_in_callback = True
        for tp in partitions:
            # One already assigned starts afresh: its prefetched records are dropped.
            self._session.add((tp.topic, tp.partition), _Part(tp.topic, tp.partition, tp.offset))

    def incremental_unassign(self, partitions):
        """Remove partitions from the assignment; the others keep reading undisturbed."""
        self._check_open()
        self._assigned_in_callback = True
        for tp in partitions:
            self._session.remove((tp.topic, tp.partition))

    def assignment(self):
        return [TopicPartition(t, p) for t, p in sorted(self._parts)]

    def _assigned_by_group(self, tps) -> None:
        partitions = [TopicPartition(t, p) for t, p in tps]
        self._assigned_in_callback = False
        if self._on_assign is not None:
            self._on_assign(self, partitions)
        if not self._assigned_in_callback:
            self.assign(partitions)

    def _assigned_incrementally(self, tps) -> bool:
        """A cooperative sync: revoke what we lost, add what we gained. True if anything was revoked."""
        current = set(self._parts)
        new = set(tps)
        revoked = [TopicPartition(t, p) for t, p in sorted(current - new)]
        added = [TopicPartition(t, p) for t, p in sorted(new - current)]
        if revoked:
            if self._auto_commit:
                items = [i for i in self._commit_items() if (i[0], i[1]) in current - new]
                if items:
                    try:
                        self._send_commit(items, asynchronous=False)
                    except KafkaException as exc:
                        log.info("commit before revoke failed: %s", exc)
            self._assigned_in_callback = False
            if self._on_revoke is not None:
                self._on_revoke(self, revoked)
            if not self._assigned_in_callback:
                self.incremental_unassign(revoked)
        self._assigned_in_callback = False
        if self._on_assign is not None:
            self._on_assign(self, added)
        if not self._assigned_in_callback and added:
            self.incremental_assign(added)
        return bool(revoked)

    def _revoke_assignment(self, lost: bool) -> None:
        """Before a rejoin (eager protocol): commit what was consumed, tell the app, drop everything."""
        partitions = self.assignment()
        if not lost and self._auto_commit and partitions:
            try:
                self._commit_positions(asynchronous=False)
            except KafkaException as exc:
                log.info("commit before revoke failed: %s", exc)
        self._assigned_in_callback = False
        cb = self._on_lost if lost and self._on_lost is not None else self._on_revoke
        if cb is not None:
            cb(self, partitions)
        if not self._assigned_in_callback:
            self.unassign()

    # ---- offsets ----------------------------------------------------------------------------
    def _resolve(self) -> None:
        """Give every partition without a position one: its committed offset, else auto.offset.reset."""
        for p in self._parts.values():
            if p.position is None or p.need_reset:
                break
        else:
            return   # the common case, checked at every poll: nothing to resolve
        pending = [p for p in self._parts.values() if p.position is None or p.need_reset]
        committed = {}
        stored_wanted = [p for p in pending if not p.need_reset and p.want in (OFFSET_INVALID, OFFSET_STORED)]
        if stored_wanted and self._group_id is not None:
            try:
                result = self._call("offset_fetch", {"group_id": self._group_id,
                                                     "partitions": [[p.topic, p.partition] for p in stored_wanted]})
            except KafkaException as exc:
                self._report_error(exc.args[0])
                return
            for t, p, off, *_ in result.get("offsets", ()):
                if off is not None and off >= 0:
                    committed[(t, p)] = off
        lookups = []
        for part in pending:
            key = (part.topic, part.partition)
            if part.need_reset:
                lookups.append((part, -2 if self._reset in _EARLIEST else -1))
            elif part.want >= 0:
                self._set_position(part, part.want)
            elif part.want == OFFSET_BEGINNING:
                lookups.append((part, -2))
            elif part.want == OFFSET_END:
                lookups.append((part, -1))
            elif key in committed:
                self._set_position(part, committed[key])
                part.committed = committed[key]
            elif self._reset == "error":
                part.position = part.fetch_offset = -1
                part.failed = True
                self._errors.append(error_message(KafkaError(
                    KafkaError._AUTO_OFFSET_RESET,
                    f"no committed offset for {part.topic} [{part.partition}] and auto.offset.reset=error"),
                    part.topic, part.partition))
            else:
                lookups.append((part, -2 if self._reset in _EARLIEST else -1))
        if lookups:
            try:
                result = self._call("list_offsets", {"partitions": [[p.topic, p.partition, ts] for p, ts in lookups]})
            except KafkaException as exc:
                self._report_error(exc.args[0])
                return
            found = {(r[0], r[1]): (r[2], r[3] if len(r) > 3 else None) for r in result.get("results", ())}
            for part, _ in lookups:
                off, err = found.get((part.topic, part.partition), (-1, None))
                if err is not None:
                    part.failed = True
                    self._errors.append(error_message(error_from_field(err), part.topic, part.partition))
                    part.position = part.fetch_offset = -1
                    continue
                self._set_position(part, max(off, 0))
                part.need_reset = False

    def _set_position(self, part: _Part, offset: int) -> None:
        self._session.seek(part, offset)

    def seek(self, partition: TopicPartition):
        """Move the position of an assigned partition; the next message comes from there."""
        self._check_open()
        part = self._parts.get((partition.topic, partition.partition))
        if part is None:
            raise KafkaException(KafkaError(KafkaError._STATE,
                                            f"{partition.topic} [{partition.partition}] is not assigned to this consumer"))
        if partition.offset >= 0:
            self._set_position(part, partition.offset)
        else:
            part.want = partition.offset
            self._session.seek(part, None)  # resolved by _resolve() (OFFSET_BEGINNING, OFFSET_END...)

    def position(self, partitions):
        out = []
        for tp in partitions:
            part = self._parts.get((tp.topic, tp.partition))
            pos = part.position if part is not None and part.position is not None and part.position >= 0 else OFFSET_INVALID
            out.append(TopicPartition(tp.topic, tp.partition, pos))
        return out

    def committed(self, partitions, timeout=None):
        self._check_open()
        if self._group_id is None:
            raise KafkaException(KafkaError(KafkaError._INVALID_ARG, "committed() needs 'group.id'"))
        result = self._call("offset_fetch", {"group_id": self._group_id,
                                             "partitions": [[tp.topic, tp.partition] for tp in partitions]}, timeout)
        found = {(r[0], r[1]): r for r in result.get("offsets", ())}
        out = []
        for tp in partitions:
            r = found.get((tp.topic, tp.partition))
            off = r[2] if r is not None and r[2] is not None and r[2] >= 0 else OFFSET_INVALID
            out.append(TopicPartition(tp.topic, tp.partition, off, r[3] if r is not None and len(r) > 3 else None))
        return out

    def store_offsets(self, message=None, offsets=None):
        if message is not None:
            part = self._parts.get((message.topic(), message.partition()))
            if part is not None:
                part.stored = message.offset() + 1
        for tp in offsets or ():
            part = self._parts.get((tp.topic, tp.partition))
            if part is not None:
                part.stored = tp.offset

    def commit(self, message=None, offsets=None, asynchronous=True):
        """Commit offsets (message.offset()+1, the given ones, or every consumed position)."""
        self._check_open()
        if self._group_id is None:
            raise KafkaException(KafkaError(KafkaError._INVALID_ARG, "commit() needs 'group.id'"))
        if message is not None:
            items = [(message.topic(), message.partition(), message.offset() + 1, None)]
        elif offsets is not None:
            items = [(tp.topic, tp.partition, tp.offset, tp.metadata) for tp in offsets]
        else:
            items = self._commit_items()
            if not items:
                raise KafkaException(KafkaError(KafkaError._NO_OFFSET, "Local: No offset stored"))
        return self._send_commit(items, asynchronous)

    def _commit_items(self):
        """The stored offsets not committed yet (the position, with enable.auto.offset.store)."""
        items = []
        for part in self._parts.values():
            off = part.position if self._auto_store else part.stored
            if off is not None and off >= 0 and off != part.committed:
                items.append((part.topic, part.partition, off, None))
        return items

    def _commit_positions(self, asynchronous: bool):
        items = self._commit_items()
        if items:
            self._send_commit(items, asynchronous)

    def _send_commit(self, items, asynchronous):
        group = self._group
        in_group = group is not None and group.generation >= 0
        args = {"group_id": self._group_id,
                "generation_id": group.generation if in_group else -1,
                "member_id": group.member_id if in_group else "",
                "offsets": [[t, p, o, m] for t, p, o, m in items]}
        box = {}

        def done(result, error):
            tps = [TopicPartition(t, p, o, m) for t, p, o, m in items]
            err = None
            if error is not None:
                err = error_from_wire(error.code, error.message)
                for tp in tps:
                    tp.error = err
            else:
                errs = {(r[0], r[1]): error_from_field(r[2] if len(r) > 2 else None) for r in result.get("results", ())}
                for tp in tps:
                    tp.error = errs.get((tp.topic, tp.partition))
                    if tp.error is None:
                        part = self._parts.get((tp.topic, tp.partition))
                        if part is not None:
                            part.committed = tp.offset
                    elif err is None:
                        err = tp.error
            box["result"] = (err, tps)
            if asynchronous and self._on_commit is not None:
                self._on_commit(err, tps)
            elif asynchronous and err is not None:
                log.warning("asynchronous commit failed: %s", err)

        try:
            rid = self._conn.send_with("offset_commit", args, done)
            if asynchronous:
                self._conn.flush()
                return None
            deadline = time.monotonic() + 30
            while "result" not in box:
                if time.monotonic() > deadline:
                    self._conn.callbacks.pop(rid, None)
                    raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "no reply to offset_commit within 30 s"))
                self._conn.pump(1.0)
        except ConnectionClosed as exc:
            self._reconnect()
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, str(exc))) from None
        err, tps = box["result"]
        if err is not None:
            raise KafkaException(err)
        return tps

    def get_watermark_offsets(self, partition, timeout=None, cached=False):
        if cached:
            part = self._parts.get((partition.topic, partition.partition))
            if part is None or part.hw < 0:
                return None
            return part.log_start, part.hw
        result = self._call("list_offsets", {"partitions": [[partition.topic, partition.partition, -2],
                                                            [partition.topic, partition.partition, -1]]}, timeout)
        rows = result.get("results", ())
        for r in rows:
            if len(r) > 3 and r[3] is not None:
                raise KafkaException(error_from_field(r[3]))
        return rows[0][2], rows[1][2]

    def offsets_for_times(self, partitions, timeout=None):
        """The earliest offset whose timestamp is >= each TopicPartition's offset field (ms); -1 past the end."""
        result = self._call("list_offsets", {"partitions": [[tp.topic, tp.partition, tp.offset] for tp in partitions]},
                            timeout)
        found = {(r[0], r[1]): r for r in result.get("results", ())}
        out = []
        for tp in partitions:
            r = found.get((tp.topic, tp.partition))
            res = TopicPartition(tp.topic, tp.partition, r[2] if r is not None else OFFSET_END)
            if r is not None and len(r) > 3 and r[3] is not None:
                res.error = error_from_field(r[3])
            out.append(res)
        return out

    def pause(self, partitions):
        for tp in partitions:
            part = self._parts.get((tp.topic, tp.partition))
            if part is not None:
                self._session.pause(part)  # drops what was prefetched; it is fetched again on resume

    def resume(self, partitions):
        for tp in partitions:
            part = self._parts.get((tp.topic, tp.partition))
            if part is not None:
                self._session.resume(part)

    def list_topics(self, topic=None, timeout=-1):
        from .admin import fetch_cluster_metadata
        return fetch_cluster_metadata(self._conn, topic, timeout)

    def memberid(self):
        return self._group.member_id if self._group is not None and self._group.member_id else None

    # ---- fetching ---------------------------------------------------------------------------
    def _send_fetch(self) -> None:
        """Send the fetch requests the session wants now (in a fetch session up to two), in one write."""
        session = self._session
        for _ in range(max(session.wanted(), 1)):
            request = session.fetch_request()
            if request is None:
                break
            args, token = request
            self._conn.send_with("fetch", args, functools.partial(self._on_fetch, token))
        self._conn.flush()

    def _on_fetch(self, token, result, error) -> None:
        session = self._session
        if error is not None:
            if error.code == ErrorCode.BAD_REQUEST and session.fetch_refused(token):
                # A server without fetch sessions: fetch with offsets from now on.
                if session.should_fetch():
                    self._send_fetch()
                return
            session.fetch_failed(token)
            self._report_error(error_from_wire(error.code, error.message))
            return
        errors, prefetch = session.accept(token, result)
        for part, err in errors:
            self._fetch_error(part, error_from_field(err))
        # Prefetch: ask for the next data now, before anything of this reply is decoded.
        if prefetch:
            self._send_fetch()

    def _fetch_error(self, part: _Part, err: KafkaError) -> None:
        if err.code() == KafkaError.OFFSET_OUT_OF_RANGE and self._reset != "error":
            part.need_reset = True
            self._session.discard(part)
            return
        part.failed = True
        self._errors.append(error_message(err, part.topic, part.partition, part.fetch_offset or -1001))

    def _take(self, want: int, out: list) -> None:
        """Hand out up to `want` Messages: errors reported meanwhile, then records (decoded by
        the session as they are taken; a corrupt batch or a partition EOF comes as an error
        Message in its place, see `MessageBuilder.event`)."""
        errors = self._errors
        while errors and want > 0:
            out.append(errors.popleft())
            want -= 1
        if want > 0:
            self._session.take(want, out)   # nothing held: one call that returns at once

    # ---- the loop --------------------------------------------------------------------------
    def _maintain(self) -> None:
        if self._conn.closed:
            self._reconnect()
        if self._group is not None:
            try:
                self._group.maintain()
            except ConnectionClosed:
                # A heartbeat, join or sync found the server gone (a restart between two
                # replies): the group starts over on a new connection, as a fetch does below.
                self._reconnect()
        self._resolve()
        if self._auto_commit and time.monotonic() >= self._next_auto_commit:
            self._next_auto_commit = time.monotonic() + self._commit_interval
            if self._group is None or self._group.state == "STABLE":
                try:
                    self._commit_positions(asynchronous=True)
                except KafkaException as exc:
                    log.info("auto-commit failed: %s", exc)
        if self._session.should_fetch():
            try:
                self._send_fetch()
            except ConnectionClosed:
                # The server went away since the last reply (a restart): the send is where we
                # learn it. Start over on a new connection; the next loop turn fetches again.
                self._reconnect()

    def _wait(self, deadline, cap=None) -> None:
        wait = remaining(deadline)
        if cap is not None:
            wait = cap if wait is None else min(wait, cap)
        if self._group is not None or self._auto_commit:
            timers = []
            if self._group is not None:
                timers.append(self._group.next_timer())
            if self._auto_commit:
                timers.append(self._next_auto_commit)
            until = max(min(timers) - time.monotonic(), 0.0)
            wait = until if wait is None else min(wait, until)
        try:
            if self._conn.callbacks:
                self._conn.pump(wait if wait is not None else 1.0)
            else:
                time.sleep(min(wait if wait is not None else 0.1, 0.1))
        except ConnectionClosed:
            self._reconnect()

    def _last_look(self, want, out) -> None:
        """At the deadline: take what already arrived without waiting (so poll(0) makes progress)."""
        try:
            if self._conn.pump(0):
                self._take(want, out)
        except ConnectionClosed:
            self._reconnect()

    def consume(self, num_messages=1, timeout=-1):
        """Up to num_messages Messages, waiting at most `timeout` s (-1: until there are that many)."""
        self._check_open()
        if num_messages < 1 or num_messages > 1_000_000:
            raise ValueError("num_messages must be between 1 and 1000000")
        group = self._group
        if group is not None:
            group.polling = True
            group.last_poll = time.monotonic()
        try:
            return self._consume(num_messages, timeout)
        finally:
            if group is not None:
                group.last_poll = time.monotonic()
                group.polling = False

    def _consume(self, num_messages, timeout):
        deadline = deadline_of(timeout)
        out = []
        # Messages are made with the cyclic GC paused (see _decode), and handed out with it
        # still paused: the collector then looks at a consume() batch once, after the call,
        # instead of once per 700 allocations and again at each promotion. Once the call has
        # waited 50 ms for data with nothing arriving, the collector runs again, so a consumer
        # idling at the end of a topic never holds it off for other threads.
        paused = num_messages > 1 and _gc_isenabled()
        if paused:
            _gc_disable()
        try:
            while True:
                if out and self._group is not None and self._group.has_news():
                    # What `out` holds was taken while its partitions were this member's; a
                    # rebalance acted on now could revoke them (and commit past them in
                    # on_revoke) before the application has seen them. Hand them out first:
                    # the next call acts on the group, as librdkafka serves a rebalance
                    # between batches.
                    return out
                self._maintain()
                self._take(num_messages - len(out), out)
                if len(out) >= num_messages:
                    return out
                if deadline is not None and time.monotonic() >= deadline:
                    self._last_look(num_messages - len(out), out)
                    return out
                if paused:
                    before = self._arrived(out)
                    self._wait(deadline, cap=0.05)
                    if self._arrived(out) == before:
                        _gc_enable()
                        paused = False
                else:
                    self._wait(deadline)
                self._take(num_messages - len(out), out)  # before _maintain's turn (timers, group)
                if len(out) >= num_messages:
                    return out
        finally:
            if paused:
                _gc_enable()

    def _arrived(self, out) -> tuple:
        """What the connection has brought so far: records handed out or held, and bytes of a
        frame still arriving. A large fetch reply comes in many reads; a wait that brought
        part of one brought data, so it does not count as idling (see _consume)."""
        return len(out) + self._session.backlog(), self._conn.state.decoder.buffered

    def poll(self, timeout=None):
        """The next Message (possibly an error/EOF Message), or None after `timeout` s."""
        self._check_open()
        group = self._group
        if group is not None:
            group.polling = True  # max.poll.interval.ms counts the time between calls
            group.last_poll = time.monotonic()
        try:
            return self._poll(timeout)
        finally:
            if group is not None:
                group.last_poll = time.monotonic()
                group.polling = False

    def _poll(self, timeout):
        deadline = deadline_of(timeout if timeout is not None else -1)
        out = []
        while True:
            self._maintain()
            self._take(1, out)
            if out:
                return out[0]
            if deadline is not None and time.monotonic() >= deadline:
                self._last_look(1, out)
                return out[0] if out else None
            self._wait(deadline)
            # Hand out what the wait brought (its reply already sent the next fetch, _on_fetch).
            self._take(1, out)
            if out:
                return out[0]

    def close(self):
        """Commit (with auto-commit), leave the group and close the connection."""
        if self._closed:
            return
        try:
            if self._group is not None:
                if self._group.state == "STABLE":
                    self._revoke_assignment(lost=False)
                self._group.leave()
            elif self._auto_commit and self._parts:
                try:
                    self._commit_positions(asynchronous=False)
                except KafkaException as exc:
                    log.info("final commit failed: %s", exc)
        finally:
            self._closed = True
            if self._group is not None:
                self._group.stop_heartbeats()
            self._conn.close()

    def __len__(self):
        return self._session.pending()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
