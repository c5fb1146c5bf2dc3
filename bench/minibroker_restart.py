"""Restart time of minibroker with a large persistent backlog: after a clean stop, after kill -9.

    python -m bench.minibroker_restart [--count 1000000] [--size 1024] [--runs 3]
                                       [--baseline-root DIR] [--data-dir DIR]

One backlog of `count` persistent messages of `size` bytes is published once (confirms,
`publish_batch` of 500) into a durable queue. Then, `runs` times: the server is started, stopped
with SIGTERM (timed: a clean stop writes the journal's snapshot, `MessageJournal.write_snapshot`)
and started again (timed, from exec to its "listening" line); then killed with SIGKILL and started
again (timed: this start replays the journal). With `--baseline-root` (a checkout of other code,
say main's) each run does the same with that code right before, interleaved, on the same data
dir: a snapshot left by one side is stale for the other (a start adds a segment), so neither
ever reads a snapshot it did not write just before. Prints medians; the load average beside.
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUEUE = "restart-backlog"


class Server:
    def __init__(self, root: str, data_dir: str):
        self.root, self.data_dir, self.proc, self.port = root, data_dir, None, None

    def start(self) -> float:
        env = dict(os.environ, PYTHONPATH=self.root)
        began = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "minibroker", "--port", "0", "--amqp-port", "off",
                                      "--data-dir", self.data_dir, "--log-level", "WARNING"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=self.root, env=env)
        for line in self.proc.stdout:
            if b"listening on" in line:
                self.port = int(line.rsplit(b":", 1)[1])
                return time.perf_counter() - began
        raise RuntimeError(f"minibroker ({self.root}) exited with {self.proc.wait()} before listening")

    def stop(self) -> float:
        began = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(300)
        assert code == 0, f"exit code {code}"
        return time.perf_counter() - began

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def queued(self) -> int:
        from clients.rpc import RpcConnection
        c = RpcConnection("127.0.0.1", self.port, client_name="bench-restart")
        try:
            return c.call("queue_declare", {"queue": QUEUE, "passive": True})["message_count"]
        finally:
            c.close()


def publish(port: int, count: int, size: int, batch: int = 500, window: int = 8) -> None:
    from clients.rpc import RpcConnection
    c = RpcConnection("127.0.0.1", port, client_name="bench-restart")
    c.call("channel_open", {"ch": 1})
    c.call("queue_declare", {"queue": QUEUE, "durable": True})
    body = b"x" * size
    props = {"delivery_mode": 2}
    sent = 0
    pending = []
    while sent < count:
        n = min(batch, count - sent)
        pending.append(c.send("publish_batch", {"ch": 1, "messages": [["", QUEUE, body, props, False]] * n}))
        sent += n
        if len(pending) >= window:
            c.wait(pending.pop(0))
    for p in pending:
        c.wait(p)
    c.close()


def measure(server: Server, count: int) -> dict:
    server.start()
    stop_s = server.stop()
    clean_s = server.start()
    assert server.queued() == count
    server.kill()
    killed_s = server.start()
    assert server.queued() == count
    server.stop()
    return {"clean_stop_s": stop_s, "start_after_clean_stop_s": clean_s, "start_after_kill_s": killed_s}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--baseline-root", help="a checkout of the code to compare with (e.g. main's)")
    ap.add_argument("--data-dir", help="where the backlog goes (default: a temp dir, removed at the end)")
    args = ap.parse_args(argv)
    tmp = None if args.data_dir else tempfile.TemporaryDirectory(prefix="minibroker-restart-")
    data_dir = args.data_dir or tmp.name
    sides = [("after", ROOT)] + ([("before", os.path.abspath(args.baseline_root))] if args.baseline_root else [])
    server = Server(ROOT, data_dir)
    server.start()
    began = time.perf_counter()
    publish(server.port, args.count, args.size)
    print(f"published {args.count} x {args.size} B in {time.perf_counter() - began:.1f} s", flush=True)
    server.stop()
    results = {name: [] for name, _ in sides}
    for run in range(args.runs):
        for name, root in (sides if run % 2 == 0 else sides[::-1]):
            r = measure(Server(root, data_dir), args.count)
            results[name].append(r)
            print(f"run {run + 1} {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in r.items())
                  + f" (load {os.getloadavg()[0]:.1f})", flush=True)
    for name, rs in results.items():
        print(f"{name}, medians of {len(rs)}: " + ", ".join(
            f"{k} {statistics.median(r[k] for r in rs):.2f} s" for k in rs[0]))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
