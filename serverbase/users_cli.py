"""The `users` command of both brokers: add, delete, list users, set passwords and permissions.

    minibroker users add alice                 # asks for the password twice (not echoed)
    echo "$PW" | minibroker users add alice --password-stdin
    minibroker users passwd alice
    minibroker users set-permissions alice '^alice-' '.*' '.*'
    minibroker users list
    minibroker users delete alice

It edits `<data dir>/users.json` (`serverbase/users.py`) directly, so it runs on the machine
and as the account that owns the data directory; a running server picks the change up at the
next login. A password is read from the terminal or from stdin, never from the command line,
where every local user could see it in `ps`.

What a permission is belongs to each broker; it hands `run_users` a `PermissionsSyntax` that
adds the `set-permissions` arguments, turns them into what is stored, and shows them.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from dataclasses import dataclass
from typing import Callable

from .users import UserStore, UserStoreError


@dataclass
class PermissionsSyntax:
    add_arguments: Callable        # (argparse parser) -> None
    from_args: Callable            # (parsed args) -> what is stored; raises ValueError
    describe: Callable             # (stored value or None) -> str


def _read_password(args) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
    else:
        if not sys.stdin.isatty():
            raise UserStoreError("no terminal to ask for the password on: use --password-stdin")
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            raise UserStoreError("the two passwords differ; nothing was changed")
    if not password:
        raise UserStoreError("an empty password is not allowed")
    return password


def build_parser(prog: str, default_data_dir: str, syntax: PermissionsSyntax) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"{prog} users", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=default_data_dir,
                        help=f"the server's data directory (default {default_data_dir})")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("add", "add a user (with no permissions until set-permissions)"),
                            ("passwd", "set a user's password")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("name")
        p.add_argument("--password-stdin", action="store_true",
                       help="read the password from the first line of stdin instead of asking")
    sub.add_parser("delete", help="delete a user").add_argument("name")
    sub.add_parser("list", help="list users and their permissions")
    p = sub.add_parser("set-permissions", help="replace a user's permissions")
    p.add_argument("name")
    syntax.add_arguments(p)
    return parser


def run_users(argv, *, prog: str, default_data_dir: str, syntax: PermissionsSyntax) -> int:
    args = build_parser(prog, default_data_dir, syntax).parse_args(argv)
    store = UserStore(args.data_dir)
    try:
        if args.command == "list":
            store.load()
            if not store.names():
                print(f"no users in {store.path}")
            for name in store.names():
                print(f"{name}\t{syntax.describe(store.permissions(name))}")
            return 0
        if args.command in ("add", "passwd"):
            password = _read_password(args)
            with store.editing():
                if args.command == "add":
                    store.add(args.name, password)
                else:
                    store.set_password(args.name, password)
            what = "added (no permissions yet: see set-permissions)" if args.command == "add" else "password changed"
            print(f"user {args.name} {what}")
        elif args.command == "delete":
            with store.editing():
                store.delete(args.name)
            print(f"user {args.name} deleted")
        elif args.command == "set-permissions":
            try:
                permissions = syntax.from_args(args)
            except ValueError as exc:
                raise UserStoreError(str(exc)) from None
            with store.editing():
                store.set_permissions(args.name, permissions)
            print(f"user {args.name}: {syntax.describe(permissions)}")
    except UserStoreError as exc:
        print(f"{prog} users: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{prog} users: cannot use {store.path}: {exc}", file=sys.stderr)
        return 1
    return 0
