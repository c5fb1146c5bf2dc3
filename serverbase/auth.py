"""Logging in: the one authenticator every front door of a server calls.

The msgpack `hello`, AMQP's PLAIN/AMQPLAIN and Kafka's SASL PLAIN all end in
`await server.authenticator.login(username, password, peer)`, which returns a `Principal` (the
user's name and its compiled permissions) or raises `NotAuthorized`. So the same users, the
same checks and the same backoff hold on every listener.

Who may log in:
- users of the user store (`serverbase/users.py`, managed with `<broker> users ...`), when the
  server runs with `--auth`; each with the permissions stored for it;
- users given on the command line with `--user NAME:PASSWORD` (visible to anyone on the machine
  through `ps`: for quick local use); they may do everything.
Without `--auth` or `--user` nobody is checked and everyone may do everything.

Password guessing is slowed per client address (`LoginThrottle`): after a failure, the next
attempt from that address waits 0.1 s, then 0.2, 0.4... up to 5 s, and attempts from one
address run one at a time, so opening many connections does not buy parallel guesses. The
wait comes before the check, so a guesser who does not wait for the reply gains nothing. A
success does not clear the count (one known account must not reset the penalty of another);
failures are forgotten after five quiet minutes. Each failure is logged with the user name and
the address, never the password.

The slow hash (scrypt, ~40 ms) runs in a worker thread, never on the event loop. A password
already verified is remembered, keyed by an HMAC under a per-process random key, so reconnects
of a busy client cost a dictionary lookup, not a hash; a changed password in the store
invalidates it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any, Callable

from clients.protocol.errors import BrokerError, ErrorCode

from .users import MAX_PASSWORD, MAX_USERNAME, UserStore, UserStoreError, verify_password

log = logging.getLogger("serverbase.auth")

FULL_ACCESS = None   # a principal's `access` when it may do everything


class NotAuthorized(BrokerError):
    """A refused login or a denied operation. `resource` says what was denied ("topic",
    "group", "queue", "exchange", or "login"), so the Kafka and AMQP front doors can choose
    their own codes (TOPIC_AUTHORIZATION_FAILED, GROUP_AUTHORIZATION_FAILED, 403)."""

    def __init__(self, message: str, resource: str = "login", name: str = ""):
        super().__init__(ErrorCode.NOT_AUTHORIZED, message)
        self.resource = resource
        self.name = name


@dataclass(frozen=True)
class Principal:
    name: str | None
    access: Any = FULL_ACCESS   # the broker's compiled permissions; FULL_ACCESS: no checks


ANONYMOUS = Principal(None)


class LoginThrottle:
    """Per-address backoff for failed logins (see the module docstring)."""

    def __init__(self, base: float = 0.1, cap: float = 5.0, forget_after: float = 300.0,
                 max_addresses: int = 10_000, max_waiting: int = 8, clock=time.monotonic):
        self.base, self.cap, self.forget_after = base, cap, forget_after
        self.max_addresses, self.max_waiting = max_addresses, max_waiting
        self.clock = clock
        self._state: dict[str, _AddressState] = {}

    def _get(self, address: str) -> _AddressState | None:
        state = self._state.get(address)
        if state is not None and not state.waiting and self.clock() - state.last_failure > self.forget_after:
            del self._state[address]
            return None
        return state

    def failures(self, address: str) -> int:
        state = self._get(address)
        return 0 if state is None else state.failures

    async def attempt(self, address: str, check: Callable):
        """Run `await check()` (True: good credentials) under this address's backoff."""
        state = self._get(address)
        if state is None:
            ok = await check()
            if not ok:
                self._failed(address, None)
            return ok
        if state.waiting >= self.max_waiting:
            raise NotAuthorized(f"too many login attempts from {address} at once; wait and retry")
        state.waiting += 1
        try:
            async with state.lock:
                wait = state.next_allowed - self.clock()
                if wait > 0:
                    await asyncio.sleep(wait)
                ok = await check()
                if not ok:
                    self._failed(address, state)
                return ok
        finally:
            state.waiting -= 1

    def _failed(self, address: str, state) -> None:
        now = self.clock()
        if state is None:
            state = self._state.get(address)
            if state is None:
                if len(self._state) >= self.max_addresses:
                    self._evict()
                state = self._state[address] = _AddressState()
        state.failures += 1
        state.last_failure = now
        state.next_allowed = now + min(self.base * 2 ** (state.failures - 1), self.cap)

    def delay_after(self, address: str) -> float:
        state = self._get(address)
        return 0.0 if state is None else max(0.0, state.next_allowed - self.clock())

    def _evict(self) -> None:
        idle = sorted((s.last_failure, a) for a, s in self._state.items() if not s.waiting)
        for _, address in idle[: max(1, len(idle) // 10)]:
            del self._state[address]


class _AddressState:
    __slots__ = ("failures", "last_failure", "next_allowed", "waiting", "lock")

    def __init__(self):
        self.failures = 0
        self.last_failure = 0.0
        self.next_allowed = 0.0
        self.waiting = 0
        self.lock = asyncio.Lock()


def peer_address(peer) -> str:
    """The host part of a peername (the port changes with every connection)."""
    if isinstance(peer, (tuple, list)) and peer:
        return str(peer[0])
    return str(peer or "unknown")


class Authenticator:
    """Checks credentials for every front door of one server.

    `compile_permissions(user, raw)` turns a user's stored permissions into the broker's checker
    (cached per user until the store changes); a user without stored permissions gets
    `compile_permissions(user, None)`, which should deny everything.
    """

    def __init__(self, *, enabled: bool, static: dict | None = None, store: UserStore | None = None,
                 compile_permissions: Callable = lambda user, raw: FULL_ACCESS,
                 throttle: LoginThrottle | None = None):
        self.enabled = enabled
        self.static = dict(static or {})
        self.store = store
        self.compile_permissions = compile_permissions
        self.throttle = throttle or LoginThrottle()
        self._key = secrets.token_bytes(32)
        self._verified: dict[str, tuple[bytes, str]] = {}   # user -> (HMAC of password, stored hash)
        self._compiled: dict[str, tuple[Any, Any]] = {}      # user -> (raw permissions, compiled)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.failed_logins = 0

    def check_ready(self) -> None:
        """Refuse to start with --auth and nobody able to log in (a typo'd data dir, say)."""
        if self.enabled and not self.static and not (self.store and self.store.names()):
            path = self.store.path if self.store else "the data directory"
            raise UserStoreError(f"--auth is on but {path} holds no users; add one with `users add NAME`")

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def anonymous(self, username=None) -> Principal:
        return Principal(username if isinstance(username, str) else None)

    async def login(self, username, password, peer) -> Principal:
        """The principal for these credentials, or NotAuthorized (after the address's backoff)."""
        if not self.enabled:
            return self.anonymous(username)
        address = peer_address(peer)
        if not isinstance(username, str) or not isinstance(password, str):
            raise NotAuthorized("this server requires credentials: a user name and a password")
        if len(username) > MAX_USERNAME or len(password) > MAX_PASSWORD:
            ok = False   # still counted and slowed, like any wrong guess
            await self.throttle.attempt(address, self._refuse)
        else:
            ok = await self.throttle.attempt(address, lambda: self._verify(username, password))
        if not ok:
            self.failed_logins += 1
            log.warning("failed login for user %r from %s (%d recent failures from there; the next attempt waits "
                        "%.1f s)", username[:64], address, self.throttle.failures(address),
                        self.throttle.delay_after(address))
            raise NotAuthorized(f"bad user name or password for user {username[:64]!r}")
        return Principal(username, self._access(username))

    @staticmethod
    async def _refuse() -> bool:
        return False

    async def _verify(self, username: str, password: str) -> bool:
        if username in self.static:
            return hmac.compare_digest(self.static[username].encode(), password.encode("utf-8", "surrogatepass"))
        if self.store is None:
            return False
        try:
            self.store.reload_if_changed()
        except UserStoreError as exc:
            log.error("keeping the users read before: %s", exc)
        encoded = self.store.password_hash(username)
        if encoded is None:
            # Spend the same time as for a real user, so timing does not tell which names exist.
            encoded = _DUMMY_HASH
        mark = hmac.new(self._key, password.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
        known = self._verified.get(username)
        if known is not None and known[1] == encoded and hmac.compare_digest(known[0], mark):
            return True
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="auth-hash")
        ok = await asyncio.get_running_loop().run_in_executor(self._executor, verify_password, password, encoded)
        if ok and encoded is not _DUMMY_HASH:
            self._verified[username] = (mark, encoded)
            return True
        return False

    def _access(self, username: str):
        if username in self.static or self.store is None:
            return FULL_ACCESS
        raw = self.store.permissions(username)
        cached = self._compiled.get(username)
        if cached is not None and cached[0] == raw:
            return cached[1]
        compiled = self.compile_permissions(username, raw)
        self._compiled[username] = (raw, compiled)
        return compiled


# A valid hash of a random password, checked for unknown users (see `_verify`).
_DUMMY_HASH = "scrypt$16384$8$1$" + "A" * 22 + "$" + "A" * 43
