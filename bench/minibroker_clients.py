"""Throughput of the pika-style client: a plain pika program, one producer and one consumer process.

    python -m bench.minibroker_clients [--messages 200000] [--size 256] [--runs 5]
                                       [--prefetch 1000] [--ack-every 100] [--single-acks]
                                       [--client pika|aio]
                                       [--profile producer|consumer] [--json PATH]
    python -m bench.minibroker_clients --publish-forms [--messages 50000] [--runs 5]

Starts minibroker as a subprocess (as a user would), then per run: a consumer process
(`basic_qos(prefetch_count=1000)`, `basic_consume`, `basic_ack(multiple=True)` every 100
messages, `start_consuming`) and a producer process (`basic_publish` in a loop without
confirms, 256-byte bodies, then `connection.close()`). Both are written exactly as for pika,
with `from clients import broker as pika`. Reported per run:

- producer: messages / time spent in the publish loop and close;
- end to end: messages / (time the consumer received the last message - time the producer
  started publishing), the figure that counts;
- the CPU each client process used per message (`time.process_time` from the start of its
  publish loop, or of its consumer, to its close; every thread of the process, the pika-style
  connection's flusher included), in microseconds: unlike the rates, these hardly move with
  the load other programs put on the machine.

`--publish-forms` measures instead, in this process, the CPU per `basic_publish` call of each
common form of the call (keywords or positional, `BasicProperties` reused or made per message,
`mandatory=True`, a `str` body), each a median over `--runs` loops of `--messages` publishes
to a queue of the server, the batches' packing and writing included.

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
    start, cpu = time.time(), time.process_time()
    for _ in range(messages):
        channel.basic_publish(exchange="", routing_key=queue, body=body)
    connection.close()
    return {"start": start, "end": time.time(), "cpu": time.process_time() - cpu}


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

    cpu = time.process_time()
    channel.basic_consume(queue=queue, on_message_callback=on_message)
    os.write(ready_fd, b"ready\n")
    channel.start_consuming()
    connection.close()
    return {"first": state["first"], "last": state["last"], "cpu": time.process_time() - cpu}


def aio_producer(port: int, queue: str, messages: int, size: int) -> dict:
    import asyncio
    from clients import aio_broker as aio_pika

    async def main():
        connection = await aio_pika.connect(host="127.0.0.1", port=port)
        channel = await connection.channel(publisher_confirms=False)
        body = b"x" * size
        start, cpu = time.time(), time.process_time()
        exchange = channel.default_exchange
        for _ in range(messages):
            await exchange.publish(aio_pika.Message(body), routing_key=queue)
        await connection.close()
        return {"start": start, "end": time.time(), "cpu": time.process_time() - cpu}

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
        cpu = time.process_time()
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
        return {"first": first, "last": last, "cpu": time.process_time() - cpu}

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
            "consumer_msgs_per_s": n / (c["last"] - c["first"]),
            "producer_cpu_us_per_msg": p["cpu"] / n * 1e6,
            "consumer_cpu_us_per_msg": c["cpu"] / n * 1e6}


# ---- CPU per basic_publish, form by form ---------------------------------------------------------
def publish_forms(port: int, messages: int, runs: int, size: int = 256) -> dict:
    """Median CPU microseconds per `basic_publish` for each common form of the call."""
    from clients import broker as pika
    connection = pika.BlockingConnection(pika.ConnectionParameters(host="127.0.0.1", port=port))
    channel = connection.channel()
    queue = "bench-forms"
    channel.queue_declare(queue)
    body = b"x" * size
    text = "x" * size
    reused = pika.BasicProperties(delivery_mode=2)
    Props = pika.BasicProperties
    publish = channel.basic_publish
    forms = {
        "keywords": lambda: publish(exchange="", routing_key=queue, body=body),
        "positional": lambda: publish("", queue, body),
        "properties reused": lambda: publish(exchange="", routing_key=queue, body=body, properties=reused),
        "properties per message": lambda: publish(exchange="", routing_key=queue, body=body,
                                                  properties=Props(delivery_mode=2)),
        "properties per message, 2 fields, DeliveryMode": lambda: publish(
            exchange="", routing_key=queue, body=body,
            properties=Props(content_type="text/plain", delivery_mode=pika.DeliveryMode.Persistent)),
        "mandatory=True": lambda: publish(exchange="", routing_key=queue, body=body, mandatory=True),
        "str body": lambda: publish(exchange="", routing_key=queue, body=text),
    }
    results = {}
    for name, call in forms.items():
        samples = []
        for _ in range(runs):
            connection.process_data_events(0)
            start = time.process_time()
            for _ in range(messages):
                call()
            connection.process_data_events(0)  # what is buffered is packed and written too
            samples.append((time.process_time() - start) / messages * 1e6)
            channel.queue_purge(queue)
        results[name] = statistics.median(samples)
    channel.queue_delete(queue)
    connection.close()
    return results


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
    parser.add_argument("--publish-forms", action="store_true",
                        help="measure the CPU per basic_publish call of each common form instead")
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
        if args.publish_forms:
            try:
                forms = publish_forms(port, args.messages, args.runs, args.size)
            finally:
                server.terminate()
                server.wait()
            print(f"CPU per basic_publish, {args.size} B bodies, median of {args.runs} loops of {args.messages}:")
            for name, us in forms.items():
                print(f"  {name:50s} {us:6.2f} us")
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(forms, f, indent=2)
            return forms
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
    for key in ("producer_msgs_per_s", "consumer_msgs_per_s", "end_to_end_msgs_per_s",
                "producer_cpu_us_per_msg", "consumer_cpu_us_per_msg"):
        values = sorted(r[key] for r in runs)
        summary[key] = {"median": statistics.median(values), "min": values[0], "max": values[-1]}
        fmt = ",.2f" if key.endswith("_us_per_msg") else ",.0f"
        print(f"  {key:24s} median {statistics.median(values):>10{fmt}}   (min {values[0]:{fmt}}, max {values[-1]:{fmt}})")
    if profile_text:
        print(f"\ncProfile of the {args.profile} (sorted by own time):\n{profile_text}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return summary


if __name__ == "__main__":
    main()
