"""End-to-end minibroker throughput over the real wire: one producer process, one consumer process.

    python -m bench.minibroker_wire [--messages 300000] [--batch 1000] [--size 256]
                                    [--prefetch 1000] [--runs 3] [--profile-server PATH] [--json PATH]

Starts `python -m minibroker` on a free port, a consumer process (raw `RpcConnection`: basic_qos
prefetch, consume, then after each read one `ack` with multiple=true for the last delivery tag)
and a producer process (`publish_batch` of `--batch` transient messages, id 0, pipelined). The
figure is messages / (consumer's last receipt − producer's first send), medians of `--runs`.
This is the issue's target workload: transient, 1 producer, 1 consumer, 256 B bodies, prefetch
1,000, multiple acks, batched publishes — all three processes on this machine's two cores.
`--profile-server PATH` runs the server under cProfile and prints its top functions.
"""

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from clients.rpc import RpcConnection  # noqa: E402


def consumer_main(port, queue, n, prefetch, ready, results):
    conn = RpcConnection("127.0.0.1", port, client_name="bench-consumer")
    conn.call("queue_declare", {"queue": queue})
    conn.call("basic_qos", {"ch": 1, "prefetch_count": prefetch})
    conn.call("consume", {"ch": 1, "queue": queue})
    ready.set()
    got = 0
    frames = 0
    pushes = conn.pushes
    while got < n:
        conn.read(None)
        last_tag = 0
        while pushes:
            push = pushes.popleft()
            if push.event == "deliver":
                entries = push.body[1]
                got += len(entries)
                frames += 1
                last_tag = entries[-1][1]
        if last_tag:
            conn.send("ack", {"ch": 1, "delivery_tag": last_tag, "multiple": True}, want_reply=False)
            conn.flush()
    results.put(("consumer", time.monotonic(), frames))
    conn.close()


def producer_main(port, queue, n, batch, size, ready, results):
    conn = RpcConnection("127.0.0.1", port, client_name="bench-producer")
    conn.call("queue_declare", {"queue": queue})
    ready.wait(30)
    body = os.urandom(size)
    messages = [["", queue, body, None, False]] * batch
    start = time.monotonic()
    sent = 0
    while sent < n:
        count = min(batch, n - sent)
        conn.send("publish_batch", {"ch": 1, "messages": messages if count == batch else messages[:count]},
                  want_reply=False)
        sent += count
    conn.call("ping", timeout=120)
    results.put(("producer", start, time.monotonic()))
    conn.close()


def start_server(data_dir, profile_path=None):
    from harness import read_listening_port
    cmd = [sys.executable]
    if profile_path:
        cmd += ["-m", "cProfile", "-o", profile_path]
        cmd += ["-m", "minibroker"]
    else:
        cmd += ["-m", "minibroker"]
    cmd += ["--port", "0", "--amqp-port", "off", "--data-dir", data_dir, "--log-level", "WARNING"]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=ROOT, env=env)
    return proc, read_listening_port(proc, 20)


def run_once(port, run, n, batch, size, prefetch) -> dict:
    ctx = mp.get_context("fork")
    ready, results = ctx.Event(), ctx.Queue()
    queue = f"bench-{run}"
    consumer = ctx.Process(target=consumer_main, args=(port, queue, n, prefetch, ready, results))
    producer = ctx.Process(target=producer_main, args=(port, queue, n, batch, size, ready, results))
    consumer.start()
    producer.start()
    got = dict((r[0], r[1:]) for r in (results.get(timeout=300), results.get(timeout=300)))
    consumer.join()
    producer.join()
    start, publish_end = got["producer"]
    end, frames = got["consumer"]
    return {"end_to_end_msgs_per_s": n / (end - start), "publish_msgs_per_s": n / (publish_end - start),
            "deliver_frames": frames}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=300_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--prefetch", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile-server", metavar="PATH")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as data_dir:
        proc, port = start_server(data_dir, args.profile_server)
        try:
            runs = [run_once(port, i, args.messages, args.batch, args.size, args.prefetch) for i in range(args.runs)]
        finally:
            proc.terminate()
            proc.wait(30)
    e2e = [r["end_to_end_msgs_per_s"] for r in runs]
    pub = [r["publish_msgs_per_s"] for r in runs]
    result = {
        "benchmark": "minibroker_wire",
        "messages": args.messages, "batch": args.batch, "size": args.size, "prefetch": args.prefetch,
        "end_to_end_msgs_per_s_median": statistics.median(e2e), "end_to_end_msgs_per_s_runs": e2e,
        "publish_msgs_per_s_median": statistics.median(pub),
        "deliver_frames_per_run": [r["deliver_frames"] for r in runs],
    }
    print(f"minibroker wire, 1 producer → 1 consumer: {result['end_to_end_msgs_per_s_median']:,.0f} msg/s end to end, "
          f"median of {args.runs} (min {min(e2e):,.0f}, max {max(e2e):,.0f}); producer done at "
          f"{result['publish_msgs_per_s_median']:,.0f} msg/s; {args.size} B bodies, batches of {args.batch}, "
          f"prefetch {args.prefetch}; {statistics.mean(result['deliver_frames_per_run']):,.0f} deliver frames per run")
    if args.profile_server:
        import pstats
        pstats.Stats(args.profile_server).sort_stats("tottime").print_stats(20)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
