"""Creating a wide topic while another client talks to the server: create time and the other's stall.

    python -m bench.minilog_create [--partitions 5000] [--topics 1] [--runs 3] [--baseline DIR]

Each run starts a fresh `python -m minilog` (a subprocess, on a new data directory), connects
two clients, and has the first create `--topics` topics of `--partitions` partitions each in one
`create_topics` request while the second sends `ping` after `ping`, one at a time. It prints the
create's time, the time per partition, and the longest a ping waited while the create ran (the
stall any other client of the server would have seen), with the number of pings answered
meanwhile. Figures are medians of `--runs` runs.

`--baseline DIR` runs the server of another checkout (main, say) too, run for run interleaved
with this one, so both see the same machine load. Each process holds three descriptors per
partition (segment, offset index, time index): `ulimit -n` bounds `--partitions`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from brokertest.servers import read_listening_ports  # noqa: E402
from clients.rpc import RpcConnection  # noqa: E402


def one_run(source: str, partitions: int, topics: int) -> dict:
    data_dir = tempfile.mkdtemp(prefix="bench-create-")
    env = dict(os.environ, PYTHONPATH=source)
    proc = subprocess.Popen([sys.executable, "-m", "minilog", "--port", "0", "--kafka-port", "0",
                             "--data-dir", data_dir], cwd=source, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        port = read_listening_ports(proc, 30, ["msgpack", "kafka"])["msgpack"]
        admin = RpcConnection("127.0.0.1", port, client_name="bench-admin")
        other = RpcConnection("127.0.0.1", port, client_name="bench-other")
        creating = threading.Event()
        done = threading.Event()
        waits: list[float] = []

        def pinger():
            creating.wait()
            while not done.is_set():
                sent = time.perf_counter()
                other.call("ping", timeout=600)
                waits.append(time.perf_counter() - sent)

        thread = threading.Thread(target=pinger)
        thread.start()
        specs = [{"name": f"wide-{i}", "num_partitions": partitions} for i in range(topics)]
        creating.set()
        started = time.perf_counter()
        result = admin.call("create_topics", {"topics": specs}, timeout=600)
        seconds = time.perf_counter() - started
        done.set()
        thread.join()
        failed = {k: v for k, v in result["results"].items() if v is not None}
        if failed:
            raise SystemExit(f"create failed: {failed}")
        admin.close()
        other.close()
        return {"seconds": seconds, "max_stall": max(waits, default=seconds), "pings": len(waits)}
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(data_dir, ignore_errors=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.minilog_create", description=__doc__.split("\n")[0])
    parser.add_argument("--partitions", type=int, default=5000)
    parser.add_argument("--topics", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", metavar="DIR", help="another checkout whose server runs interleaved")
    args = parser.parse_args(argv)
    sources = {"this tree": ROOT}
    if args.baseline:
        sources["baseline"] = os.path.abspath(args.baseline)
    runs: dict[str, list[dict]] = {name: [] for name in sources}
    for i in range(args.runs):
        for name, source in sources.items():
            r = one_run(source, args.partitions, args.topics)
            runs[name].append(r)
            print(f"run {i + 1} {name}: create {r['seconds']:.2f} s, longest ping wait {r['max_stall'] * 1000:.0f} ms, "
                  f"{r['pings']} pings answered meanwhile", flush=True)
    total = args.partitions * args.topics
    print(f"\n{args.topics} topic(s) x {args.partitions} partitions, medians of {args.runs}; load {os.getloadavg()}")
    for name, rs in runs.items():
        seconds = statistics.median(r["seconds"] for r in rs)
        stall = statistics.median(r["max_stall"] for r in rs)
        pings = statistics.median(r["pings"] for r in rs)
        print(f"{name:>10}: create {seconds:.2f} s ({seconds / total * 1000:.2f} ms/partition), "
              f"longest ping wait {stall * 1000:.0f} ms, {pings:.0f} pings answered during the create")


if __name__ == "__main__":
    main()
