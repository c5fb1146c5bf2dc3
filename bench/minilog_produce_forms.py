"""CPU per record of each common produce call form, and whether it takes the fast path.

    python -m bench.minilog_produce_forms [--records 300000] [--runs 3] [--size 100]
                                          [--only FORM,...] [--json PATH] [--bootstrap HOST:PORT]

Starts a minilog server (`python -m minilog`, fresh data directory) unless --bootstrap names
one. Then, in this process, for each call form and run: a new producer on a fresh topic, one
warm-up record per partition (a batch's first record always takes the slow path), then
--records calls in a Python loop and the final flush. It reports the CPU time of this process
(`time.process_time`) per record over loop and flush, and how many of the calls left the fast
path (the calls that reached `Producer._produce` / `AIOKafkaProducer._send`; 0 means every call
was served by the fast path at the top of `produce()` / `send()`).

The forms (100-byte values; the confluent-style Producer with `linger.ms` 5 and `acks` 1, the
aiokafka-style producer with `linger_ms` 5 and `acks` 1):

- value:           `produce(topic, value)`
- partition:       `produce(topic, value, partition=0)`
- key-partition:   `produce(topic, value, key=b"k", partition=0)`
- keys:            `produce(topic, value, key=K)`, 256 keys over a 4-partition topic
- aio-value:       `await send(topic, value)`
- aio-partition:   `await send(topic, value, partition=0)`
- aio-keys:        `await send(topic, value, key=K)`, 256 keys over a 4-partition topic

Prints the median over --runs of each figure, with every run, and the load average at the start.
It uses only the clients' public API plus the two method names above, so the same file run
from another checkout (copy it into that tree's bench/) measures that checkout's clients.
"""

import argparse
import asyncio
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.minilog_clients import bench_server, create_topic  # noqa: E402
from clients.log import AdminClient, NewTopic, Producer  # noqa: E402

_KEYS = [b"key-%d" % i for i in range(256)]
FORMS = ("value", "partition", "key-partition", "keys", "aio-value", "aio-partition", "aio-keys")


def _counting(fn, counter):
    def counted(*args, **kwargs):
        counter[0] += 1
        return fn(*args, **kwargs)
    return counted


def _topic(bootstrap, name, partitions):
    if partitions == 1:
        create_topic(bootstrap, name)
        return
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions)])[name].result(10)
    admin.close()


def blocking_form(bootstrap, topic, form, records, size) -> dict:
    partitions = 4 if form == "keys" else 1
    _topic(bootstrap, topic, partitions)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": 1,
                  "queue.buffering.max.messages": max(records + 100, 100_000)})
    value = b"x" * size
    for part in range(partitions):  # each partition's first batch opens on the slow path
        p.produce(topic, value, partition=part)
    slow = [0]
    p._produce = _counting(p._produce, slow)
    produce = p.produce
    keys = _KEYS
    cpu, wall = time.process_time(), time.perf_counter()
    if form == "value":
        for _ in range(records):
            produce(topic, value)
    elif form == "partition":
        for _ in range(records):
            produce(topic, value, partition=0)
    elif form == "key-partition":
        for _ in range(records):
            produce(topic, value, key=b"k", partition=0)
    elif form == "keys":
        for i in range(records):
            produce(topic, value, key=keys[i & 255])
    left = p.flush(60)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    p.close()
    assert left == 0, left
    return {"cpu_us_per_record": cpu / records * 1e6, "records_per_s": records / wall, "slow_calls": slow[0]}


def aio_form(bootstrap, topic, form, records, size) -> dict:
    from clients.aio_log import AIOKafkaProducer
    partitions = 4 if form == "aio-keys" else 1
    _topic(bootstrap, topic, partitions)

    async def run():
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=5)
        await p.start()
        value = b"x" * size
        for part in range(partitions):
            await p.send(topic, value, partition=part)
        slow = [0]
        p._send = _counting(p._send, slow)
        send = p.send
        keys = _KEYS
        cpu, wall = time.process_time(), time.perf_counter()
        fut = None
        if form == "aio-value":
            for _ in range(records):
                fut = await send(topic, value)
        elif form == "aio-partition":
            for _ in range(records):
                fut = await send(topic, value, partition=0)
        elif form == "aio-keys":
            for i in range(records):
                fut = await send(topic, value, key=keys[i & 255])
        await p.flush()
        await fut
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        await p.stop()
        return {"cpu_us_per_record": cpu / records * 1e6, "records_per_s": records / wall, "slow_calls": slow[0]}

    return asyncio.run(run())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=300_000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default=",".join(FORMS), help="comma-separated forms: " + ", ".join(FORMS))
    ap.add_argument("--bootstrap")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    forms = [f for f in args.only.split(",") if f]
    unknown = set(forms) - set(FORMS)
    if unknown:
        ap.error(f"unknown forms: {', '.join(sorted(unknown))}")

    load = os.getloadavg()
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    results = {}
    with bench_server(args.bootstrap, "bench-produce-forms-") as (_, bootstrap):
        for run in range(args.runs):
            for form in forms:
                topic = f"forms-{os.getpid()}-{form}-{run}"
                fn = aio_form if form.startswith("aio-") else blocking_form
                r = fn(bootstrap, topic, form, args.records, args.size)
                results.setdefault(form, []).append(r)
                print(f"run {run + 1} {form:14s} {r['cpu_us_per_record']:.3f} us/record CPU, "
                      f"{r['records_per_s']:,.0f} records/s, slow-path calls {r['slow_calls']}", flush=True)
        print()
        summary = {}
        for form, runs in results.items():
            cpu = statistics.median(r["cpu_us_per_record"] for r in runs)
            rate = statistics.median(r["records_per_s"] for r in runs)
            slow = max(r["slow_calls"] for r in runs)
            summary[form] = {"cpu_us_per_record": cpu, "records_per_s": rate, "slow_calls": slow, "runs": runs}
            each = ", ".join(f"{r['cpu_us_per_record']:.3f}" for r in runs)
            print(f"{form:14s} median {cpu:.3f} us/record CPU ({each}), "
                  f"{rate:,.0f} records/s, slow-path calls {slow} of {args.records:,}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"load_average": load, "records": args.records, "value_size": args.size, "forms": summary},
                          f, indent=2)


if __name__ == "__main__":
    main()
