"""Partition assignors: which member of a consumer group reads which partitions.

As in Kafka, the broker does not assign partitions: the group leader (a client) runs the
assignor named by the group's chosen protocol over every member's subscription and hands the
result to `sync_group`. Each assignor here is a pure function

    assign(subscriptions: {member_id: [topic, ...]}, partitions: {topic: count},
           owned: {member_id: {topic: [partition, ...]}}) -> {member_id: {topic: [partition, ...]}}

so it can be tested without a network. `range` and `roundrobin` follow Kafka's
RangeAssignor and RoundRobinAssignor (members sorted by id). `cooperative-sticky` keeps each
member's owned partitions where the balance allows and moves only the surplus; when it is a
consumer's only strategy the consumer rebalances incrementally (group_protocol.py,
docs/clients-minilog.md).
"""

from .errors import ConfigError


def range_assign(subscriptions, partitions, owned=None):
    result = {m: {} for m in subscriptions}
    topics = sorted({t for ts in subscriptions.values() for t in ts})
    for topic in topics:
        members = sorted(m for m, ts in subscriptions.items() if topic in ts)
        count = partitions.get(topic, 0)
        if not members or count <= 0:
            continue
        per, extra = divmod(count, len(members))
        start = 0
        for i, m in enumerate(members):
            n = per + (1 if i < extra else 0)
            if n:
                result[m][topic] = list(range(start, start + n))
            start += n
    return result


def roundrobin_assign(subscriptions, partitions, owned=None):
    result = {m: {} for m in subscriptions}
    members = sorted(subscriptions)
    if not members:
        return result
    all_tps = sorted((t, p) for t in {t for ts in subscriptions.values() for t in ts}
                     for p in range(partitions.get(t, 0)))
    i = 0
    for topic, p in all_tps:
        # The next member in the circle that subscribes to this topic.
        for _ in range(len(members)):
            m = members[i % len(members)]
            i += 1
            if topic in subscriptions[m]:
                result[m].setdefault(topic, []).append(p)
                break
    return result


def sticky_assign(subscriptions, partitions, owned=None):
    """Balanced like roundrobin, but a partition stays with its current owner when it can."""
    owned = owned or {}
    result = {m: {} for m in subscriptions}
    members = sorted(subscriptions)
    if not members:
        return result
    all_tps = sorted((t, p) for t in {t for ts in subscriptions.values() for t in ts}
                     for p in range(partitions.get(t, 0)))
    total = len(all_tps)
    quota = {m: total // len(members) + (1 if i < total % len(members) else 0) for i, m in enumerate(members)}
    counts = {m: 0 for m in members}
    taken = set()
    for m in members:
        for topic, ps in sorted((owned.get(m) or {}).items()):
            if topic not in subscriptions[m]:
                continue
            for p in sorted(ps):
                if (topic, p) in taken or p >= partitions.get(topic, 0) or counts[m] >= quota[m]:
                    continue
                taken.add((topic, p))
                result[m].setdefault(topic, []).append(p)
                counts[m] += 1
    for topic, p in all_tps:
        if (topic, p) in taken:
            continue
        candidates = [m for m in members if topic in subscriptions[m]]
        if not candidates:
            continue
        m = min(candidates, key=lambda c: (counts[c] - quota[c], counts[c], c))
        result[m].setdefault(topic, []).append(p)
        counts[m] += 1
    for m in result:
        for topic in result[m]:
            result[m][topic].sort()
    return result


ASSIGNORS = {
    "range": range_assign,
    "roundrobin": roundrobin_assign,
    "cooperative-sticky": sticky_assign,
}


def parse_strategies(value) -> list[str]:
    """`partition.assignment.strategy` ('range,roundrobin' or a list) as a list of known names."""
    names = [s.strip() for s in (value.split(",") if isinstance(value, str) else value) if s.strip()]
    for n in names:
        if n not in ASSIGNORS:
            raise ConfigError(f"unknown partition.assignment.strategy {n!r}; use one of {sorted(ASSIGNORS)}")
    if not names:
        raise ConfigError("partition.assignment.strategy names no assignor")
    return names
