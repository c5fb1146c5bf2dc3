"""Run both servers at once: the README's `make run`.

Each broker runs in its own process (they would otherwise share one core's worth of Python),
with its output passed through. SIGINT or SIGTERM is forwarded to both; when either exits,
the other is stopped too, and the launcher exits with the first non-zero code.

Any flag the launcher does not know itself goes to the server (or both servers) that has it,
so `make run RUN_ARGS="--fsync never --num-partitions 3"` works; a flag neither has is refused.
"""

import argparse
import os
import signal
import subprocess
import sys
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serverbase.launcher",
                                     description="run minibroker and minilog together")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--data-dir", default="./data", help="parent folder of both data dirs (default ./data)")
    parser.add_argument("--minibroker-port", type=int, default=None)
    parser.add_argument("--minilog-port", type=int, default=None)
    parser.add_argument("--log-level", default="INFO")
    parser.epilog = ("any other flag goes to the server that has it (see `minibroker --help`, "
                     "`minilog --help`), e.g. --fsync never, --num-partitions 3")
    args, rest = parser.parse_known_args(argv)
    passed = route_server_flags(parser, rest)

    children = []
    for name, port in (("minibroker", args.minibroker_port), ("minilog", args.minilog_port)):
        cmd = [sys.executable, "-m", name, "--host", args.host,
               "--data-dir", os.path.join(args.data_dir, name), "--log-level", args.log_level]
        if port is not None:
            cmd += ["--port", str(port)]
        cmd += passed[name]
        children.append(subprocess.Popen(cmd))

    stopping = False

    def forward(signum, _frame):
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    while all(child.poll() is None for child in children):
        time.sleep(0.05)
    # A child that exits on its own takes the other down with it. When we are already stopping,
    # a second signal could reach a child after its loop has removed its handlers and kill it
    # mid-teardown, so the children are only waited for.
    if not stopping:
        forward(signal.SIGTERM, None)
    codes = [child.wait() for child in children]
    return next((code for code in codes if code), 0)


def route_server_flags(parser, tokens: list[str]) -> dict[str, list[str]]:
    """Give each of `tokens` (flags the launcher does not know, with their values) to the
    servers whose command line has that flag."""
    from minibroker.server import DEFAULT_DATA_DIR as MB_DIR, DEFAULT_PORT as MB_PORT, MinibrokerServer
    from minilog.server import DEFAULT_DATA_DIR as ML_DIR, DEFAULT_PORT as ML_PORT, MinilogServer
    from .cli import build_parser

    known = {"minibroker": build_parser(MinibrokerServer, MB_PORT, MB_DIR)._option_string_actions,
             "minilog": build_parser(MinilogServer, ML_PORT, ML_DIR)._option_string_actions}
    passed: dict[str, list[str]] = {name: [] for name in known}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        flag, eq, _ = token.partition("=")
        if flag in ("--port", "-h", "--help") or not flag.startswith("--"):
            parser.error(f"{token}: give --minibroker-port / --minilog-port for ports; "
                         "other server flags start with --")
        owners = [name for name, actions in known.items() if flag in actions]
        if not owners:
            parser.error(f"{flag}: neither minibroker nor minilog has this flag")
        given = [token]
        if known[owners[0]][flag].nargs != 0 and not eq:
            if i + 1 >= len(tokens):
                parser.error(f"{flag} needs a value")
            i += 1
            given.append(tokens[i])
        for name in owners:
            passed[name] += given
        i += 1
    return passed


if __name__ == "__main__":
    sys.exit(main())
