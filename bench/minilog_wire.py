"""The minilog server alone over loopback: produce and replay throughput with pre-built batches.

    python -m bench.minilog_wire [--records 2000000] [--value-size 100] [--batch-records 1000]
                                 [--window 32] [--fetch-batches 8] [--acks 1] [--runs 3] [--no-sendfile]
                                 [--json PATH] [--profile [PATH]]

The client side does as little as it can, so the figures are the server's: every batch is
built once before the clock starts, produce requests (acks=1, one partition) are pipelined
`--window` deep through `clients.rpc.RpcConnection`, and the replay pipelines fetches at the
base offsets the produce replies gave, `--fetch-batches` batches per fetch, reading only the
frame (no record decoding). A consumer that decodes records is measured in the clients'
benchmarks, not here.

By default the server runs as a subprocess (`python -m minilog`), so it has a core of its own.
`--profile` instead runs it in this process on its own thread under cProfile (the client
shares the GIL with it then, so the figures drop) and prints where the server's time goes.
Prints records/s and MB/s, medians of `--runs` runs, each on a fresh data directory.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from clients.record_batch import build_batch  # noqa: E402
from clients.rpc import RpcConnection  # noqa: E402
from harness import ServerProcess, ServerThread  # noqa: E402

TOPIC = "bench"


def build_batches(records: int, value_size: int, batch_records: int) -> list[bytes]:
    value = b"x" * value_size
    one = build_batch([(None, value, None, None)] * batch_records)
    return [one] * (records // batch_records)


def produce(conn: RpcConnection, batches: list[bytes], window: int, acks: int = 1) -> tuple[float, list[int]]:
    """Pipelined produce of every batch; returns (seconds, base offsets)."""
    bases: list[int] = []
    in_flight: list[int] = []
    start = time.perf_counter()
    for b in batches:
        in_flight.append(conn.send("produce", {"acks": acks, "data": [[TOPIC, 0, b]]}))
        if len(in_flight) >= window:
            bases.append(conn.wait(in_flight.pop(0))["results"][0][2])
    for rid in in_flight:
        bases.append(conn.wait(rid)["results"][0][2])
    return time.perf_counter() - start, bases


def replay(conn: RpcConnection, bases: list[int], batch_size: int, per_fetch: int, window: int) -> tuple[float, int]:
    """Pipelined fetches of `per_fetch` batches each from offset 0; returns (seconds, bytes)."""
    starts = bases[::per_fetch]
    want = batch_size * per_fetch
    received = 0
    in_flight: list[int] = []
    start = time.perf_counter()
    for offset in starts:
        in_flight.append(conn.send("fetch", {"max_bytes": want, "partitions": [[TOPIC, 0, offset, want]]}))
        if len(in_flight) >= window:
            received += len(conn.wait(in_flight.pop(0))["results"][0][5])
    for rid in in_flight:
        received += len(conn.wait(rid)["results"][0][5])
    return time.perf_counter() - start, received


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU the process has used (from /proc), 0 when unknown."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def one_run(args, batches, profile: cProfile.Profile | None) -> dict:
    data_dir = tempfile.mkdtemp(prefix="minilog-bench-")
    extra = [] if args.sendfile else ["--no-fetch-sendfile"]
    try:
        if profile is None:
            server = ServerProcess("minilog", os.path.join(data_dir, "d"), extra_args=extra).start()
        else:
            from minilog.server import MinilogServer
            server = ServerThread(MinilogServer, os.path.join(data_dir, "d"), fetch_sendfile=args.sendfile).start()
            server.call(profile.enable)
        try:
            conn = RpcConnection(server.host, server.port, client_name="bench")
            conn.call("create_topics", {"topics": [{"name": TOPIC, "num_partitions": 1}]})
            pid = server.proc.pid if profile is None else None
            cpu0 = cpu_seconds(pid)
            p_seconds, bases = produce(conn, batches, args.window, args.acks)
            cpu1 = cpu_seconds(pid)
            records = len(batches) * args.batch_records
            assert bases[-1] == records - args.batch_records, "offsets are not dense"
            f_seconds, received = replay(conn, bases, len(batches[0]), args.fetch_batches, args.window)
            cpu2 = cpu_seconds(pid)
            assert received == len(batches[0]) * len(batches), f"replay got {received} bytes"
            conn.close()
        finally:
            if profile is not None:
                server.call(profile.disable)
            server.stop()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    mb = len(batches[0]) * len(batches) / 1e6
    result = {"produce_records_per_s": records / p_seconds, "produce_mb_per_s": mb / p_seconds,
              "fetch_records_per_s": records / f_seconds, "fetch_mb_per_s": mb / f_seconds}
    if profile is None:
        # What one server core could sustain: records per second of server CPU (less noisy on a shared machine).
        result["produce_records_per_server_cpu_s"] = records / max(cpu1 - cpu0, 1e-3)
        result["fetch_records_per_server_cpu_s"] = records / max(cpu2 - cpu1, 1e-3)
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=2_000_000)
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--batch-records", type=int, default=1000)
    parser.add_argument("--window", type=int, default=32, help="requests in flight")
    parser.add_argument("--fetch-batches", type=int, default=8, help="batches per fetch in the replay")
    parser.add_argument("--acks", type=int, default=1, choices=[0, 1, -1],
                        help="produce acks (0 is sent with a reply id, so it behaves as 1 here)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-sendfile", dest="sendfile", action="store_false", default=True)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--profile", nargs="?", const="-", metavar="PATH",
                        help="run the server in-process under cProfile; print (or save to PATH) its top functions")
    args = parser.parse_args(argv)
    batches = build_batches(args.records, args.value_size, args.batch_records)
    profile = cProfile.Profile() if args.profile else None
    runs = [one_run(args, batches, profile) for _ in range(args.runs)]
    result = {"benchmark": "minilog_wire", "records": len(batches) * args.batch_records,
              "value_size": args.value_size, "batch_records": args.batch_records, "window": args.window, "acks": args.acks,
              "sendfile": args.sendfile, "server": "in-process, profiled" if profile else "subprocess",
              "runs": runs}
    for key in runs[0]:
        result[key + "_median"] = statistics.median(r[key] for r in runs)
    print(f"minilog server over loopback, {result['records']:,} records of {args.value_size} B, "
          f"{args.batch_records} per batch, window {args.window}, sendfile {'on' if args.sendfile else 'off'}, "
          f"{result['server']}; medians of {args.runs} runs")
    print(f"  produce acks={args.acks}: {result['produce_records_per_s_median']:>12,.0f} records/s "
          f"{result['produce_mb_per_s_median']:8,.1f} MB/s")
    print(f"  replay fetch:   {result['fetch_records_per_s_median']:>12,.0f} records/s "
          f"{result['fetch_mb_per_s_median']:8,.1f} MB/s")
    if profile is None:
        print(f"  server CPU: produce {result['produce_records_per_server_cpu_s_median']:,.0f} records per "
              f"CPU-second, replay {result['fetch_records_per_server_cpu_s_median']:,.0f}")
    if profile is not None:
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(25)
        if args.profile == "-":
            print(out.getvalue())
        else:
            profile.dump_stats(args.profile)
            print(f"profile saved to {args.profile}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
