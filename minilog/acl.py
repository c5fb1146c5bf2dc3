"""Who may do what in minilog: Kafka's ACL model, checked in one place every front door calls.

A user's ACLs (`minilog users set-permissions alice topic:orders:read,write group:billing:read`)
each allow operations on topics or groups whose names match, literally (`orders`), by prefix
(`logs-*`: every name starting with `logs-`) or all of them (`*`). Operations are Kafka's:
read, write, create, delete, describe, alter, and `all`; as in Kafka, read, write, delete and
alter each imply describe. Nothing is allowed that no ACL allows (there are no deny entries).

| what | needs |
|---|---|
| produce | write on the topic (and create on it, if it does not exist yet and would be created) |
| fetch, long poll | read on the topic |
| list offsets, metadata | describe on the topic (metadata of all topics shows only those) |
| create / delete a topic, add partitions | create / delete / alter on the topic |
| delete a group | delete on the group |
| join, sync, heartbeat, leave a group | read on the group |
| commit offsets | read on the group and read on each topic |
| fetch offsets, describe a group | describe on the group (and on each topic asked for) |
| list groups | describe on a group to see it |

`GuardedLog` wraps the core (`minilog.broker.LogBroker`) for one connection's user with the
same methods, so a front door calls `core.produce(...)` whoever the user is: a denied row comes
back with `[NOT_AUTHORIZED, message]` in its error place (the Kafka door turns it into
TOPIC_AUTHORIZATION_FAILED), a denied call raises `NotAuthorized` with the resource ("topic",
"group"), and the connection stays usable. Decisions are cached per (resource, name,
operation), so a produce loop pays one dictionary lookup per topic.
"""

from __future__ import annotations

import asyncio

from clients.protocol.errors import ErrorCode
from serverbase.auth import NotAuthorized

RESOURCES = ("topic", "group")
OPERATIONS = ("read", "write", "create", "delete", "describe", "alter")
_IMPLY_DESCRIBE = frozenset({"read", "write", "delete", "alter"})
_CACHE_LIMIT = 10_000


def parse_acl(spec: str) -> dict:
    """`topic:orders:read,write` / `group:team-*:read` / `topic:*:all` -> a stored ACL entry."""
    try:
        resource, name, ops = spec.rsplit(":", 2) if spec.count(":") >= 2 else (None, None, None)
        if resource is None:
            raise ValueError
    except ValueError:
        raise ValueError(f"{spec!r}: an ACL is RESOURCE:NAME:OPERATIONS, e.g. topic:orders:read,write") from None
    resource = resource.lower()
    if resource not in RESOURCES:
        raise ValueError(f"{spec!r}: the resource must be one of {', '.join(RESOURCES)}")
    if not name:
        raise ValueError(f"{spec!r}: empty name (use * for every name, or a prefix ending in *)")
    operations = sorted({op.strip().lower() for op in ops.split(",") if op.strip()})
    for op in operations:
        if op not in OPERATIONS and op != "all":
            raise ValueError(f"{spec!r}: unknown operation {op!r} (one of {', '.join(OPERATIONS)}, all)")
    if not operations:
        raise ValueError(f"{spec!r}: no operations")
    if name == "*":
        pattern, name = "literal", "*"
    elif name.endswith("*"):
        pattern, name = "prefixed", name[:-1]
    else:
        pattern = "literal"
    return {"resource": resource, "pattern": pattern, "name": name, "operations": operations}


def describe_acl(entry: dict) -> str:
    name = entry["name"] + ("*" if entry["pattern"] == "prefixed" else "")
    return f"{entry['resource']}:{name}:{','.join(entry['operations'])}"


class Acl:
    """One user's ACLs, compiled, with a decision cache."""

    __slots__ = ("user", "entries", "_cache")

    def __init__(self, user: str, entries=()):
        self.user = user
        self.entries = [e for e in entries if isinstance(e, dict) and e.get("resource") in RESOURCES]
        self._cache: dict[tuple, bool] = {}

    @classmethod
    def from_stored(cls, user: str, raw) -> "Acl":
        """From the user store (None or damaged: nothing allowed)."""
        return cls(user, raw if isinstance(raw, list) else ())

    def allows(self, resource: str, name: str, operation: str) -> bool:
        key = (resource, name, operation)
        decision = self._cache.get(key)
        if decision is None:
            decision = any(self._matches(e, resource, name, operation) for e in self.entries)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = decision
        return decision

    @staticmethod
    def _matches(entry, resource, name, operation) -> bool:
        if entry["resource"] != resource:
            return False
        ops = entry.get("operations", ())
        if "all" not in ops and operation not in ops and not (operation == "describe" and _IMPLY_DESCRIBE & set(ops)):
            return False
        pattern = entry.get("name", "")
        if entry.get("pattern") == "prefixed":
            return name.startswith(pattern)
        return pattern == "*" or pattern == name

    def check(self, resource: str, name: str, operation: str) -> None:
        if not self.allows(resource, name, operation):
            raise NotAuthorized(self.denial(resource, name, operation), resource, name)

    def denial(self, resource: str, name: str, operation: str) -> str:
        return f"user {self.user!r} may not {operation} {resource} {str(name)[:249]!r}"

    def row_error(self, resource, name, operation) -> list:
        return [ErrorCode.NOT_AUTHORIZED, self.denial(resource, name, operation)]


class GuardedLog:
    """The core as one user may use it: the same methods as `LogBroker`, each checked."""

    def __init__(self, core, acl: Acl):
        self.core = core
        self.acl = acl

    # Read-only figures with no names in them.
    def info(self) -> dict:
        return self.core.info()

    @property
    def default_partitions(self):
        return self.core.default_partitions

    # ---- topics ------------------------------------------------------------------------
    def topic_names(self) -> list[str]:
        return [n for n in self.core.topic_names() if self.acl.allows("topic", n, "describe")]

    def create_topic(self, name, num_partitions=None, config=None, validate_only=False) -> None:
        self.acl.check("topic", name, "create")
        return self.core.create_topic(name, num_partitions, config, validate_only)

    def create_topic_off_loop(self, name, num_partitions=None, config=None, validate_only=False):
        self.acl.check("topic", name, "create")
        return self.core.create_topic_off_loop(name, num_partitions, config, validate_only)

    def delete_topic(self, name) -> None:
        self.acl.check("topic", name, "delete")
        return self.core.delete_topic(name)

    def create_partitions_off_loop(self, name, count, validate_only=False):
        self.acl.check("topic", name, "alter")
        return self.core.create_partitions_off_loop(name, count, validate_only)

    def alter_topic_config(self, name, set_, delete):
        self.acl.check("topic", name, "alter")
        return self.core.alter_topic_config(name, set_, delete)

    def describe_topics(self, names, allow_auto_create: bool = False) -> dict:
        acl = self.acl
        if names is None:
            return self.core.describe_topics(self.topic_names())
        out, allowed, creatable = {}, [], []
        for name in names:
            if not acl.allows("topic", name, "describe"):
                out[name] = {"partitions": [], "config": {}, "error": acl.row_error("topic", name, "describe")}
            elif allow_auto_create and acl.allows("topic", name, "create"):
                creatable.append(name)
            else:
                allowed.append(name)
        if allowed:
            out.update(self.core.describe_topics(allowed, False))
        created = self.core.describe_topics(creatable, True) if creatable else {}
        if type(created) is not dict:   # auto-creations under way (LogBroker.describe_topics)
            return self._described_when_created(names, out, created)
        out.update(created)
        return {name: out[name] for name in names if name in out}

    @staticmethod
    async def _described_when_created(names, out, created) -> dict:
        out.update(await created)
        return {name: out[name] for name in names if name in out}

    # ---- produce and fetch ---------------------------------------------------------------
    def produce(self, entries: list, acks: int = 1, *fmt):
        acl, core = self.acl, self.core
        allowed, denied = [], {}
        for i, entry in enumerate(entries):
            topic = entry[0] if isinstance(entry, (list, tuple)) and entry else None
            if isinstance(topic, str):
                if not acl.allows("topic", topic, "write"):
                    denied[i] = acl.row_error("topic", topic, "write")
                    continue
                if not acl.allows("topic", topic, "create") and not core.topics.exists(topic):
                    denied[i] = [ErrorCode.NOT_AUTHORIZED,
                                 f"topic {topic!r} does not exist and user {acl.user!r} may not create it"]
                    continue
            allowed.append(entry)
        if not denied:
            return core.produce(entries, acks, *fmt)
        result = core.produce(allowed, acks, *fmt) if allowed else []

        def merge(rows):
            it = iter(rows)
            return [[entries[i][0], entries[i][1] if len(entries[i]) > 1 else None, -1, denied[i]]
                    if i in denied else next(it) for i in range(len(entries))]
        if isinstance(result, list):
            return merge(result)

        async def later():
            return merge(await result)
        return later()

    def _split_read(self, parts):
        acl = self.acl
        allowed, denied = [], {}
        for i, part in enumerate(parts):
            if acl.allows("topic", part[0], "read"):
                allowed.append(part)
            else:
                denied[i] = (part[0], part[1], acl.row_error("topic", part[0], "read"), -1, -1, None)
        return allowed, denied

    @staticmethod
    def _merge_read(parts, denied, rows):
        it = iter(rows)
        return [denied[i] if i in denied else next(it) for i in range(len(parts))]

    def read(self, parts, max_bytes: int, min_bytes: int, *fmt):
        allowed, denied = self._split_read(parts)
        if not denied:
            return self.core.read(parts, max_bytes, min_bytes, *fmt)
        rows, _ = self.core.read(allowed, max_bytes, min_bytes, *fmt) if allowed else ([], True)
        return self._merge_read(parts, denied, rows), True   # an error: the answer goes now

    def park(self, parts, max_bytes: int, min_bytes: int, max_wait_ms: int, on_ready, *fmt):
        allowed, denied = self._split_read(parts)
        if not denied:
            return self.core.park(parts, max_bytes, min_bytes, max_wait_ms, on_ready, *fmt)
        # A denied partition is an error row: the answer goes now (on the next loop turn, as
        # `on_ready` never runs inside `park`).
        rows, _ = self.core.read(allowed, max_bytes, min_bytes, *fmt) if allowed else ([], True)
        return asyncio.get_running_loop().call_soon(on_ready, self._merge_read(parts, denied, rows))

    async def wait_for_records(self, parts, max_bytes: int, min_bytes: int, max_wait_ms: int, *fmt):
        allowed, denied = self._split_read(parts)
        if not denied:
            return await self.core.wait_for_records(parts, max_bytes, min_bytes, max_wait_ms, *fmt)
        rows, _ = self.core.read(allowed, max_bytes, min_bytes, *fmt) if allowed else ([], True)
        return self._merge_read(parts, denied, rows)

    def list_offsets(self, items, timestamps: bool = False) -> list:
        acl = self.acl
        allowed, denied = [], {}
        for i, (topic, partition, ts) in enumerate(items):
            if acl.allows("topic", topic, "describe"):
                allowed.append((topic, partition, ts))
            else:
                denied[i] = [topic, partition, -1, acl.row_error("topic", topic, "describe")] + [-1] * timestamps
        rows = iter(self.core.list_offsets(allowed, timestamps) if allowed else [])
        return [denied[i] if i in denied else next(rows) for i in range(len(items))]

    # ---- groups --------------------------------------------------------------------------
    def join_group(self, group_id, *args):
        self.acl.check("group", group_id, "read")
        return self.core.join_group(group_id, *args)

    def sync_group(self, group_id, *args):
        self.acl.check("group", group_id, "read")
        return self.core.sync_group(group_id, *args)

    def heartbeat(self, group_id, *args):
        self.acl.check("group", group_id, "read")
        return self.core.heartbeat(group_id, *args)

    def leave_group(self, group_id, *args):
        self.acl.check("group", group_id, "read")
        return self.core.leave_group(group_id, *args)

    def commit_offsets(self, group_id, generation_id, member_id, offsets):
        acl = self.acl
        acl.check("group", group_id, "read")
        offsets = list(offsets)
        allowed, denied = [], {}
        for i, item in enumerate(offsets):
            if acl.allows("topic", item[0], "read"):
                allowed.append(item)
            else:
                denied[i] = [item[0], item[1], acl.row_error("topic", item[0], "read")]
        if not denied:
            return self.core.commit_offsets(group_id, generation_id, member_id, offsets)
        result = self.core.commit_offsets(group_id, generation_id, member_id, allowed) if allowed else []

        def merge(rows):
            it = iter(rows)
            return [denied[i] if i in denied else next(it) for i in range(len(offsets))]
        if isinstance(result, list):
            return merge(result)

        async def later():
            return merge(await result)
        return later()

    def fetch_offsets(self, group_id, partitions=None) -> list:
        acl = self.acl
        acl.check("group", group_id, "describe")
        if partitions is None:
            return [row for row in self.core.fetch_offsets(group_id) if acl.allows("topic", row[0], "describe")]
        partitions = list(partitions)
        rows = iter(self.core.fetch_offsets(group_id, [p for p in partitions
                                                       if acl.allows("topic", p[0], "describe")]))
        # A topic the user may not describe shows as nothing committed: its offsets stay private.
        return [next(rows) if acl.allows("topic", t, "describe") else [t, p, -1, ""] for t, p in partitions]

    def list_groups(self) -> list:
        return [(g, s) for g, s in self.core.list_groups() if self.acl.allows("group", g, "describe")]

    def delete_group(self, group_id):
        self.acl.check("group", group_id, "delete")
        return self.core.delete_group(group_id)

    def describe_group(self, group_id) -> dict:
        self.acl.check("group", group_id, "describe")
        return self.core.describe_group(group_id)
