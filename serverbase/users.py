"""The user store: who may log in, with salted slow password hashes, kept in the data directory.

One JSON file, `users.json`, beside the broker's data (mode 0600):

    {"format": 1, "users": {"alice": {"password": "scrypt$16384$8$1$<salt>$<hash>",
                                      "permissions": ...}}}

Passwords are never stored: each is hashed with scrypt (hashlib, memory-hard, ~40 ms on this
machine) and a random 16-byte salt, so a stolen file costs an attacker that much per guess per
user. `permissions` is the broker's own (minibroker: RabbitMQ's configure/write/read regexes;
minilog: Kafka-style ACLs); this module stores it and never looks inside.

The file is written whole to a temporary file, fsynced and renamed over the old one, under an
exclusive lock on `users.json.lock`, so two `users` commands at once cannot lose each other's
change and a crash leaves the old file or the new one. The server reads it at start and again
whenever its modification time changes (checked at each login), so `minibroker users add` takes
effect on the next login without a restart.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets

USERS_FILE = "users.json"
FORMAT = 1

# scrypt's cost: 2**14 * 8 * 128 bytes = 16 MiB of memory and ~40 ms per hash here.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 14, 8, 1
SALT_BYTES = 16
HASH_BYTES = 32
_MAXMEM = 64 << 20

# Bounds on what a client may send: a hash over a 100 MB "password" would cost the server dearly.
MAX_USERNAME = 255
MAX_PASSWORD = 1024
USERNAME_RE = re.compile(r"[A-Za-z0-9_.@+-]{1,255}")


class UserStoreError(Exception):
    """The user file is unreadable, or a change to it is not allowed; the message says which."""


def check_username(name: str) -> str:
    if not isinstance(name, str) or not USERNAME_RE.fullmatch(name):
        raise UserStoreError(f"user name {name!r:.80} must be 1-255 letters, digits or _.@+-")
    return name


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """`scrypt$n$r$p$salt$hash` with a fresh random salt (base64 without padding)."""
    if len(password.encode()) > MAX_PASSWORD:
        raise UserStoreError(f"a password is at most {MAX_PASSWORD} bytes")
    salt = secrets.token_bytes(SALT_BYTES)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=HASH_BYTES, maxmem=_MAXMEM)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    """True if `password` hashes to `encoded`; compares in constant time. Slow on purpose."""
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        n, r, p = int(n), int(r), int(p)
        salt, digest = _unb64(salt), _unb64(digest)
    except (ValueError, AttributeError):
        return False
    if scheme != "scrypt" or not (2 <= n <= 1 << 20 and 1 <= r <= 32 and 1 <= p <= 16):
        return False
    raw = password.encode("utf-8", "surrogatepass")
    if len(raw) > MAX_PASSWORD:
        return False
    try:
        got = hashlib.scrypt(raw, salt=salt, n=n, r=r, p=p, dklen=len(digest), maxmem=_MAXMEM)
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(got, digest)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


class UserStore:
    """The users of one broker: read from and written to `<data_dir>/users.json`."""

    def __init__(self, data_dir: str):
        self.data_dir = data_dir
        self.path = os.path.join(data_dir, USERS_FILE)
        self.users: dict[str, dict] = {}
        self._stamp = None

    # ---- reading -------------------------------------------------------------------------
    def load(self) -> "UserStore":
        """Read the file (a missing file is no users). Raises UserStoreError if it is damaged."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self.users, self._stamp = {}, None
            return self
        try:
            with open(self.path, "rb") as f:
                doc = json.loads(f.read())
        except (OSError, ValueError) as exc:
            raise UserStoreError(f"cannot read {self.path}: {exc}") from None
        self.users = self._validate(doc)
        self._stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        return self

    def reload_if_changed(self) -> bool:
        """Re-read the file if it changed on disk. A damaged new file keeps the old users."""
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp:
            return False
        self.load()
        return True

    def _validate(self, doc) -> dict:
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("users"), dict):
            raise UserStoreError(f"{self.path} is not a user file of format {FORMAT}")
        users = {}
        for name, entry in doc["users"].items():
            if (not isinstance(name, str) or not USERNAME_RE.fullmatch(name) or not isinstance(entry, dict)
                    or not isinstance(entry.get("password"), str)):
                raise UserStoreError(f"{self.path}: the entry for user {name!r:.80} is damaged")
            users[name] = entry
        return users

    def names(self) -> list[str]:
        return sorted(self.users)

    def permissions(self, name: str):
        entry = self.users.get(name)
        return None if entry is None else entry.get("permissions")

    def password_hash(self, name: str) -> str | None:
        entry = self.users.get(name)
        return None if entry is None else entry["password"]

    # ---- changing (the offline `users` command) -----------------------------------------------
    @contextlib.contextmanager
    def editing(self):
        """Lock the file, load it, let the caller change `self.users`, then save it atomically."""
        os.makedirs(self.data_dir, exist_ok=True)
        with open(self.path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.load()
            yield self
            self._save()

    def _save(self) -> None:
        tmp = self.path + ".tmp"
        data = json.dumps({"format": FORMAT, "users": self.users}, indent=1, sort_keys=True).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(self.data_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def add(self, name: str, password: str, permissions=None) -> None:
        check_username(name)
        if name in self.users:
            raise UserStoreError(f"user {name!r} already exists; delete it first or set its password")
        self.users[name] = {"password": hash_password(password), "permissions": permissions}

    def set_password(self, name: str, password: str) -> None:
        self._entry(name)["password"] = hash_password(password)

    def delete(self, name: str) -> None:
        self._entry(name)
        del self.users[name]

    def set_permissions(self, name: str, permissions) -> None:
        self._entry(name)["permissions"] = permissions

    def _entry(self, name: str) -> dict:
        try:
            return self.users[name]
        except KeyError:
            raise UserStoreError(f"no user {name!r}; `users list` shows who exists") from None
