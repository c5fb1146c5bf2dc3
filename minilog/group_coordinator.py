"""The group coordinator: consumer-group membership, rebalances and the generation fence.

This is Kafka's classic group protocol, with no network in it (the core's `LogBroker.join_group`,
`sync_group`, ... call it, for every front door). A `Group` holds `GroupMember`s
and moves through Kafka's states:

    Empty ──join──▶ PreparingRebalance ──all known members joined, or rebalance timeout──▶
    CompletingRebalance ──leader's sync──▶ Stable ──join / leave / session expiry──▶ PreparingRebalance
    (a group whose last member leaves goes back to Empty; Dead is a deleted group)

- **Join.** A member without an id gets one. A join parks (returns a future) until every
  member known at the start of the rebalance has joined again, or until the rebalance timeout
  (the largest `rebalance_timeout_ms` of the members) passes: the members that did not rejoin
  are then removed. Completing the join bumps the **generation id**, picks the leader (the
  old one if it rejoined, else the first to join) and a protocol (assignor) every member
  supports, and answers every parked join; only the leader gets the members' metadata.
- **Sync.** The leader sends every member's assignment (opaque bytes: assignment is the
  client's job); each member's parked sync gets its own. Then the group is Stable.
- **Heartbeat.** Keeps a member alive; during a rebalance the answer is
  REBALANCE_IN_PROGRESS, telling the member to join again.
- **Generation fence.** Sync, heartbeat and offset commits carry the generation they were
  made in; an old one gets ILLEGAL_GENERATION, so a member that was evicted and does not
  know it yet cannot overwrite the new owner's commits.
- **Initial delay.** With `initial_rebalance_delay_ms` (Kafka's
  `group.initial.rebalance.delay.ms`, server flag `--group-initial-rebalance-delay-ms`, default
  0 here, 3000 in Kafka) the first rebalance of an empty group waits that long before it
  completes, so consumers started together land in one generation instead of a chain.
- **Session timeout.** `tick(now)` (run every 50 ms by the server, through `LogBroker.tick_groups`) removes members not heard
  from within their `session_timeout_ms` and starts a rebalance; it also ends rebalances whose
  timeout passed.

Committed offsets are stored by `minilog/offsets_store.py`; this module decides whether a
commit is allowed (`check_commit`).
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid

from clients.protocol.errors import BrokerError, ErrorCode

from .consumer_protocol import translate_assignment, translate_metadata

EMPTY = "Empty"
PREPARING_REBALANCE = "PreparingRebalance"
COMPLETING_REBALANCE = "CompletingRebalance"
STABLE = "Stable"
DEAD = "Dead"

MIN_SESSION_TIMEOUT_MS = 10
MAX_SESSION_TIMEOUT_MS = 30 * 60 * 1000
# A rebalance waits for the slowest member's rebalance_timeout_ms: one member asking for 2**62
# would stall the others for good. Bounded like the session timeout (Kafka's
# group.max.session.timeout.ms, 30 min).
MAX_REBALANCE_TIMEOUT_MS = MAX_SESSION_TIMEOUT_MS
# Kafka's group.max.size: members of one group (each costs a member record and a join future).
DEFAULT_GROUP_MAX_SIZE = 1000


def _now_ms() -> float:
    return time.monotonic() * 1000


class GroupMember:
    __slots__ = ("member_id", "client", "session_timeout_ms", "rebalance_timeout_ms", "protocol_type",
                 "protocols", "assignment", "last_heard_ms", "join_future", "sync_future", "fmt")

    def __init__(self, member_id: str, client: str, session_timeout_ms: int, rebalance_timeout_ms: int,
                 protocol_type: str, protocols: list, fmt: str | None = None):
        self.member_id = member_id
        self.client = client
        self.session_timeout_ms = session_timeout_ms
        self.rebalance_timeout_ms = rebalance_timeout_ms
        self.protocol_type = protocol_type
        self.protocols = protocols          # [(assignor name, metadata bytes)], in preference order
        self.assignment = b""
        self.last_heard_ms = _now_ms()
        self.join_future: asyncio.Future | None = None
        self.sync_future: asyncio.Future | None = None
        # The layout its client writes "consumer" metadata and assignments in (consumer_protocol.py):
        # "minilog" or "kafka", None for opaque bytes never translated.
        self.fmt = fmt

    def metadata_for(self, protocol: str) -> bytes:
        for name, metadata in self.protocols:
            if name == protocol:
                return metadata
        return b""

    def expired(self, now_ms: float) -> bool:
        return now_ms - self.last_heard_ms > self.session_timeout_ms


class Group:
    def __init__(self, group_id: str):
        self.group_id = group_id
        self.state = EMPTY
        self.generation_id = 0
        self.protocol_type = ""
        self.protocol = ""
        self.leader_id = ""
        self.members: dict[str, GroupMember] = {}
        self.rebalance_deadline_ms = 0.0
        self.initial_delay_until_ms = 0.0

    def all_joined(self) -> bool:
        return all(m.join_future is not None for m in self.members.values())

    def choose_protocol(self) -> str:
        """The first assignor of the leader's list that every member supports."""
        members = list(self.members.values())
        common = set(name for name, _ in members[0].protocols)
        for m in members[1:]:
            common &= set(name for name, _ in m.protocols)
        leader = self.members.get(self.leader_id, members[0])
        for name, _ in leader.protocols:
            if name in common:
                return name
        return ""


class GroupCoordinator:
    def __init__(self, initial_rebalance_delay_ms: int = 0, max_size: int = DEFAULT_GROUP_MAX_SIZE):
        # Kafka's group.initial.rebalance.delay.ms: the first rebalance of an empty group waits
        # this long for more members, so consumers started together form one generation.
        self.initial_rebalance_delay_ms = initial_rebalance_delay_ms
        self.max_size = max_size
        self.groups: dict[str, Group] = {}
        self._member_numbers = itertools.count(1)
        self.rebalances = 0      # generations completed by a rebalance (metrics)

    # ---- helpers -----------------------------------------------------------------------
    def _group(self, group_id: str) -> Group:
        group = self.groups.get(group_id)
        if group is None or group.state == DEAD:
            raise BrokerError(ErrorCode.NOT_FOUND, f"consumer group {group_id!r} does not exist")
        return group

    def _member(self, group: Group, member_id: str) -> GroupMember:
        member = group.members.get(member_id)
        if member is None:
            raise BrokerError(ErrorCode.UNKNOWN_MEMBER_ID,
                              f"member {member_id!r} is not in group {group.group_id!r} (it left or its session "
                              f"timed out); join again with member_id \"\"")
        return member

    @staticmethod
    def _check_generation(group: Group, generation_id: int) -> None:
        if generation_id != group.generation_id:
            raise BrokerError(ErrorCode.ILLEGAL_GENERATION,
                              f"generation {generation_id} of group {group.group_id!r} is stale; the current "
                              f"generation is {group.generation_id}: join again")

    # ---- join --------------------------------------------------------------------------
    def join(self, group_id: str, member_id: str, client: str, session_timeout_ms: int,
             rebalance_timeout_ms: int, protocol_type: str, protocols: list, fmt: str | None = None) -> asyncio.Future:
        """Join (or rejoin) a group; the future resolves to the join result when the rebalance completes.

        `fmt` is the layout of the member's "consumer" metadata and assignments (the front door
        it came through, see consumer_protocol.py): a group may mix members of both."""
        if not group_id:
            raise BrokerError(ErrorCode.BAD_REQUEST, "group_id must not be empty")
        if not MIN_SESSION_TIMEOUT_MS <= session_timeout_ms <= MAX_SESSION_TIMEOUT_MS:
            raise BrokerError(ErrorCode.BAD_REQUEST,
                              f"session_timeout_ms must be in [{MIN_SESSION_TIMEOUT_MS}, {MAX_SESSION_TIMEOUT_MS}], "
                              f"got {session_timeout_ms}")
        if not MIN_SESSION_TIMEOUT_MS <= rebalance_timeout_ms <= MAX_REBALANCE_TIMEOUT_MS:
            raise BrokerError(ErrorCode.BAD_REQUEST,
                              f"rebalance_timeout_ms must be in [{MIN_SESSION_TIMEOUT_MS}, {MAX_REBALANCE_TIMEOUT_MS}], "
                              f"got {rebalance_timeout_ms}")
        if not protocols:
            raise BrokerError(ErrorCode.BAD_REQUEST, "protocols must name at least one assignor")
        group = self.groups.get(group_id)
        if not member_id and group is not None and group.state != DEAD and len(group.members) >= self.max_size:
            raise BrokerError(ErrorCode.PRECONDITION_FAILED,
                              f"group {group_id!r} has reached its maximum size of {self.max_size} members "
                              f"(--group-max-size)")
        if group is None or group.state == DEAD:
            group = self.groups[group_id] = Group(group_id)
        if group.members and protocol_type != group.protocol_type:
            raise BrokerError(ErrorCode.PRECONDITION_FAILED,
                              f"group {group_id!r} uses protocol type {group.protocol_type!r}, not {protocol_type!r}")
        names = set(name for name, _ in protocols)
        if group.members and not any(names & set(n for n, _ in m.protocols) for m in group.members.values()):
            raise BrokerError(ErrorCode.PRECONDITION_FAILED,
                              f"group {group_id!r}: none of the assignors {sorted(names)} is supported by the "
                              f"current members")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if member_id:
            member = self._member(group, member_id)
            member.last_heard_ms = _now_ms()
            if (group.state == STABLE and member_id != group.leader_id
                    and list(member.protocols) == list(protocols)):
                # A follower rejoining with nothing changed gets the current generation back.
                fut.set_result(self._join_result(group, member))
                return fut
            member.protocols = list(protocols)
            member.fmt = fmt
            member.session_timeout_ms = session_timeout_ms
            member.rebalance_timeout_ms = rebalance_timeout_ms
        else:
            member_id = f"{client or 'member'}-{next(self._member_numbers)}-{uuid.uuid4().hex[:12]}"
            member = GroupMember(member_id, client, session_timeout_ms, rebalance_timeout_ms, protocol_type,
                                 list(protocols), fmt)
            group.members[member_id] = member
            group.protocol_type = protocol_type
            if not group.leader_id:
                group.leader_id = member_id
        if member.join_future is not None and not member.join_future.done():
            # A second join from the same member replaces the first (its client gave up on it).
            member.join_future.set_exception(BrokerError(ErrorCode.REBALANCE_IN_PROGRESS,
                                                         "superseded by a newer join of the same member"))
        member.join_future = fut
        if group.state != PREPARING_REBALANCE:
            self._prepare_rebalance(group, initial=group.state == EMPTY)
        self._maybe_complete_join(group)
        return fut

    def _prepare_rebalance(self, group: Group, initial: bool = False) -> None:
        # Members waiting on a sync of the old generation must join again.
        for m in group.members.values():
            if m.sync_future is not None and not m.sync_future.done():
                m.sync_future.set_exception(BrokerError(ErrorCode.REBALANCE_IN_PROGRESS,
                                                        f"group {group.group_id!r} is rebalancing; join again"))
            m.sync_future = None
        group.state = PREPARING_REBALANCE
        timeout = max((m.rebalance_timeout_ms for m in group.members.values()), default=0)
        group.rebalance_deadline_ms = _now_ms() + timeout
        group.initial_delay_until_ms = 0.0
        if initial and self.initial_rebalance_delay_ms > 0:
            group.initial_delay_until_ms = _now_ms() + self.initial_rebalance_delay_ms
            group.rebalance_deadline_ms = group.initial_delay_until_ms

    def _maybe_complete_join(self, group: Group, deadline_passed: bool = False) -> None:
        if group.state != PREPARING_REBALANCE:
            return
        if not deadline_passed and (not group.all_joined() or _now_ms() < group.initial_delay_until_ms):
            return
        for m in [m for m in group.members.values() if m.join_future is None]:
            del group.members[m.member_id]  # did not rejoin within the rebalance timeout
        group.generation_id += 1
        self.rebalances += 1
        if not group.members:
            group.state = EMPTY
            group.leader_id = ""
            group.protocol = ""
            return
        if group.leader_id not in group.members:
            group.leader_id = next(iter(group.members))
        group.protocol = group.choose_protocol()
        group.state = COMPLETING_REBALANCE
        now = _now_ms()
        for m in group.members.values():
            fut, m.join_future = m.join_future, None
            m.assignment = b""
            m.last_heard_ms = now
            if not fut.done():
                fut.set_result(self._join_result(group, m))

    def _join_result(self, group: Group, member: GroupMember) -> dict:
        leader = member.member_id == group.leader_id
        return {
            "generation_id": group.generation_id,
            "protocol": group.protocol,
            "leader_id": group.leader_id,
            "member_id": member.member_id,
            "members": [[m.member_id, self.metadata_in(group, m, member.fmt)] for m in group.members.values()]
            if leader else [],
        }

    # ---- sync --------------------------------------------------------------------------
    def sync(self, group_id: str, generation_id: int, member_id: str, assignments: list) -> asyncio.Future:
        group = self._group(group_id)
        member = self._member(group, member_id)
        self._check_generation(group, generation_id)
        member.last_heard_ms = _now_ms()
        fut = asyncio.get_running_loop().create_future()
        if group.state == PREPARING_REBALANCE:
            raise BrokerError(ErrorCode.REBALANCE_IN_PROGRESS, f"group {group_id!r} is rebalancing; join again")
        if group.state == STABLE:
            fut.set_result({"assignment": member.assignment})
            return fut
        # CompletingRebalance
        if member_id == group.leader_id:
            given = {}
            for item in assignments:
                if (not isinstance(item, (list, tuple)) or len(item) != 2 or not isinstance(item[0], str)
                        or not isinstance(item[1], bytes)):
                    raise BrokerError(ErrorCode.BAD_REQUEST,
                                      "assignments must be an array of [member_id, assignment bin]")
                given[item[0]] = item[1]
            for m in group.members.values():
                m.assignment = self._translated(group, translate_assignment, given.get(m.member_id, b""),
                                                member.fmt, m.fmt)
            group.state = STABLE
            for m in group.members.values():
                if m.sync_future is not None and not m.sync_future.done():
                    m.sync_future.set_result({"assignment": m.assignment})
                m.sync_future = None
            fut.set_result({"assignment": member.assignment})
        else:
            if member.sync_future is not None and not member.sync_future.done():
                member.sync_future.set_exception(BrokerError(ErrorCode.REBALANCE_IN_PROGRESS,
                                                             "superseded by a newer sync of the same member"))
            member.sync_future = fut
        return fut

    # ---- the two front doors' layouts -------------------------------------------------
    @staticmethod
    def _translated(group: Group, translate, raw: bytes, src, dst) -> bytes:
        if group.protocol_type != "consumer":
            return raw   # only Kafka's "consumer" protocol has a known layout
        return translate(raw, src, dst)

    def metadata_in(self, group: Group, member: GroupMember, fmt: str | None) -> bytes:
        """The member's metadata for the group's protocol, in the layout of `fmt`'s clients."""
        return self._translated(group, translate_metadata, member.metadata_for(group.protocol), member.fmt, fmt)

    def assignment_in(self, group: Group, member: GroupMember, fmt: str | None) -> bytes:
        """The member's assignment (kept in its own layout) in the layout of `fmt`'s clients."""
        return self._translated(group, translate_assignment, member.assignment, member.fmt, fmt)

    # ---- heartbeat and leave -----------------------------------------------------------
    def heartbeat(self, group_id: str, generation_id: int, member_id: str) -> None:
        group = self._group(group_id)
        member = self._member(group, member_id)
        member.last_heard_ms = _now_ms()
        if group.state == PREPARING_REBALANCE:
            raise BrokerError(ErrorCode.REBALANCE_IN_PROGRESS, f"group {group_id!r} is rebalancing; join again")
        self._check_generation(group, generation_id)

    def leave(self, group_id: str, member_id: str) -> None:
        group = self._group(group_id)
        self._member(group, member_id)
        self._remove_member(group, member_id, "it left the group")

    def _remove_member(self, group: Group, member_id: str, why: str) -> None:
        member = group.members.pop(member_id)
        error = BrokerError(ErrorCode.UNKNOWN_MEMBER_ID, f"member {member_id!r} was removed: {why}")
        for fut in (member.join_future, member.sync_future):
            if fut is not None and not fut.done():
                fut.set_exception(error)
        if group.leader_id == member_id:
            group.leader_id = next(iter(group.members), "")
        if group.state in (STABLE, COMPLETING_REBALANCE):
            if group.members:
                self._prepare_rebalance(group)
            else:
                group.generation_id += 1
                group.state = EMPTY
                group.protocol = ""
        elif group.state == PREPARING_REBALANCE:
            self._maybe_complete_join(group)

    # ---- time --------------------------------------------------------------------------
    def tick(self, now_ms: float | None = None) -> list[tuple[str, str]]:
        """Expire silent members and overdue rebalances; returns the (group, member) pairs evicted."""
        now = _now_ms() if now_ms is None else now_ms
        evicted = []
        for group in list(self.groups.values()):
            for member in list(group.members.values()):
                # A member parked in a join is waiting for the others, not silent.
                waiting = member.join_future is not None and not member.join_future.done()
                if not waiting and member.expired(now):
                    evicted.append((group.group_id, member.member_id))
                    self._remove_member(group, member.member_id,
                                        f"no heartbeat within session_timeout_ms={member.session_timeout_ms}")
            if group.state == PREPARING_REBALANCE and now >= group.rebalance_deadline_ms:
                self._maybe_complete_join(group, deadline_passed=True)
        return evicted

    # ---- offsets -----------------------------------------------------------------------
    def check_commit(self, group_id: str, generation_id: int, member_id: str) -> None:
        """Raise unless a commit with this generation and member may be stored."""
        group = self.groups.get(group_id)
        active = group is not None and group.state != DEAD and bool(group.members)
        if generation_id < 0:
            if active:
                raise BrokerError(ErrorCode.ILLEGAL_GENERATION,
                                  f"group {group_id!r} has active members; a commit without a generation "
                                  f"(generation_id -1) is only allowed for a group with none")
            return
        if group is None or not active:
            raise BrokerError(ErrorCode.UNKNOWN_MEMBER_ID,
                              f"group {group_id!r} has no member {member_id!r}; join the group or commit with "
                              f"generation_id -1")
        self._member(group, member_id).last_heard_ms = _now_ms()
        if group.state == PREPARING_REBALANCE and generation_id == group.generation_id:
            raise BrokerError(ErrorCode.REBALANCE_IN_PROGRESS,
                              f"group {group_id!r} is rebalancing; join again before committing")
        self._check_generation(group, generation_id)

    def delete(self, group_id: str) -> None:
        """Forget an empty group (DeleteGroups). Raises NON_EMPTY_GROUP while it has members."""
        group = self.groups.get(group_id)
        if group is not None and group.members:
            raise BrokerError(ErrorCode.NON_EMPTY_GROUP,
                              f"group {group_id!r} has {len(group.members)} members; it can be deleted once they left")
        self.groups.pop(group_id, None)

    # ---- describing --------------------------------------------------------------------
    def delete_empty(self, group_id: str) -> bool:
        """Forget a group that has no members (DeleteGroups); False if it has members. A group the
        coordinator does not know is already gone."""
        group = self.groups.get(group_id)
        if group is not None and group.members:
            return False
        self.groups.pop(group_id, None)
        return True

    def list_groups(self) -> list[tuple[str, str]]:
        return [(g.group_id, g.state) for g in self.groups.values() if g.state != DEAD]

    def describe(self, group_id: str) -> Group | None:
        return self.groups.get(group_id)
