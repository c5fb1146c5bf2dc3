"""Throughput and latency of the confluent-style minilog clients, used as a program uses them.

    python -m bench.minilog_clients [--records 1000000] [--runs 3] [--size 100]
                                    [--latency-rate 10000] [--latency-seconds 3]
                                    [--only produce,consume,aio,aio-consume,latency,latency-raw]
                                    [--profile] [--json PATH] [--bootstrap HOST:PORT]

Starts a minilog server (`python -m minilog`, fresh data directory) unless --bootstrap names
one, then for each run, in separate processes as users deploy them:

- produce: `Producer({'linger.ms': 5, 'acks': 1})`, `produce()` once per record in a Python
  loop, then `flush()`; records/s over the whole loop including the flush, the producer's
  CPU per record over the same span, and the server's (from /proc, over the producer's run);
- consume: a new `Consumer` replays the topic from offset 0 with `consume(100000, 1.0)`;
  records/s from the first consume call to the last record, and the consumer's CPU per record
  (`time.process_time`: steadier than records/s when other work shares the machine);
- aio: `AIOKafkaProducer(acks=1, linger_ms=5)` under `asyncio.run`, `await send()` once per
  record (keeping no futures, as a fire-and-forget loop does) then `await flush()`, and the
  last record's future awaited; records/s over the whole loop, and CPU per record as produce;
- aio-consume (not run by default): an `AIOKafkaConsumer` replays the produce part's topic
  from offset 0 with `getmany(timeout_ms=1000, max_records=100000)`; records/s as consume;
- latency: one consumer waits at the end of a fresh topic while a producer sends
  `--latency-rate` records/s with `linger.ms` 0 (each value carries its send time); the
  consumer reports percentiles of (receive time - send time), and the part prints the CPU
  seconds of the producer, the consumer and the server (read from /proc, where there is one).
- latency-raw (not run by default): the same, but the records are sent by a bare connection,
  each as its own `produce` request with acks 0, one `sendall` each: no producer batching, no
  replies to read. It measures the path the Producer cannot shorten (two process wake-ups and
  the server's append and parked-fetch wake-up), so latency minus latency-raw is what the
  Producer adds.

Every part runs --runs times (latency too; its percentiles are medians over the runs). Prints
medians (and every run) with the load average at the start and writes them to --json. With --profile it also runs one
produce and one consume loop in this process under cProfile and prints where the time goes.
"""

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.pacing import paced  # noqa: E402
from clients.log import OFFSET_END, AdminClient, Consumer, NewTopic, Producer, TopicPartition  # noqa: E402

_STAMP = struct.Struct(">q")


# ---- the roles, each run in its own process ---------------------------------------------------
def role_produce(bootstrap, topic, records, size) -> dict:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": 1,
                  "queue.buffering.max.messages": max(records, 100_000)})
    value = b"x" * size
    produce = p.produce
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(records):
        produce(topic, value)
    left = p.flush(60)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    p.close()
    return {"records": records - left, "seconds": seconds, "cpu_s": cpu}


def role_consume(bootstrap, topic, records, size) -> dict:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{os.getpid()}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(topic, 0, 0)])
    got = 0
    start = None
    last = -1
    deadline = time.monotonic() + 120
    while got < records and time.monotonic() < deadline:
        batch = c.consume(100_000, 1.0)
        if start is None:
            start, cpu = time.perf_counter(), time.process_time()
        if batch:
            got += len(batch)
            last = batch[-1].offset()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    c.close()
    # Every record once, in order: the count and the last offset agree.
    assert got == records and last == records - 1, (got, last)
    return {"records": got, "seconds": seconds, "cpu_s": cpu}


def role_aio_produce(bootstrap, topic, records, size) -> dict:
    import asyncio

    from clients.aio_log import AIOKafkaProducer

    async def run():
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=5)
        await p.start()
        value = b"x" * size
        send = p.send
        start, cpu = time.perf_counter(), time.process_time()
        fut = None
        for _ in range(records):
            fut = await send(topic, value)
        await p.flush()
        meta = await fut
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        await p.stop()
        assert meta.offset == records - 1, meta
        return {"records": records, "seconds": seconds, "cpu_s": cpu}

    return asyncio.run(run())


def role_aio_consume(bootstrap, topic, records, size) -> dict:
    import asyncio

    from clients.aio_log import AIOKafkaConsumer
    from clients.aio_log import TopicPartition as AioTopicPartition

    async def run():
        c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
        await c.start()
        tp = AioTopicPartition(topic, 0)
        c.assign([tp])
        c.seek(tp, 0)
        got, last, start = 0, -1, None
        deadline = time.monotonic() + 120
        while got < records and time.monotonic() < deadline:
            batch = await c.getmany(timeout_ms=1000, max_records=100_000)
            if start is None:
                start, cpu = time.perf_counter(), time.process_time()
            for recs in batch.values():
                got += len(recs)
                last = recs[-1].offset
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        await c.stop()
        assert got == records and last == records - 1, (got, last)
        return {"records": got, "seconds": seconds, "cpu_s": cpu}

    return asyncio.run(run())


def poll_at_end(bootstrap, topic, records):
    """The latency bench's consumer: assigned at the end of `topic`, it prints "ready" (records
    sent from then on reach it) and polls until `records` have come (or two minutes pass),
    yielding each record's Message and the time (`time.time_ns`) poll() returned it."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"lat-{os.getpid()}", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, OFFSET_END)])
    c.poll(0.2)
    print("ready", flush=True)
    got = 0
    deadline = time.monotonic() + 120
    try:
        while got < records and time.monotonic() < deadline:
            m = c.poll(0.1)  # poll, not consume(n): consume waits to fill n
            if m is not None and m.error() is None:
                got += 1
                yield m, time.time_ns()
    finally:
        c.close()


def role_latency_consume(bootstrap, topic, records, size) -> dict:
    lat = [(now - _STAMP.unpack_from(m.value())[0]) / 1000.0 for m, now in poll_at_end(bootstrap, topic, records)]
    lat.sort()
    pct = lambda q: lat[min(int(q * len(lat)), len(lat) - 1)] if lat else None  # noqa: E731
    return {"records": len(lat), "cpu_s": time.process_time(), "p50_us": pct(0.5), "p90_us": pct(0.9), "p99_us": pct(0.99),
            "p999_us": pct(0.999), "max_us": lat[-1] if lat else None}


def role_latency_produce(bootstrap, topic, records, size, rate) -> dict:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": 1})
    pad = b"x" * max(size - 8, 0)
    start = time.perf_counter()
    for _ in paced(records, rate, start):
        p.produce(topic, _STAMP.pack(time.time_ns()) + pad)
        p.poll(0)
    p.flush(30)
    p.close()
    return {"records": records, "seconds": time.perf_counter() - start, "cpu_s": time.process_time()}


def role_latency_produce_raw(bootstrap, topic, records, size, rate) -> dict:
    from clients.log.connection import LogConnection, parse_bootstrap
    from clients.record_batch import BatchBuilder
    conn = LogConnection(*parse_bootstrap(bootstrap))
    pad = b"x" * max(size - 8, 0)
    start = time.perf_counter()
    for _ in paced(records, rate, start):
        batch = BatchBuilder()
        batch.append(None, _STAMP.pack(time.time_ns()) + pad)
        conn.send("produce", {"acks": 0, "timeout_ms": 1000, "data": [[topic, 0, batch.pack()]]}, want_reply=False)
        conn.flush()
    conn.close()
    return {"records": records, "seconds": time.perf_counter() - start, "cpu_s": time.process_time()}


# ---- orchestration ----------------------------------------------------------------------------
def process_cpu_s(pid) -> float | None:
    """CPU seconds (user + system) a process has used so far, from /proc (None where there is none)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def start_server(data_dir):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "minilog", "--port", "0", "--kafka-port", "off", "--data-dir", data_dir],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT, env=env)
    for line in proc.stdout:
        m = re.search(rb"listening on ([\d.]+):(\d+)", line)
        if m:
            return proc, f"{m.group(1).decode()}:{int(m.group(2))}"
    raise SystemExit("minilog did not start")


@contextlib.contextmanager
def bench_server(bootstrap, prefix):
    """(server process or None, bootstrap): `bootstrap` when given (a server already running),
    else a minilog started on a fresh data dir, stopped and removed afterwards."""
    if bootstrap is not None:
        yield None, bootstrap
        return
    data_dir = tempfile.mkdtemp(prefix=prefix)
    server = None
    try:
        server, bootstrap = start_server(data_dir)
        yield server, bootstrap
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        shutil.rmtree(data_dir, ignore_errors=True)


def run_role(args_list, wait_ready=False):
    cmd = [sys.executable, "-m", "bench.minilog_clients", "--role", *args_list]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=ROOT, env=env, text=True)
    if wait_ready:
        line = proc.stdout.readline()
        assert line.strip() == "ready", line
    return proc


def finish(proc) -> dict:
    out, _ = proc.communicate(timeout=300)
    return json.loads(out.strip().splitlines()[-1])


def create_topic(bootstrap, name):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, 1)])[name].result(10)
    admin.close()


def profile(bootstrap, records, size):
    import cProfile
    import pstats
    topic = f"profile-{os.getpid()}"
    create_topic(bootstrap, topic)
    for name, fn in (("produce", role_produce), ("consume", role_consume)):
        prof = cProfile.Profile()
        prof.enable()
        r = fn(bootstrap, topic, records, size)
        prof.disable()
        print(f"\n== profile of one {name} loop ({r['records']:,} records, {r['seconds']:.2f} s under cProfile) ==")
        pstats.Stats(prof).sort_stats("tottime").print_stats(12)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--latency-rate", type=int, default=10_000)
    ap.add_argument("--latency-seconds", type=float, default=3.0)
    ap.add_argument("--bootstrap")
    ap.add_argument("--only", default="produce,consume,aio,latency",
                    help="comma-separated parts to run: produce, consume, aio, aio-consume, latency, latency-raw")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--role", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.role:
        role, bootstrap, topic, records, size, *rest = args.role
        fn = {"produce": role_produce, "consume": role_consume, "latency-consume": role_latency_consume,
              "latency-produce": role_latency_produce, "aio-produce": role_aio_produce,
              "aio-consume": role_aio_consume,
              "latency-produce-raw": role_latency_produce_raw}[role]
        extra = [int(x) for x in rest]
        print(json.dumps(fn(bootstrap, topic, int(records), int(size), *extra)), flush=True)
        return

    only = set(args.only.split(","))
    load = os.getloadavg()
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    with bench_server(args.bootstrap, "bench-minilog-clients-") as (server, bootstrap):
        produced, consumed, aio, aio_consumed = [], [], [], []
        # CPU per record (µs) of the producing or consuming process over its loop: steadier than
        # records/s when other work shares the machine.
        consumed_cpu, aio_consumed_cpu, produced_cpu, aio_cpu, produced_server_cpu = [], [], [], [], []
        lats_by = {"latency": [], "latency-raw": []}
        lats = lats_by["latency"]
        n_lat = int(args.latency_rate * args.latency_seconds)
        for run in range(args.runs):
            topic = f"bench-{os.getpid()}-{run}"
            line = [f"run {run + 1}:"]
            if only & {"produce", "consume", "aio-consume"}:
                create_topic(bootstrap, topic)
                server_cpu = process_cpu_s(server.pid) if server is not None else None
                p = finish(run_role(["produce", bootstrap, topic, str(args.records), str(args.size)]))
                produced.append(p["records"] / p["seconds"])
                produced_cpu.append(p["cpu_s"] / p["records"] * 1e6)
                server_part = ""
                if server_cpu is not None:
                    # The server's CPU over the producer's whole process (its start and its
                    # metadata included), per record: what the server spends receiving them.
                    produced_server_cpu.append((process_cpu_s(server.pid) - server_cpu) / p["records"] * 1e6)
                    server_part = f", server {produced_server_cpu[-1]:.3f}"
                line.append(f"produced {produced[-1]:,.0f} records/s ({produced_cpu[-1]:.3f} cpu us/record{server_part})")
                if "consume" in only:
                    c = finish(run_role(["consume", bootstrap, topic, str(args.records), str(args.size)]))
                    consumed.append(c["records"] / c["seconds"])
                    consumed_cpu.append(c["cpu_s"] / c["records"] * 1e6)
                    line.append(f"consumed {consumed[-1]:,.0f} records/s ({consumed_cpu[-1]:.3f} cpu us/record)")
                if "aio-consume" in only:
                    c = finish(run_role(["aio-consume", bootstrap, topic, str(args.records), str(args.size)]))
                    aio_consumed.append(c["records"] / c["seconds"])
                    aio_consumed_cpu.append(c["cpu_s"] / c["records"] * 1e6)
                    line.append(f"aio consumed {aio_consumed[-1]:,.0f} records/s ({aio_consumed_cpu[-1]:.3f} cpu us/record)")
            if "aio" in only:
                create_topic(bootstrap, topic + "-aio")
                a = finish(run_role(["aio-produce", bootstrap, topic + "-aio", str(args.records), str(args.size)]))
                aio.append(a["records"] / a["seconds"])
                aio_cpu.append(a["cpu_s"] / a["records"] * 1e6)
                line.append(f"aio produced {aio[-1]:,.0f} records/s ({aio_cpu[-1]:.3f} cpu us/record)")
            for part, producer_role in (("latency", "latency-produce"), ("latency-raw", "latency-produce-raw")):
                if part not in only:
                    continue
                lat_topic = f"{part}-{os.getpid()}-{run}"
                create_topic(bootstrap, lat_topic)
                cons = run_role(["latency-consume", bootstrap, lat_topic, str(n_lat), str(args.size)], wait_ready=True)
                server_cpu = process_cpu_s(server.pid) if server is not None else None
                prod = run_role([producer_role, bootstrap, lat_topic, str(n_lat), str(args.size),
                                 str(args.latency_rate)])
                prod_result = finish(prod)
                lat = finish(cons)
                lat["producer_cpu_s"] = prod_result.get("cpu_s")
                # The server's CPU over the part (from the producer's start to the consumer's end).
                lat["server_cpu_s"] = (process_cpu_s(server.pid) - server_cpu) if server_cpu is not None else None
                lats_by[part].append(lat)
                server_part = f", server {lat['server_cpu_s']:.2f}" if lat["server_cpu_s"] is not None else ""
                line.append(f"{part} p50 {lat['p50_us']:.0f} p99 {lat['p99_us']:.0f} p99.9 {lat['p999_us']:.0f} us "
                            f"(cpu s: producer {lat['producer_cpu_s']:.2f}, consumer {lat['cpu_s']:.2f}{server_part})")
            print(" ".join(line), flush=True)
        med = lambda xs: statistics.median(xs) if xs else None  # noqa: E731
        medians = {part: {k: med([r[k] for r in runs]) for k in ("records", "p50_us", "p90_us", "p99_us", "p999_us",
                                                                 "max_us", "cpu_s", "producer_cpu_s", "server_cpu_s")
                                                                 if all(r.get(k) is not None for r in runs)}
                   for part, runs in lats_by.items() if runs}
        lat, lat_raw = medians.get("latency"), medians.get("latency-raw")
        result = {
            "records": args.records, "value_size": args.size, "runs": args.runs, "load_average": load,
            "produce_records_per_s": med(produced), "produce_runs": produced,
            "produce_cpu_us_per_record": med(produced_cpu),
            "produce_server_cpu_us_per_record": med(produced_server_cpu),
            "consume_records_per_s": med(consumed), "consume_runs": consumed,
            "consume_cpu_us_per_record": med(consumed_cpu),
            "aio_produce_records_per_s": med(aio), "aio_produce_runs": aio,
            "aio_produce_cpu_us_per_record": med(aio_cpu),
            "aio_consume_records_per_s": med(aio_consumed), "aio_consume_runs": aio_consumed,
            "aio_consume_cpu_us_per_record": med(aio_consumed_cpu),
            "latency": {"rate_per_s": args.latency_rate, **lat, "runs": lats} if lats else None,
            "latency_raw": ({"rate_per_s": args.latency_rate, **lat_raw, "runs": lats_by["latency-raw"]}
                            if lat_raw else None),
        }
        if produced:
            print(f"\nproduce (linger.ms 5, acks 1, produce() per record + flush): "
                  f"median {result['produce_records_per_s']:,.0f} records/s over {args.runs} runs, "
                  f"{result['produce_cpu_us_per_record']:.3f} cpu us/record"
                  + (f" (server {result['produce_server_cpu_us_per_record']:.3f})" if produced_server_cpu else ""))
        if consumed:
            print(f"consume (replay from 0, consume(100000, 1.0)):           "
                  f"median {result['consume_records_per_s']:,.0f} records/s, "
                  f"{result['consume_cpu_us_per_record']:.3f} cpu us/record")
        if aio_consumed:
            print(f"aio consume (replay from 0, getmany(max_records=100000)): "
                  f"median {result['aio_consume_records_per_s']:,.0f} records/s, "
                  f"{result['aio_consume_cpu_us_per_record']:.3f} cpu us/record")
        if aio:
            print(f"aio produce (linger_ms 5, acks 1, await send() per record + flush): "
                  f"median {result['aio_produce_records_per_s']:,.0f} records/s, "
                  f"{result['aio_produce_cpu_us_per_record']:.3f} cpu us/record")
        if lats:
            print(f"latency at {args.latency_rate:,}/s, linger.ms 0 (medians over {len(lats)} runs): "
                  f"p50 {lat['p50_us']:.0f} us, p99 {lat['p99_us']:.0f} us, p99.9 {lat['p999_us']:.0f} us, "
                  f"max {lat['max_us']:.0f} us; cpu s producer {lat['producer_cpu_s']:.2f}, "
                  f"consumer {lat['cpu_s']:.2f}" + (f", server {lat['server_cpu_s']:.2f}" if "server_cpu_s" in lat else ""))
        if lat_raw:
            print(f"latency-raw at {args.latency_rate:,}/s, one produce request per record, acks 0 (medians over "
                  f"{len(lats_by['latency-raw'])} runs): p50 {lat_raw['p50_us']:.0f} us, p99 {lat_raw['p99_us']:.0f} us, "
                  f"p99.9 {lat_raw['p999_us']:.0f} us, max {lat_raw['max_us']:.0f} us")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)
        if args.profile:
            profile(bootstrap, min(args.records, 300_000), args.size)


if __name__ == "__main__":
    main()
