"""The client side of the consumer-group protocol: join, sync, heartbeat, leave.

`GroupMembership` is a small state machine driven from the consumer's `poll()`/`consume()`,
plus one background thread that heartbeats (see docs/clients-minilog.md, "Heartbeats"):

    UNJOINED --maintain--> JOINING --join reply--> SYNCING --sync reply--> STABLE
        ^                                                                   |
        +---- heartbeat says REBALANCE_IN_PROGRESS / ILLEGAL_GENERATION -----+

As in librdkafka, membership does not depend on how often the application polls: while the
member is STABLE, `_heartbeat_loop` heartbeats every `heartbeat.interval.ms` from its own
thread on its own connection, so processing one message may take longer than
`session.timeout.ms`. Only `max.poll.interval.ms` bounds the time between polls: past it the
thread leaves the group, and the next poll reports `_MAX_POLL_EXCEEDED` and rejoins. The
thread only records what it learns (`_hb_verdict`); the application's thread acts on it in
`maintain()`, before any record is handed out, so a member that lost its partitions returns
none of them.

Join and sync replies arrive inside `LogConnection.pump()`; the handlers here only record them, and
`maintain()` acts on them outside the pump, because acting may call the application
(`on_revoke`, `on_assign`), make blocking calls (the leader fetches topic metadata to run
the assignor) or commit offsets. The protocol itself -- the requests (`join_request`,
`sync_request`, `heartbeat_request`, `leave_request`), what a reply does and what an error
reply means (`reply_failed`), the member's join metadata and the leader's plan -- is
`group_protocol.py`'s `GroupMember`, with no I/O, which this class extends and the asyncio
consumer drives too.
"""

import logging
import threading
import time

from ..protocol.errors import BrokerError, ErrorCode
from .group_protocol import REJOIN, REJOIN_CODES, GroupMember, plan_assignments, read_members, subscribed_topics
from .errors import KafkaError, exception_from

log = logging.getLogger("clients.log")

UNJOINED = "UNJOINED"
JOINING = "JOINING"
SYNCING = "SYNCING"
STABLE = "STABLE"


class GroupMembership(GroupMember):
    def __init__(self, consumer, group_id, strategies, session_timeout_ms, rebalance_timeout_ms,
                 heartbeat_interval_ms, client_id):
        GroupMember.__init__(self, group_id, strategies, session_timeout_ms, rebalance_timeout_ms, client_id)
        self.consumer = consumer
        self.heartbeat_interval = heartbeat_interval_ms / 1000.0
        self.state = UNJOINED
        self.topics: list[str] = []
        self._reply = None          # (kind, result, error) of the last join/sync reply
        self._hb_in_flight = False
        self._hb_verdict = None     # (error code, generation) from the heartbeat thread
        self.max_poll_interval = rebalance_timeout_ms / 1000.0
        self.last_poll = time.monotonic()  # the consumer's, for max.poll.interval.ms
        self.polling = False               # the application is inside poll()/consume()
        self._hb_thread = None
        self._hb_stop = threading.Event()
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
            # Look for what the heartbeat thread learned about as often as it heartbeats.
            return time.monotonic() + self.heartbeat_interval
        if self.state == UNJOINED:
            return self._retry_at
        return float("inf")

    def has_news(self) -> bool:
        """Whether maintain() has something to act on that may take partitions away: a verdict
        of the heartbeat thread, a join or sync reply, or the subscription's topic check."""
        return (self._hb_verdict is not None or self._reply is not None
                or (self.state == STABLE and self.consumer._watch_topics
                    and time.monotonic() >= self._next_topic_check))

    def maintain(self) -> None:
        now = time.monotonic()
        c = self.consumer
        if self._hb_verdict is not None:
            (code, generation), self._hb_verdict = self._hb_verdict, None
            if self.state == STABLE and generation == self.generation:
                if code == "MAX_POLL_EXCEEDED":
                    # The heartbeat thread left the group for us: librdkafka reports it once
                    # from poll(), and the consumer joins again as a new member.
                    c._report_error(KafkaError(KafkaError._MAX_POLL_EXCEEDED,
                                               "Application maximum poll interval "
                                               f"({int(self.max_poll_interval * 1000)}ms) exceeded by the "
                                               "application: leaving the group"))
                    self.member_id = ""
                    c._revoke_assignment(lost=True)
                    self.owned = {}
                elif code == ErrorCode.REBALANCE_IN_PROGRESS:
                    if not self.cooperative:
                        c._revoke_assignment(lost=False)
                    # cooperative: keep reading the owned partitions while the group rebalances
                else:
                    self.reply_failed(code)
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
        if self.state == STABLE and self._hb_thread is None:
            self._hb_thread = threading.Thread(target=self._heartbeat_loop, name="minilog-consumer-heartbeat",
                                               daemon=True)
            self._hb_thread.start()

    # ---- the heartbeat thread --------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        """Heartbeat every heartbeat.interval.ms while STABLE, on a connection of its own (the
        consumer's belongs to the application's thread); leave the group when the application
        has not polled for max.poll.interval.ms. Records what it learns for maintain()."""
        conn = None
        stop = self._hb_stop
        try:
            while not stop.wait(self.heartbeat_interval):
                if self.state != STABLE or self._hb_verdict is not None or not self.member_id:
                    continue
                generation, member_id = self.generation, self.member_id
                try:
                    if conn is None or conn.closed:
                        conn = self.consumer._connect()
                    if not self.polling and time.monotonic() - self.last_poll > self.max_poll_interval:
                        try:
                            conn.call(*self.leave_request(), timeout=5)
                        except BrokerError:
                            pass  # already gone: the outcome is the same
                        self._hb_verdict = ("MAX_POLL_EXCEEDED", generation)
                        continue
                    # The request only reads the member's fields; what the reply means is
                    # decided by maintain(), in the application's thread.
                    conn.call(*self.heartbeat_request(), timeout=max(self.session_timeout_ms / 1000.0, 1.0))
                except BrokerError as exc:
                    if exc.code in REJOIN_CODES:
                        self._hb_verdict = (exc.code, generation)
                    elif conn is not None and conn.closed:
                        conn = None  # the server went away: a new connection next time
                except Exception as exc:  # KafkaException (cannot connect), TimeoutError: try again
                    log.debug("heartbeat failed: %s", exc)
                    if conn is not None:
                        conn.close()
                        conn = None
        finally:
            if conn is not None:
                conn.close()

    def stop_heartbeats(self) -> None:
        thread, self._hb_thread = self._hb_thread, None
        self._hb_stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)

    def _send_join(self) -> None:
        c = self.consumer
        self.topics = c._resolve_subscription()
        self.state = JOINING
        c._conn.send_with(*self.join_request(self.topics), lambda r, e: self._record("join", r, e))
        c._conn.flush()

    def _record(self, kind, result, error) -> None:
        self._reply = (kind, result, error)

    def _retry_later(self, error, delay=0.2) -> None:
        self.state = UNJOINED
        self._retry_at = time.monotonic() + delay
        if error is not None:
            self.consumer._report_error(exception_from(error).args[0])

    def _joined(self, result, error) -> None:
        if error is not None:
            self._failed(error)
            return
        assignments = []
        if self.joined(result):
            assignments = self._assign(result.get("members") or [])
        self.state = SYNCING
        self.consumer._conn.send_with(*self.sync_request(assignments), lambda r, e: self._record("sync", r, e))
        self.consumer._conn.flush()

    def _assign(self, members) -> list:
        subscriptions, owned = read_members(members)
        counts = self.consumer._partition_counts(subscribed_topics(subscriptions))
        return plan_assignments(self.protocol, self.strategies, subscriptions, owned, counts)

    def _failed(self, error) -> None:
        """A join or sync failed: join again at once, or report the error and try again in a second."""
        if self.reply_failed(error.code) == REJOIN:
            self._retry_later(None, 0)
        else:
            self._retry_later(error, 1.0)

    def _synced(self, result, error) -> None:
        if error is not None:
            self._failed(error)
            return
        try:
            plan = self.synced(result)
        except ValueError as exc:
            plan = self.owned = {}
            self.consumer._report_error(KafkaError(KafkaError._BAD_MSG, str(exc)))
        self.state = STABLE
        self._next_hb = time.monotonic() + self.heartbeat_interval
        tps = sorted((t, p) for t, ps in plan.items() for p in ps)
        if self.incremental():
            if self.consumer._assigned_incrementally(tps):
                self.state = UNJOINED  # we gave partitions up: rejoin so the group can hand them over
                self._retry_at = 0.0
        else:
            self.consumer._assigned_by_group(tps)

    def leave(self) -> None:
        """Leave the group (on close/unsubscribe) so the others rebalance at once, not after a session timeout."""
        self.stop_heartbeats()
        c = self.consumer
        if self.member_id and c._conn is not None and not c._conn.closed:
            try:
                c._conn.call(*self.leave_request(), timeout=5)
            except Exception as exc:  # leaving is best effort: the session timeout removes us anyway
                log.debug("leave_group failed: %s", exc)
        self.left()
        self.state = UNJOINED
