"""Logging in on the msgpack front door: auth off and on, the user store, wrong passwords and
the per-address backoff, requests pipelined behind a hello, the `users` command."""

import logging
import os
import socket
import subprocess
import sys
import time

import msgpack
import pytest

from clients import broker as pika
from clients.protocol.errors import BrokerError, ErrorCode
from clients.rpc import RpcConnection
from harness import ROOT, ServerProcess
from serverbase.users import UserStore

ALL = {"configure": ".*", "write": ".*", "read": ".*"}


def add_users(data_dir, **users):
    """users: name=(password, permissions)."""
    with UserStore(str(data_dir)).editing() as store:
        for name, (password, permissions) in users.items():
            store.add(name, password, permissions)


def login(server, user=None, password=None):
    credentials = None if user is None else {"username": user, "password": password}
    return RpcConnection(server.host, server.port, credentials=credentials, connect_timeout=15)


def refused(server, user, password) -> BrokerError:
    with pytest.raises(BrokerError) as info:
        login(server, user, password)
    return info.value


def test_auth_off_lets_anyone_in(start_minibroker):
    server = start_minibroker()
    with login(server) as conn:
        conn.call("queue_declare", {"queue": "anything"})
    with login(server, "whoever", "whatever") as conn:
        conn.call("queue_delete", {"queue": "anything"})


def test_users_of_the_store_log_in_and_others_do_not(start_minibroker, tmp_path):
    data = tmp_path / "mb"
    add_users(data, alice=("alice-pw", ALL))
    server = start_minibroker(data, auth=True)
    with login(server, "alice", "alice-pw") as conn:
        assert conn.call("ping", {})["pong"] is True
    assert refused(server, None, None).code == ErrorCode.NOT_AUTHORIZED
    assert refused(server, "alice", "wrong").code == ErrorCode.NOT_AUTHORIZED
    error = refused(server, "mallory", "alice-pw")
    assert error.code == ErrorCode.NOT_AUTHORIZED and "mallory" in error.message


def test_pika_style_client_gets_probable_authentication_error(start_minibroker, tmp_path):
    add_users(tmp_path / "mb", alice=("pw", ALL))
    server = start_minibroker(tmp_path / "mb", auth=True)
    good = pika.ConnectionParameters(server.host, server.port, credentials=pika.PlainCredentials("alice", "pw"))
    with pika.BlockingConnection(good) as conn:
        conn.channel().queue_declare("q")
    bad = pika.ConnectionParameters(server.host, server.port, credentials=pika.PlainCredentials("alice", "nope"))
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(bad)


def test_a_user_added_while_the_server_runs_can_log_in_at_once(start_minibroker, tmp_path):
    data = tmp_path / "mb"
    add_users(data, alice=("pw", ALL))
    server = start_minibroker(data, auth=True)
    assert refused(server, "bob", "bob-pw").code == ErrorCode.NOT_AUTHORIZED
    add_users(data, bob=("bob-pw", ALL))
    # The failure above slows this address's next check by 0.1 s; the login still succeeds.
    with login(server, "bob", "bob-pw") as conn:
        conn.call("ping", {})


def test_wrong_passwords_are_slowed_down_and_logged_without_the_password(start_minibroker, tmp_path, caplog):
    add_users(tmp_path / "mb", alice=("right", ALL))
    server = start_minibroker(tmp_path / "mb", auth=True)
    caplog.set_level(logging.WARNING, logger="serverbase.auth")
    took = []
    for i in range(5):
        started = time.monotonic()
        refused(server, "alice", f"guess-{i}")
        took.append(time.monotonic() - started)
    # Each failure doubles the wait before the next check from this address: 0.1, 0.2, 0.4, 0.8 s.
    assert took[3] >= 0.35 and took[4] >= 0.75, took
    assert sum(took) >= 1.4, took
    text = caplog.text
    assert "failed login for user 'alice' from 127.0.0.1" in text
    assert "guess-" not in text
    # The right password still works, after the wait.
    with login(server, "alice", "right") as conn:
        conn.call("ping", {})


def test_parallel_guesses_from_one_address_are_not_parallel(start_minibroker, tmp_path):
    """Opening many connections at once does not buy guesses: attempts from one address queue."""
    add_users(tmp_path / "mb", alice=("right", ALL))
    server = start_minibroker(tmp_path / "mb", auth=True)
    refused(server, "alice", "first")          # the address now has one failure: waits begin
    socks = []
    hello = msgpack.packb([0, 1, "hello", {"protocol": 1, "credentials": {"username": "alice", "password": "x"}}])
    started = time.monotonic()
    for _ in range(4):
        s = socket.create_connection((server.host, server.port))
        s.sendall(len(hello).to_bytes(4, "big") + hello)
        socks.append(s)
    for s in socks:
        s.settimeout(15)
        assert b"NOT_AUTHORIZED" in s.recv(4096)
        s.close()
    # Serialized: 0.1 + 0.2 + 0.4 + 0.8 s of waits, where parallel checks would take ~0.1 s.
    assert time.monotonic() - started >= 1.4


def test_requests_pipelined_behind_hello_are_answered_in_order(start_minibroker, tmp_path):
    add_users(tmp_path / "mb", alice=("pw", ALL))
    server = start_minibroker(tmp_path / "mb", auth=True)
    frames = [[0, 1, "hello", {"protocol": 1, "credentials": {"username": "alice", "password": "pw"}}],
              [0, 2, "ping", {"echo": "a"}], [0, 3, "queue_declare", {"queue": "q1"}], [0, 4, "ping", {"echo": "b"}]]
    data = b"".join(len(b).to_bytes(4, "big") + b for b in map(msgpack.packb, frames))
    with socket.create_connection((server.host, server.port)) as s:
        s.sendall(data)
        s.settimeout(15)
        unpacker = msgpack.Unpacker()
        replies = []
        buf = b""
        while len(replies) < 4:
            buf += s.recv(65536)
            while len(buf) >= 4 and len(buf) >= 4 + int.from_bytes(buf[:4], "big"):
                n = int.from_bytes(buf[:4], "big")
                replies.append(msgpack.unpackb(buf[4:4 + n]))
                buf = buf[4 + n:]
    del unpacker
    assert [r[:2] for r in replies] == [[1, 1], [1, 2], [1, 3], [1, 4]]
    assert replies[1][2]["echo"] == "a" and replies[3][2]["echo"] == "b"


def test_overlong_credentials_are_refused_not_hashed(start_minibroker, tmp_path):
    add_users(tmp_path / "mb", alice=("pw", ALL))
    server = start_minibroker(tmp_path / "mb", auth=True)
    assert refused(server, "alice", "x" * 2000).code == ErrorCode.NOT_AUTHORIZED       # over 1024 bytes: no hash
    assert refused(server, "alice", "x" * 100_000).code == ErrorCode.BAD_REQUEST      # over the hello's schema


def test_command_line_user_may_do_everything(start_minibroker):
    server = start_minibroker(credentials={"ops": "s3cret"})
    with login(server, "ops", "s3cret") as conn:
        conn.call("exchange_declare", {"exchange": "e", "type": "fanout"})
        conn.call("queue_declare", {"queue": "q"})
        conn.call("queue_bind", {"queue": "q", "exchange": "e"})
    assert refused(server, "ops", "wrong").code == ErrorCode.NOT_AUTHORIZED


# ---- the `users` command and the server's start-up checks --------------------------------------------
def users_cmd(data_dir, *argv, stdin=None):
    return subprocess.run([sys.executable, "-m", "minibroker", "users", "--data-dir", str(data_dir), *argv],
                          input=stdin, capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env={**os.environ, "PYTHONPATH": ROOT})


def test_users_command_manages_the_store(tmp_path):
    data = tmp_path / "mb"
    assert users_cmd(data, "add", "alice", "--password-stdin", stdin="first-pw\n").returncode == 0
    again = users_cmd(data, "add", "alice", "--password-stdin", stdin="x\n")
    assert again.returncode == 1 and "already exists" in again.stderr
    # Without a terminal and without --password-stdin it refuses rather than reading argv.
    no_tty = users_cmd(data, "passwd", "alice", stdin="")
    assert no_tty.returncode == 1 and "--password-stdin" in no_tty.stderr
    assert users_cmd(data, "set-permissions", "alice", "^alice-", ".*", "").returncode == 0
    bad = users_cmd(data, "set-permissions", "alice", "(", ".*", ".*")
    assert bad.returncode == 1 and "not a regular expression" in bad.stderr
    listed = users_cmd(data, "list")
    assert "alice" in listed.stdout and "configure='^alice-'" in listed.stdout
    raw = (data / "users.json").read_text()
    assert "first-pw" not in raw and "scrypt$" in raw
    assert oct(os.stat(data / "users.json").st_mode & 0o777) == "0o600"
    assert users_cmd(data, "passwd", "alice", "--password-stdin", stdin="second-pw\n").returncode == 0
    store = UserStore(str(data)).load()
    from serverbase.users import verify_password
    assert verify_password("second-pw", store.password_hash("alice"))
    assert not verify_password("first-pw", store.password_hash("alice"))
    assert users_cmd(data, "delete", "alice").returncode == 0
    assert users_cmd(data, "delete", "alice").returncode == 1
    assert "no users" in users_cmd(data, "list").stdout


def test_auth_without_users_or_with_a_damaged_file_does_not_start(tmp_path):
    empty = ServerProcess("minibroker", tmp_path / "empty", ["--auth"])
    with pytest.raises(AssertionError):
        empty.start(timeout=20)
    empty.proc.wait(10)
    assert empty.proc.returncode == 1 and "holds no users" in empty.stderr_text()
    damaged_dir = tmp_path / "damaged"
    damaged_dir.mkdir()
    (damaged_dir / "users.json").write_text("{not json")
    damaged = ServerProcess("minibroker", damaged_dir, ["--auth"])
    with pytest.raises(AssertionError):
        damaged.start(timeout=20)
    damaged.proc.wait(10)
    assert damaged.proc.returncode == 1 and "cannot read" in damaged.stderr_text()
