"""Durable throughput of minibroker: persistent messages, durable queue, confirms and acks.

    python -m bench.minibroker_durable [--count 200000] [--size 256] [--window 1000]
                                       [--prefetch 1000] [--runs 3] [--fsync always]
                                       [--json PATH]

Each run starts a fresh server (`python -m minibroker --fsync POLICY`) on a fresh data dir and
two client processes speaking the raw ops of docs/PROTOCOL.md (clients.rpc.RpcConnection):
a producer publishing `count` messages with publisher confirms and at most `window` of them
unconfirmed, and a consumer with acks (prefetch `prefetch`, one `multiple` ack per batch it
receives). The figure is end to end: messages / (first publish -> last delivery acked).

Beside it, in the same run: the same flow with transient messages on a non-durable queue, and
what the disk here allows: a loop of 4 KiB append + fdatasync in the data dir's file system,
in syncs/s, appending to a growing file and writing into a preallocated one. The server's own fsync count (server_info `store.fsyncs`) gives messages per fsync:
the group commit at work. Medians of `runs`.
"""

import argparse
import json
import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUEUE = "bench-durable"


def start_server(data_dir: str, fsync: str):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "minibroker", "--port", "0", "--amqp-port", "off", "--data-dir", data_dir,
                             "--fsync", fsync, "--log-level", "WARNING"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT, env=env)
    for raw in proc.stdout:
        m = re.search(rb"listening on ([\d.]+):(\d+)", raw)
        if m:
            return proc, int(m.group(2))
    raise RuntimeError("minibroker did not start")


def producer(port, count, size, window, persistent, durable, ready, go, result):
    from clients.rpc import RpcConnection
    c = RpcConnection("127.0.0.1", port, client_name="bench-producer")
    c.call("channel_open", {"ch": 1})
    c.call("queue_declare", {"queue": QUEUE, "durable": durable})
    c.call("confirm_select", {"ch": 1})
    props = {"delivery_mode": 2} if persistent else None
    body = b"x" * size
    args = {"ch": 1, "exchange": "", "routing_key": QUEUE, "body": body, "properties": props}
    ready.set()
    go.wait()
    confirmed = 0
    sent = 0
    t0 = time.perf_counter()
    while confirmed < count:
        n = min(count - sent, window - (sent - confirmed))
        for _ in range(n):
            c.send("publish", args, want_reply=False)
        sent += n
        c.flush()
        c.read(5.0)
        while c.pushes:
            push = c.pushes.popleft()
            if push.event == "confirm":
                _ch, ack, seq, _multiple = push.body
                if not ack:
                    raise RuntimeError(f"publish {seq} was nacked")
                confirmed = max(confirmed, seq)
        c.raise_async_error()
    result.put(("producer", time.perf_counter() - t0, t0))
    c.close()


def consumer(port, count, prefetch, durable, ready, result):
    from clients.rpc import RpcConnection
    c = RpcConnection("127.0.0.1", port, client_name="bench-consumer")
    c.call("channel_open", {"ch": 1})
    c.call("queue_declare", {"queue": QUEUE, "durable": durable})
    c.call("basic_qos", {"ch": 1, "prefetch_count": prefetch})
    c.call("consume", {"ch": 1, "queue": QUEUE, "no_ack": False})
    ready.set()
    got = 0
    while got < count:
        c.read(5.0)
        last = None
        while c.pushes:
            push = c.pushes.popleft()
            if push.event == "deliver":
                entries = push.body[1]
                got += len(entries)
                last = entries[-1][1]
        if last is not None:
            c.send("ack", {"ch": 1, "delivery_tag": last, "multiple": True}, want_reply=False)
            c.flush()
    c.call("ping")   # the last ack has been processed
    result.put(("consumer", time.perf_counter(), None))
    c.close()


def run_flow(count, size, window, prefetch, persistent, durable, fsync) -> dict:
    data_dir = tempfile.mkdtemp(prefix="bench-durable-")
    proc, port = start_server(data_dir, fsync)
    try:
        ctx = multiprocessing.get_context("fork")
        result = ctx.Queue()
        p_ready, c_ready, go = ctx.Event(), ctx.Event(), ctx.Event()
        cons = ctx.Process(target=consumer, args=(port, count, prefetch, durable, c_ready, result))
        cons.start()
        c_ready.wait(30)
        prod = ctx.Process(target=producer, args=(port, count, size, window, persistent, durable, p_ready, go, result))
        prod.start()
        p_ready.wait(30)
        go.set()
        out = {}
        for _ in range(2):
            kind, a, b = result.get(timeout=600)
            out[kind] = (a, b)
        prod.join()
        cons.join()
        produce_s, t0 = out["producer"]
        end_to_end_s = out["consumer"][0] - t0
        from clients.rpc import RpcConnection
        c = RpcConnection("127.0.0.1", port)
        info = c.call("server_info")
        c.close()
        store = info.get("store") or {}
        fsyncs = store.get("fsyncs", 0)
        return {"msgs_per_s": round(count / end_to_end_s), "produce_msgs_per_s": round(count / produce_s),
                "seconds": round(end_to_end_s, 3), "server_fsyncs": fsyncs,
                "fsyncs_per_s": round(fsyncs / end_to_end_s), "msgs_per_fsync": round(count / fsyncs, 1) if fsyncs else None,
                "server_fsync_ms_avg": store.get("fsync_ms_avg")}
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(data_dir, ignore_errors=True)


def disk_fsyncs_per_s(directory: str, seconds: float = 1.0, preallocated: bool = False) -> int:
    """What the disk allows: 4 KiB append + fdatasync in a loop.

    With `preallocated`, into a file whose blocks were allocated and zero-filled first, as the
    journal's segments are (`MessageJournal._preallocate`, `_zero_ahead`): the fdatasync then
    has no file size or block allocation to commit.
    """
    path = os.path.join(directory, "fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | (0 if preallocated else os.O_APPEND), 0o644)
    block = b"\0" * 4096
    if preallocated:
        size = 64 << 20
        os.posix_fallocate(fd, 0, size)
        zeros = bytes(1 << 20)
        for off in range(0, size, len(zeros)):
            os.pwrite(fd, zeros, off)
        os.fdatasync(fd)
    n = 0
    t0 = time.perf_counter()
    try:
        while time.perf_counter() - t0 < seconds:
            if preallocated:
                os.pwrite(fd, block, (n * 4096) % (64 << 20))
            else:
                os.write(fd, block)
            os.fdatasync(fd)
            n += 1
    finally:
        os.close(fd)
        os.unlink(path)
    return round(n / (time.perf_counter() - t0))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.minibroker_durable", description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--prefetch", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--fsync", default="always", choices=["always", "interval", "never"])
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)

    runs = {"durable": [], "transient": [], "disk_fsyncs_per_s": [], "disk_preallocated_fsyncs_per_s": []}
    for i in range(args.runs):
        probe_dir = tempfile.mkdtemp(prefix="bench-fsync-")
        runs["disk_fsyncs_per_s"].append(disk_fsyncs_per_s(probe_dir))
        runs["disk_preallocated_fsyncs_per_s"].append(disk_fsyncs_per_s(probe_dir, preallocated=True))
        shutil.rmtree(probe_dir, ignore_errors=True)
        runs["durable"].append(run_flow(args.count, args.size, args.window, args.prefetch, True, True, args.fsync))
        runs["transient"].append(run_flow(args.count, args.size, args.window, args.prefetch, False, False, args.fsync))
        d, t = runs["durable"][-1], runs["transient"][-1]
        print(f"run {i + 1}: durable {d['msgs_per_s']:,} msg/s ({d['server_fsyncs']} fsyncs, "
              f"{d['msgs_per_fsync']} msgs/fsync, {d['server_fsync_ms_avg']} ms each), transient {t['msgs_per_s']:,} msg/s, "
              f"disk {runs['disk_fsyncs_per_s'][-1]:,} fsyncs/s appending, "
              f"{runs['disk_preallocated_fsyncs_per_s'][-1]:,} preallocated", flush=True)

    def med(rows, key):
        values = [r[key] for r in rows if r[key] is not None]
        return statistics.median(values) if values else None

    summary = {
        "workload": f"1 producer (confirms, window {args.window}) -> durable queue -> 1 consumer (acks, prefetch "
                    f"{args.prefetch}), {args.size} B persistent bodies, fsync {args.fsync}, {args.count} msgs/run",
        "runs": args.runs,
        "durable_msgs_per_s": med(runs["durable"], "msgs_per_s"),
        "durable_produce_msgs_per_s": med(runs["durable"], "produce_msgs_per_s"),
        "durable_server_fsyncs_per_s": med(runs["durable"], "fsyncs_per_s"),
        "durable_msgs_per_fsync": med(runs["durable"], "msgs_per_fsync"),
        "durable_server_fsync_ms_avg": med(runs["durable"], "server_fsync_ms_avg"),
        "transient_msgs_per_s": med(runs["transient"], "msgs_per_s"),
        "disk_fsyncs_per_s": statistics.median(runs["disk_fsyncs_per_s"]),
        "disk_preallocated_fsyncs_per_s": statistics.median(runs["disk_preallocated_fsyncs_per_s"]),
        "raw": runs,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "raw"}, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
