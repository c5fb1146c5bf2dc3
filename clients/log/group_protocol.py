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
- `read_assignment(raw)`: a member's view of its `sync_group` result, `{topic: [partition]}`.
"""

import msgpack

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
