"""Throughput of the pika-style client: a plain pika program, one producer and one consumer process.

    python -m bench.minibroker_clients [--messages 200000] [--size 256] [--runs 5]
                                       [--prefetch 1000] [--ack-every 100] [--single-acks]
                                       [--client pika|aio]
                                       [--profile producer|consumer] [--json PATH]

Starts minibroker as a subprocess (as a user would), then per run: a consumer process
(`basic_qos(prefetch_count=1000)`, `basic_consume`, `basic_ack(multiple=True)` every 100
messages, `start_consuming`) and a producer process (`basic_publish` in a loop without
confirms, 256-byte bodies, then `connection.close()`). Both are written exactly as for pika,
with `from clients import broker as pika`. Reported per run:

- producer: messages / time spent in the publish loop and close;
- end to end: messages / (time the consumer received the last message - time the producer
  started publishing), the figure that counts.

`--client aio` runs the same two programs written for aio-pika instead (publish loop without
confirms; `queue.iterator()`, `message.ack(multiple=True)` every 100).

Prints the median and spread over the runs. `--profile producer` (or `consumer`) runs that
side under cProfile in one extra run and prints where its time goes.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- the two programs (as a pika user writes them) ----------------------------------------------
def producer(port: int, queue: str, messages: int, size: int) -> dict:
    from clients import broker as pika
    connection = pika.BlockingConnection(pika.ConnectionParameters(host="127.0.0.1", port=port))
    channel = connection.channel()
    body = b"x" * size
    start = time.time()
    for _ in range(messages):
        channel.basic_publish(exchange="", routing_key=queue, body=body)
    connection.close()
    return {"start": start, "end": time.time()}


def consumer(port: int, queue: str, messages: int, prefetch: int, ack_every: int, ready_fd: int,
             single_acks: bool = False) -> dict:
    from clients import broker as pika
    connection = pika.BlockingConnection(pika.ConnectionParameters(host="127.0.0.1", port=port))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=prefetch)
    state = {"count": 0, "first": None}

    def on_message(ch, method, properties, body):
        state["count"] += 1
        if state["first"] is None:
            state["first"] = time.time()
        if single_acks:
            ch.basic_ack(delivery_tag=method.delivery_tag)
        elif state["count"] % ack_every == 0 or state["count"] == messages:
            ch.basic_ack(delivery_tag=method.delivery_tag, multiple=True)
        if state["count"] == messages:
            state["last"] = time.time()
            ch.stop_consuming()

    channel.basic_consume(queue=queue, on_message_callback=on_message)
    os.write(ready_fd, b"ready\n")
    channel.start_consuming()
    connection.close()
    return {"first": state["first"], "last": state["last"]}


def aio_producer(port: int, queue: str, messages: int, size: int) -> dict:
    import asyncio
    from clients import aio_broker as aio_pika

    async def main():
        connection = await aio_pika.connect(host="127.0.0.1", port=port)
        channel = await connection.channel(publisher_confirms=False)
        body = b"x" * size
        start = time.time()
        exchange = channel.default_exchange
        for _ in range(messages):
            await exchange.publish(aio_pika.Message(body), routing_key=queue)
        await connection.close()
        return {"start": start, "end": time.time()}

    return _run(main())


def aio_consumer(port: int, queue: str, messages: int, prefetch: int, ack_every: int, ready_fd: int,
                 single_acks: bool = False) -> dict:
    import asyncio
    from clients import aio_broker as aio_pika

    async def main():
        connection = await aio_pika.connect(host="127.0.0.1", port=port)
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        q = await channel.get_queue(queue)
        count = 0
        first = None
        async with q.iterator() as it:
            os.write(ready_fd, b"ready\n")
            async for message in it:
                count += 1
                if first is None:
                    first = time.time()
                if single_acks:
                    await message.ack()
                elif count % ack_every == 0 or count == messages:
                    await message.ack(multiple=True)
                if count == messages:
                    break
        last = time.time()
        await connection.close()
        return {"first": first, "last": last}

    return _run(main())


def _run(coro):
    import asyncio
    try:
        import uvloop
        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def run_role(args) -> None:
    """Entry point of a child process: run one side, print its timings as JSON."""
    def work():
        if args.client == "aio":
            if args.role == "producer":
                return aio_producer(args.port, args.queue, args.messages, args.size)
            return aio_consumer(args.port, args.queue, args.messages, args.prefetch, args.ack_every, 1,
                                args.single_acks)
        if args.role == "producer":
            return producer(args.port, args.queue, args.messages, args.size)
        return consumer(args.port, args.queue, args.messages, args.prefetch, args.ack_every, 1, args.single_acks)

    if args.profile_out:
        import cProfile
        profiler = cProfile.Profile()
        result = profiler.runcall(work)
        profiler.dump_stats(args.profile_out)
    else:
        result = work()
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


# ---- orchestration ----------------------------------------------------------------------------
def start_server(data_dir: str):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "minibroker", "--port", "0", "--amqp-port", "off", "--data-dir", data_dir],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT, env=env)
    for raw in proc.stdout:
        match = re.search(r"listening on ([\d.]+):(\d+)", raw.decode(errors="replace"))
        if match:
            return proc, int(match.group(2))
    raise SystemExit("minibroker did not start")


def child(role, port, queue, args, profile_out=None):
    cmd = [sys.executable, "-m", "bench.minibroker_clients", "--role", role, "--port", str(port),
           "--queue", queue, "--messages", str(args.messages), "--size", str(args.size),
           "--prefetch", str(args.prefetch), "--ack-every", str(args.ack_every), "--client", args.client]
    if args.single_acks:
        cmd.append("--single-acks")
    if profile_out:
        cmd += ["--profile-out", profile_out]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=ROOT, env=env)


def one_run(port, run, args, profile_role=None, profile_out=None) -> dict:
    from clients import broker as pika
    queue = f"bench-{run}"
    with pika.BlockingConnection(pika.ConnectionParameters(port=port)) as conn:
        conn.channel().queue_declare(queue)
    cons = child("consumer", port, queue, args, profile_out if profile_role == "consumer" else None)
    assert cons.stdout.readline().strip() == b"ready"
    prod = child("producer", port, queue, args, profile_out if profile_role == "producer" else None)
    p = json.loads(prod.stdout.readline())
    c = json.loads(cons.stdout.readline())
    for proc in (prod, cons):
        proc.wait()
        proc.stdout.close()
    with pika.BlockingConnection(pika.ConnectionParameters(port=port)) as conn:
        conn.channel().queue_delete(queue)
    n = args.messages
    return {"producer_msgs_per_s": n / (p["end"] - p["start"]),
            "end_to_end_msgs_per_s": n / (c["last"] - p["start"]),
            "consumer_msgs_per_s": n / (c["last"] - c["first"])}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--prefetch", type=int, default=1000)
    parser.add_argument("--ack-every", type=int, default=100)
    parser.add_argument("--profile", choices=("producer", "consumer"))
    parser.add_argument("--single-acks", action="store_true",
                        help="ack every message on its own (basic_ack(tag), as the tutorials do)")
    parser.add_argument("--client", choices=("pika", "aio"), default="pika",
                        help="pika: the blocking client (default); aio: the aio-pika-style client")
    parser.add_argument("--json")
    parser.add_argument("--role", choices=("producer", "consumer"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--queue", help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role:
        return run_role(args)

    with tempfile.TemporaryDirectory() as data_dir:
        server, port = start_server(data_dir)
        try:
            runs = [one_run(port, i, args) for i in range(args.runs)]
            profile_text = None
            if args.profile:
                import io
                import pstats
                out = os.path.join(data_dir, "profile.out")
                one_run(port, "profile", args, args.profile, out)
                buf = io.StringIO()
                pstats.Stats(out, stream=buf).sort_stats("tottime").print_stats(18)
                profile_text = buf.getvalue()
        finally:
            server.terminate()
            server.wait()
    summary = {"messages": args.messages, "size": args.size, "runs": runs}
    acks = "single acks" if args.single_acks else f"ack multiple every {args.ack_every}"
    print(f"{args.client}-style client, {args.messages} messages of {args.size} B, prefetch {args.prefetch}, "
          f"{acks}, {args.runs} runs")
    for key in ("producer_msgs_per_s", "consumer_msgs_per_s", "end_to_end_msgs_per_s"):
        values = sorted(r[key] for r in runs)
        summary[key] = {"median": statistics.median(values), "min": values[0], "max": values[-1]}
        print(f"  {key:24s} median {statistics.median(values):>10,.0f}   (min {values[0]:,.0f}, max {values[-1]:,.0f})")
    if profile_text:
        print(f"\ncProfile of the {args.profile} (sorted by own time):\n{profile_text}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return summary


if __name__ == "__main__":
    main()
