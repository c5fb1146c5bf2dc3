"""Run both servers at once: the README's `make run`.

Each broker runs in its own process (they would otherwise share one core's worth of Python),
with its output passed through. SIGINT or SIGTERM is forwarded to both; when either exits,
the other is stopped too, and the launcher exits with the first non-zero code.
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
    args = parser.parse_args(argv)

    children = []
    for name, port in (("minibroker", args.minibroker_port), ("minilog", args.minilog_port)):
        cmd = [sys.executable, "-m", name, "--host", args.host,
               "--data-dir", os.path.join(args.data_dir, name), "--log-level", args.log_level]
        if port is not None:
            cmd += ["--port", str(port)]
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


if __name__ == "__main__":
    sys.exit(main())
