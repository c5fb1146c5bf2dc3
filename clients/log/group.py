"""The client side of the consumer-group protocol: join, sync, heartbeat, leave.

`GroupMembership` is a small state machine driven from the consumer's `poll()`/`consume()`
(there is no background thread: see docs/clients-minilog.md, "Heartbeats"):

    UNJOINED --maintain--> JOINING --join reply--> SYNCING --sync reply--> STABLE
        ^                                                                   |
        +---- heartbeat says REBALANCE_IN_PROGRESS / ILLEGAL_GENERATION -----+

Replies arrive inside `LogConnection.pump()`; the handlers here only record them, and
`maintain()` acts on them outside the pump, because acting may call the application
(`on_revoke`, `on_assign`), make blocking calls (the leader fetches topic metadata to run
the assignor) or commit offsets. The leader runs the assignor from `assignors.py` over the
members' subscriptions, which travel as msgpack `{topics: [...], owned: {topic: [p]}}` in
the join metadata; each assignment travels as msgpack `{topic: [partition, ...]}`.
"""

import logging
import time

import msgpack

from ..protocol.errors import ErrorCode
from .assignors import ASSIGNORS
from .errors import KafkaError, exception_from

log = logging.getLogger("clients.log")

UNJOINED = "UNJOINED"
JOINING = "JOINING"
SYNCING = "SYNCING"
STABLE = "STABLE"


class GroupMembership:
    def __init__(self, consumer, group_id, strategies, session_timeout_ms, rebalance_timeout_ms,
                 heartbeat_interval_ms, client_id):
        self.consumer = consumer
        self.group_id = group_id
        self.strategies = strategies
        self.session_timeout_ms = session_timeout_ms
        self.rebalance_timeout_ms = rebalance_timeout_ms
        self.heartbeat_interval = heartbeat_interval_ms / 1000.0
        self.client_id = client_id
        self.member_id = ""
        self.generation = -1
        self.leader_id = ""
        self.protocol = ""
        self.state = UNJOINED
        self.topics: list[str] = []
        self.owned: dict[str, list[int]] = {}
        # Kafka's incremental cooperative rebalancing (KIP-429) when every configured assignor
        # supports it: a rebalance revokes only the partitions that move.
        self.cooperative = all(s == "cooperative-sticky" for s in strategies)
        self._reply = None          # (kind, result, error) of the last join/sync reply
        self._hb_in_flight = False
        self._hb_verdict = None     # error code of the last failed heartbeat
        self._next_hb = 0.0
        self._retry_at = 0.0
        self._next_topic_check = 0.0

    # ---- state machine ------------------------------------------------------------------
    def rejoin(self) -> None:
        if self.state == STABLE:
            self.state = UNJOINED
            self._retry_at = 0.0

    def next_timer(self) -> float:
        """When maintain() next has something to do on its own (monotonic time)."""
        if self.state == STABLE:
            return self._next_hb
        if self.state == UNJOINED:
            return self._retry_at
        return float("inf")

    def maintain(self) -> None:
        now = time.monotonic()
        c = self.consumer
        if self._hb_verdict is not None:
            code, self._hb_verdict = self._hb_verdict, None
            if self.state == STABLE:
                if code == ErrorCode.REBALANCE_IN_PROGRESS:
                    if not self.cooperative:
                        c._revoke_assignment(lost=False)
                    # cooperative: keep reading the owned partitions while the group rebalances
                else:
                    if code == ErrorCode.UNKNOWN_MEMBER_ID:
                        self.member_id = ""
                    c._revoke_assignment(lost=True)
                    self.owned = {}
                self.state = UNJOINED
        if self._reply is not None:
            kind, result, error = self._reply
            self._reply = None
            if kind == "join":
                self._joined(result, error)
            else:
                self._synced(result, error)
        if self.state == UNJOINED and now >= self._retry_at:
            self._send_join()
        elif self.state == STABLE and c._watch_topics and now >= self._next_topic_check:
            self._next_topic_check = now + 1.0
            if c._subscription_changed():
                if not self.cooperative:
                    c._revoke_assignment(lost=False)
                self.state = UNJOINED
                self._send_join()
        if self.state == STABLE and not self._hb_in_flight and now >= self._next_hb:
            self._hb_in_flight = True
            self._next_hb = now + self.heartbeat_interval
            c._conn.send_with("heartbeat", {"group_id": self.group_id, "generation_id": self.generation,
                                            "member_id": self.member_id}, self._on_heartbeat)
            c._conn.flush()

    def _send_join(self) -> None:
        c = self.consumer
        self.topics = c._resolve_subscription()
        metadata = msgpack.packb({"topics": self.topics, "owned": self.owned}, use_bin_type=True)
        self.state = JOINING
        c._conn.send_with("join_group", {
            "group_id": self.group_id, "member_id": self.member_id,
            "session_timeout_ms": self.session_timeout_ms, "rebalance_timeout_ms": self.rebalance_timeout_ms,
            "protocol_type": "consumer", "protocols": [[s, metadata] for s in self.strategies],
            "client": self.client_id,
        }, lambda r, e: self._record("join", r, e))
        c._conn.flush()

    def _record(self, kind, result, error) -> None:
        self._reply = (kind, result, error)

    def _on_heartbeat(self, result, error) -> None:
        self._hb_in_flight = False
        if error is not None:
            self._hb_verdict = error.code

    def _retry_later(self, error, delay=0.2) -> None:
        self.state = UNJOINED
        self._retry_at = time.monotonic() + delay
        if error is not None:
            self.consumer._report_error(exception_from(error).args[0])

    def _joined(self, result, error) -> None:
        if error is not None:
            if error.code == ErrorCode.UNKNOWN_MEMBER_ID:
                self.member_id = ""
                self._retry_later(None, 0)
            elif error.code in (ErrorCode.REBALANCE_IN_PROGRESS, ErrorCode.ILLEGAL_GENERATION):
                self._retry_later(None, 0)
            else:
                self._retry_later(error, 1.0)
            return
        self.generation = result["generation_id"]
        self.member_id = result["member_id"]
        self.leader_id = result["leader_id"]
        self.protocol = result.get("protocol", "")
        assignments = []
        if self.member_id == self.leader_id:
            assignments = self._assign(result.get("members") or [])
        self.state = SYNCING
        self.consumer._conn.send_with("sync_group", {
            "group_id": self.group_id, "generation_id": self.generation, "member_id": self.member_id,
            "assignments": assignments}, lambda r, e: self._record("sync", r, e))
        self.consumer._conn.flush()

    def _assign(self, members) -> list:
        subscriptions, owned = {}, {}
        for member_id, metadata in members:
            try:
                meta = msgpack.unpackb(metadata, raw=False) if metadata else {}
            except Exception:  # a member with unreadable metadata gets nothing, the rest proceed
                meta = {}
            subscriptions[member_id] = list(meta.get("topics") or ())
            owned[member_id] = meta.get("owned") or {}
        topics = sorted({t for ts in subscriptions.values() for t in ts})
        counts = self.consumer._partition_counts(topics)
        assignor = ASSIGNORS.get(self.protocol) or ASSIGNORS[self.strategies[0]]
        plan = assignor(subscriptions, counts, owned)
        if self.protocol == "cooperative-sticky":
            # A partition moving between members is given to nobody in this round: its owner
            # revokes it and rejoins, and the next round hands it over (KIP-429's two phases).
            owner = {(t, p): m for m, ts in owned.items() for t, ps in ts.items() for p in ps}
            plan = {m: {t: [p for p in ps if owner.get((t, p), m) == m] for t, ps in tps.items()}
                    for m, tps in plan.items()}
        return [[m, msgpack.packb(plan.get(m, {}), use_bin_type=True)] for m in subscriptions]

    def _synced(self, result, error) -> None:
        if error is not None:
            if error.code == ErrorCode.UNKNOWN_MEMBER_ID:
                self.member_id = ""
            if error.code in (ErrorCode.UNKNOWN_MEMBER_ID, ErrorCode.REBALANCE_IN_PROGRESS,
                              ErrorCode.ILLEGAL_GENERATION):
                self._retry_later(None, 0)
            else:
                self._retry_later(error, 1.0)
            return
        raw = result.get("assignment") or b""
        try:
            plan = msgpack.unpackb(raw, raw=False) if raw else {}
        except Exception:
            plan = {}
            self.consumer._report_error(KafkaError(KafkaError._BAD_MSG, "the group leader sent an unreadable assignment"))
        self.owned = {t: list(ps) for t, ps in plan.items() if ps}
        self.state = STABLE
        self._next_hb = time.monotonic() + self.heartbeat_interval
        tps = sorted((t, p) for t, ps in plan.items() for p in ps)
        if self.protocol == "cooperative-sticky" and self.cooperative:
            if self.consumer._assigned_incrementally(tps):
                self.state = UNJOINED  # we gave partitions up: rejoin so the group can hand them over
                self._retry_at = 0.0
        else:
            self.consumer._assigned_by_group(tps)

    def leave(self) -> None:
        """Leave the group (on close/unsubscribe) so the others rebalance at once, not after a session timeout."""
        c = self.consumer
        if self.member_id and c._conn is not None and not c._conn.closed:
            try:
                c._conn.call("leave_group", {"group_id": self.group_id, "member_id": self.member_id}, timeout=5)
            except Exception as exc:  # leaving is best effort: the session timeout removes us anyway
                log.debug("leave_group failed: %s", exc)
        self.member_id = ""
        self.generation = -1
        self.state = UNJOINED
        self.owned = {}
