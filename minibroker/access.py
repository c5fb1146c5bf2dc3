"""Who may do what in minibroker: RabbitMQ's permission model, checked in one place.

Each user has three regular expressions (`minibroker users set-permissions USER CONF WRITE READ`):

- **configure**: declare and delete exchanges and queues with matching names;
- **write**: publish to matching exchanges; bind matching queues (or destination exchanges);
- **read**: consume from, get from and purge matching queues; bind from matching source
  exchanges.

As in RabbitMQ, a pattern matches if it is found anywhere in the name (anchor it with `^...$`),
the empty pattern matches nothing, the default exchange `""` is checked under the name
`amq.default`, and passive declares need no permission. A server-named queue (declared as `""`)
is checked under a name of the form `amq.gen-...`. A user with no permissions stored may do
nothing but connect.

`OP_RESOURCES` says which permissions each msgpack op needs; every front door calls
`authorize(access, op, args)` (the AMQP door with the names of the msgpack op its method maps
to) or `check(access, ...)` directly, so no handler checks anything itself. Decisions are cached
per (permission, name), so a publish loop costs one dictionary lookup per exchange name.
"""

from __future__ import annotations

import re

from serverbase.auth import NotAuthorized

from .queue import server_named_queue

CONFIGURE, WRITE, READ = "configure", "write", "read"
PERMISSIONS = (CONFIGURE, WRITE, READ)
DEFAULT_EXCHANGE_NAME = "amq.default"
_CACHE_LIMIT = 10_000


def check_pattern(pattern: str) -> str:
    """A permission pattern as typed by an operator, or ValueError saying what is wrong."""
    if not isinstance(pattern, str):
        raise ValueError("a permission pattern must be a string")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None
    return pattern


class Permissions:
    """One user's compiled configure/write/read patterns with a decision cache."""

    __slots__ = ("user", "patterns", "_regex", "_cache")

    def __init__(self, user: str, configure: str = "", write: str = "", read: str = ""):
        self.user = user
        self.patterns = {CONFIGURE: configure, WRITE: write, READ: read}
        self._regex = {p: re.compile(v) if v else None for p, v in self.patterns.items()}
        self._cache: dict[tuple[str, str], bool] = {}

    @classmethod
    def from_stored(cls, user: str, raw) -> "Permissions":
        """From the user store's entry (None or a damaged entry: nothing allowed)."""
        if not isinstance(raw, dict):
            return cls(user)
        try:
            return cls(user, *(check_pattern(raw.get(p, "")) for p in PERMISSIONS))
        except ValueError:
            return cls(user)

    def allows(self, permission: str, name: str) -> bool:
        key = (permission, name)
        decision = self._cache.get(key)
        if decision is None:
            regex = self._regex[permission]
            decision = regex is not None and regex.search(name) is not None
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = decision
        return decision

    def check(self, permission: str, kind: str, name: str) -> None:
        """Raise NotAuthorized unless this user has `permission` on the `kind` ("queue" or
        "exchange") called `name`."""
        checked = name or (DEFAULT_EXCHANGE_NAME if kind == "exchange" else name)
        if not self.allows(permission, checked):
            raise NotAuthorized(f"ACCESS_REFUSED: user {self.user!r} has no {permission} permission on "
                                f"{kind} {checked!r} (its {permission} pattern is "
                                f"{self.patterns[permission]!r})", kind, checked)


def _str(args: dict, name: str, default: str = "") -> str:
    value = args.get(name, default)
    return value if isinstance(value, str) else default   # the handler words a mistyped argument


def _passive(args) -> bool:
    return args.get("passive") is True


def _queue_declare(args):
    if _passive(args):
        return ()
    name = _str(args, "queue")
    return ((CONFIGURE, "queue", name or server_named_queue()),)


# op -> function(args) -> ((permission, kind, name), ...). Ops not listed need no permission
# (channels, qos, acks, cancel, ping): they touch only the connection's own state.
OP_RESOURCES = {
    "exchange_declare": lambda a: () if _passive(a) else ((CONFIGURE, "exchange", _str(a, "exchange")),),
    "exchange_delete": lambda a: ((CONFIGURE, "exchange", _str(a, "exchange")),),
    "exchange_bind": lambda a: ((WRITE, "exchange", _str(a, "destination")), (READ, "exchange", _str(a, "source"))),
    "exchange_unbind": lambda a: ((WRITE, "exchange", _str(a, "destination")), (READ, "exchange", _str(a, "source"))),
    "queue_declare": _queue_declare,
    "queue_delete": lambda a: ((CONFIGURE, "queue", _str(a, "queue")),),
    "queue_bind": lambda a: ((WRITE, "queue", _str(a, "queue")), (READ, "exchange", _str(a, "exchange"))),
    "queue_unbind": lambda a: ((WRITE, "queue", _str(a, "queue")), (READ, "exchange", _str(a, "exchange"))),
    "queue_purge": lambda a: ((READ, "queue", _str(a, "queue")),),
    "consume": lambda a: ((READ, "queue", _str(a, "queue")),),
    "get": lambda a: ((READ, "queue", _str(a, "queue")),),
    "publish": lambda a: ((WRITE, "exchange", _str(a, "exchange")),),
}


def authorize(access: Permissions | None, op: str, args: dict) -> None:
    """Raise NotAuthorized if `access` may not do `op` with `args` (None: may do everything).

    `publish_batch` is not decided here: each of its messages is, by `publish_allowed`, so the
    allowed ones still go out (see `MinibrokerServer.authorize`).
    """
    if access is None:
        return
    needs = OP_RESOURCES.get(op)
    if needs is not None:
        for permission, kind, name in needs(args):
            access.check(permission, kind, name)


def publish_allowed(access: Permissions | None, exchange) -> bool:
    if access is None:
        return True
    return isinstance(exchange, str) and access.allows(WRITE, exchange or DEFAULT_EXCHANGE_NAME)
