"""Run both servers at once: the README's `make run` (and `make stop`).

Each broker runs in its own process (they would otherwise share one core's worth of Python),
with its output passed through. SIGINT or SIGTERM is forwarded to both; when either exits,
the other is stopped too, and the launcher exits with the first non-zero code.

Any server flag passes through (`route_flags`): `--minibroker-X` or `--minilog-X` goes to that
server only, as `--X` (so `--minilog-port 0` is minilog's `--port 0`); any other flag goes to
each server that has it (`--fsync never` to minibroker, `--log-segment-bytes` to minilog,
`--log-level` to both), and a flag neither server has is refused with one line.

While it runs, the launcher's pid is in `<data dir>/launcher.pid`; `python -m
serverbase.launcher stop` (`make stop`) sends it SIGTERM and waits for both servers to finish.
"""

import argparse
import os
import signal
import subprocess
import sys
import time

from .cli import port_number

SERVERS = ("minibroker", "minilog")
PID_FILE = "launcher.pid"
STOP_TIMEOUT_S = 30.0


def _server_parsers() -> dict:
    """Each server's own argument parser, to learn which flags it has."""
    from minibroker.server import DEFAULT_DATA_DIR as MB_DIR, DEFAULT_PORT as MB_PORT, MinibrokerServer
    from minilog.server import DEFAULT_DATA_DIR as ML_DIR, DEFAULT_PORT as ML_PORT, MinilogServer

    from .cli import build_parser

    return {"minibroker": build_parser(MinibrokerServer, MB_PORT, MB_DIR),
            "minilog": build_parser(MinilogServer, ML_PORT, ML_DIR)}


def _takes_value(parser, flag: str) -> bool:
    action = parser._option_string_actions.get(flag)
    return action is not None and action.nargs != 0


def route_flags(extra: list[str], parsers: dict) -> dict[str, list[str]]:
    """Split flags the launcher does not know between the servers; SystemExit on an unknown one."""
    routed = {name: [] for name in parsers}
    i = 0
    while i < len(extra):
        token = extra[i]
        if not token.startswith("--"):
            raise SystemExit(f"make run: unexpected argument {token!r} (flags start with --)")
        flag, eq, value = token.partition("=")
        if flag == "--port":
            raise SystemExit("make run: two servers cannot share --port; give --minibroker-port and --minilog-port")
        targets = None
        for name in parsers:
            if flag.startswith(f"--{name}-"):
                targets, flag = [name], "--" + flag[len(name) + 3:]
        if targets is None:
            targets = [name for name, p in parsers.items() if flag in p._option_string_actions]
        targets = [name for name in targets if flag in parsers[name]._option_string_actions]
        if not targets:
            raise SystemExit(f"make run: unknown flag {token.partition('=')[0]}: neither "
                             f"{' nor '.join(parsers)} has it (see minibroker --help, minilog --help)")
        args = [flag + eq + value] if eq else [flag]
        i += 1
        if not eq and any(_takes_value(parsers[name], flag) for name in targets):
            if i >= len(extra):
                raise SystemExit(f"make run: {token} needs a value")
            args.append(extra[i])
            i += 1
        for name in targets:
            routed[name].extend(args)
    return routed


def route_server_flags(parser, tokens: list[str]) -> dict[str, list[str]]:
    """`route_flags` against the two servers' real parsers (`parser`, the launcher's, is unused)."""
    return route_flags(tokens, _server_parsers())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_launcher(pid: int) -> bool:
    """A reused pid must not be signalled: check the process is a launcher where /proc says."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"serverbase.launcher" in f.read()
    except OSError:
        return _pid_alive(pid)


def stop(data_dir: str) -> int:
    path = os.path.join(data_dir, PID_FILE)
    try:
        pid = int(open(path).read().strip())
    except FileNotFoundError:
        print(f"make stop: nothing to stop (no {path}; was it started with this --data-dir?)", file=sys.stderr)
        return 1
    except ValueError:
        print(f"make stop: {path} does not hold a pid; remove it", file=sys.stderr)
        return 1
    if not _pid_alive(pid) or not _is_launcher(pid):
        print(f"make stop: the servers are not running (stale {path} removed)", file=sys.stderr)
        os.unlink(path)
        return 1
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _pid_alive(pid) and _is_launcher(pid):
        if time.monotonic() > deadline:
            print(f"make stop: the launcher (pid {pid}) did not stop within {STOP_TIMEOUT_S:.0f} s", file=sys.stderr)
            return 1
        time.sleep(0.05)
    print(f"stopped the servers of {data_dir}")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m serverbase.launcher", description="run minibroker and minilog together",
        epilog="Any other flag of minibroker or minilog passes through; --minibroker-FLAG or --minilog-FLAG "
               "gives it to one server only. 'python -m serverbase.launcher stop' stops running servers.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--data-dir", default="./data", help="parent folder of both data dirs (default ./data)")
    parser.add_argument("--minibroker-port", type=port_number, default=None, help="minibroker's port (default 5673)")
    parser.add_argument("--minilog-port", type=port_number, default=None, help="minilog's port (default 9093)")
    if argv[:1] == ["stop"]:
        args, _server_flags = parser.parse_known_args(argv[1:])   # the same RUN_ARGS as `make run` will do
        return stop(args.data_dir)
    args, extra = parser.parse_known_args(argv)
    routed = route_server_flags(parser, extra)

    pid_path = os.path.join(args.data_dir, PID_FILE)
    os.makedirs(args.data_dir, exist_ok=True)
    with open(pid_path, "w") as f:
        f.write(f"{os.getpid()}\n")

    children = []
    for name, port in (("minibroker", args.minibroker_port), ("minilog", args.minilog_port)):
        cmd = [sys.executable, "-m", name, "--host", args.host, "--data-dir", os.path.join(args.data_dir, name)]
        if port is not None:
            cmd += ["--port", str(port)]
        children.append(subprocess.Popen(cmd + routed[name]))

    stopping = False

    def forward(signum, _frame):
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.05)
        # A child that exits on its own takes the other down with it. When we are already stopping,
        # a second signal could reach a child after its loop has removed its handlers and kill it
        # mid-teardown, so the children are only waited for.
        if not stopping:
            forward(signal.SIGTERM, None)
        codes = [child.wait() for child in children]
    finally:
        try:
            os.unlink(pid_path)
        except FileNotFoundError:
            pass
    return next((code for code in codes if code), 0)


if __name__ == "__main__":
    sys.exit(main())
