"""The consumer-group protocol's content, with no I/O: what a member says and what the leader decides.

Both log consumers — the blocking one (`clients/log/group.py`, `GroupMembership`) and the
asyncio one (`clients/aio_log/consumer.py`) — speak the group protocol through these functions,
so a group may mix them and either may lead:

- `member_metadata(topics, owned)`: what a member sends in `join_group` for every strategy:
  msgpack `{topics: [...], owned: {topic: [partition, ...]}}` — its subscription, and the
  partitions it holds now, which `cooperative-sticky` needs to keep them where they are;
- `read_members(members)`: the leader's view of the join reply's `[member_id, metadata]` list,
  as subscriptions and owned partitions (a member whose metadata cannot be read subscribes to
  nothing, and the others proceed);
- `plan_assignments(protocol, strategies, subscriptions, owned, counts)`: the leader runs the
  group's assignor and, for `cooperative-sticky`, withholds every partition that would move
  from one member to another: its owner revokes it and rejoins, and the next round hands it
  over (KIP-429's two phases);
- `read_assignment(raw)`: a member's view of its `sync_group` result, `{topic: [partition]}`;
- `GroupMember`: one member's side of the protocol as a state with no I/O. It makes the
  requests (`join_request`, `sync_request`, `heartbeat_request`, `leave_request` return the op
  and its arguments, for the caller to send however it sends), takes their replies (`joined`,
  `synced`) and says what an error reply means (`reply_failed`: join again at once, or fail).
  The blocking consumer's `GroupMembership` is a `GroupMember` that adds the polling loop and
  the heartbeat thread; the asyncio consumer drives one from its group task.
"""

import msgpack

from ..protocol.errors import ErrorCode
from .assignors import ASSIGNORS

COOPERATIVE = "cooperative-sticky"


def member_metadata(topics, owned) -> bytes:
    return msgpack.packb({"topics": list(topics), "owned": {t: list(ps) for t, ps in (owned or {}).items()}},
                         use_bin_type=True)


def read_members(members) -> tuple[dict, dict]:
    """([member_id, metadata], ...) -> ({member: [topic]}, {member: {topic: [partition]}})."""
    subscriptions, owned = {}, {}
    for member_id, metadata in members:
        try:
            meta = msgpack.unpackb(metadata, raw=False) if metadata else {}
            if not isinstance(meta, dict):
                meta = {}
        except Exception:  # unreadable metadata: that member gets nothing, the rest proceed
            meta = {}
        subscriptions[member_id] = [t for t in meta.get("topics") or () if isinstance(t, str)]
        mine = meta.get("owned") or {}
        owned[member_id] = mine if isinstance(mine, dict) else {}
    return subscriptions, owned


def subscribed_topics(subscriptions) -> list:
    return sorted({t for ts in subscriptions.values() for t in ts})


def plan_assignments(protocol, strategies, subscriptions, owned, counts) -> list:
    """The leader's `sync_group` assignments: [[member_id, msgpack {topic: [partition]}], ...]."""
    assignor = ASSIGNORS.get(protocol) or ASSIGNORS[strategies[0]]
    plan = assignor(subscriptions, counts, owned)
    if protocol == COOPERATIVE:
        owner = {(t, p): m for m, ts in owned.items() for t, ps in ts.items() for p in ps}
        plan = {m: {t: [p for p in ps if owner.get((t, p), m) == m] for t, ps in tps.items()}
                for m, tps in plan.items()}
    return [[m, msgpack.packb(plan.get(m, {}), use_bin_type=True)] for m in subscriptions]


def read_assignment(raw) -> dict:
    """A sync_group result's assignment as {topic: [partition]}; raises ValueError if unreadable."""
    if not raw:
        return {}
    try:
        plan = msgpack.unpackb(raw, raw=False)
    except Exception as exc:
        raise ValueError(f"the group leader sent an unreadable assignment: {exc}") from None
    if not isinstance(plan, dict):
        raise ValueError("the group leader sent an assignment that is not a map")
    return {t: [p for p in ps if isinstance(p, int)] for t, ps in plan.items() if isinstance(t, str) and ps}


def is_cooperative(strategies) -> bool:
    """Incremental rebalancing only when every configured strategy supports it (as librdkafka)."""
    return all(s == COOPERATIVE for s in strategies)


# Error codes of a join_group, sync_group or heartbeat reply after which a member joins again at
# once: the group is rebalancing, moved to a new generation, or no longer knows the member.
REJOIN_CODES = frozenset((ErrorCode.REBALANCE_IN_PROGRESS, ErrorCode.ILLEGAL_GENERATION, ErrorCode.UNKNOWN_MEMBER_ID))
REJOIN = "rejoin"
FAIL = "fail"


class GroupMember:
    """One consumer's membership of a group, without I/O: the requests to send, what replies do."""

    def __init__(self, group_id, strategies, session_timeout_ms, rebalance_timeout_ms, client_id):
        self.group_id = group_id
        self.strategies = list(strategies)
        self.session_timeout_ms = session_timeout_ms
        self.rebalance_timeout_ms = rebalance_timeout_ms
        self.client_id = client_id
        self.member_id = ""       # given by the coordinator's first join reply
        self.generation = -1
        self.leader_id = ""
        self.protocol = ""        # the strategy the group chose
        self.owned: dict[str, list[int]] = {}  # what the last sync gave this member
        # Kafka's incremental cooperative rebalancing (KIP-429) when every configured assignor
        # supports it: a rebalance revokes only the partitions that move.
        self.cooperative = is_cooperative(self.strategies)

    def join_request(self, topics, owned=None) -> tuple[str, dict]:
        """`join_group` for a member subscribed to `topics`, holding `owned` (default: what the
        last sync gave it), which cooperative-sticky needs to keep partitions in place."""
        metadata = member_metadata(topics, self.owned if owned is None else owned)
        return "join_group", {
            "group_id": self.group_id, "member_id": self.member_id,
            "session_timeout_ms": self.session_timeout_ms, "rebalance_timeout_ms": self.rebalance_timeout_ms,
            "protocol_type": "consumer", "protocols": [[s, metadata] for s in self.strategies],
            "client": self.client_id}

    def joined(self, result) -> bool:
        """Take a join reply; True when this member leads (it must plan the assignments)."""
        self.generation = result["generation_id"]
        self.member_id = result["member_id"]
        self.leader_id = result["leader_id"]
        self.protocol = result.get("protocol") or ""
        return self.member_id == self.leader_id

    def sync_request(self, assignments=()) -> tuple[str, dict]:
        """`sync_group` for the generation joined (the leader sends the plan, the others nothing)."""
        return "sync_group", {"group_id": self.group_id, "generation_id": self.generation,
                              "member_id": self.member_id, "assignments": list(assignments)}

    def synced(self, result) -> dict:
        """Take a sync reply: the member's partitions, {topic: [partition]}; ValueError if unreadable."""
        plan = read_assignment(result.get("assignment"))
        self.owned = {t: list(ps) for t, ps in plan.items() if ps}
        return plan

    def incremental(self) -> bool:
        """Whether this generation hands partitions over in two phases (cooperative-sticky)."""
        return self.cooperative and self.protocol == COOPERATIVE

    def heartbeat_request(self) -> tuple[str, dict]:
        return "heartbeat", {"group_id": self.group_id, "generation_id": self.generation, "member_id": self.member_id}

    def leave_request(self) -> tuple[str, dict]:
        return "leave_group", {"group_id": self.group_id, "member_id": self.member_id}

    def reply_failed(self, code) -> str:
        """What an error reply to join, sync or heartbeat means: REJOIN (at once) or FAIL (report it).
        A coordinator that no longer knows the member makes it join as a new one."""
        if code == ErrorCode.UNKNOWN_MEMBER_ID:
            self.member_id = ""
        return REJOIN if code in REJOIN_CODES else FAIL

    def left(self) -> None:
        """Out of the group (left, or dropped): the next join is a new member's."""
        self.member_id = ""
        self.generation = -1
        self.owned = {}
