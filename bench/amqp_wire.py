"""AMQP 0-9-1 front door benchmarks: a pipelined raw publisher, and the real pika against
minibroker's AMQP listener and against RabbitMQ, side by side in one run.

    python -m bench.amqp_wire raw  [--messages 200000 --size 256 --runs 3]
    python -m bench.amqp_wire pika [--messages 50000 --size 256 --runs 3 --rabbitmq]
    python -m bench.amqp_wire aio  [--messages 50000 --size 256 --runs 3 --rabbitmq]

`raw` writes basic.publish frames (no confirms, no properties) to one queue in large pipelined
chunks from a bare socket (frames built with minibroker/amqp/codec.py), then one
queue.declare(passive) whose answer arrives only after every publish before it was applied:
the rate is what the server takes in. `pika` runs 1 producer and 1 consumer process (the real
pika BlockingConnection, 256 B, transient queue, prefetch 1000, an ack with multiple every 100)
and reports msgs/s from the first publish to the last delivery; `aio` does the same with the
real aio-pika (publishes awaited one by one, no confirms; consumer with a queue iterator). Both report the server's CPU
seconds (user + system, from /proc/<pid>/stat) per 100k messages. With `--rabbitmq`, Debian's
rabbitmq-server is started (bench/systems/servers.py `start_rabbitmq`, on 127.0.0.1 only, its own
temp dirs and ports) and stopped, with its epmd, afterwards. A standalone module: not part of the bench suite's workloads.
"""

import argparse
import json
import multiprocessing as mp
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from bench.systems.servers import cpu_seconds  # noqa: E402
from minibroker.amqp import codec  # noqa: E402
from minibroker.amqp.spec import PROTOCOL_HEADER, m  # noqa: E402


# ---- servers --------------------------------------------------------------------------------------
def start_minibroker(data_dir):
    from harness import read_listening_port
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "minibroker", "--port", "0", "--amqp-port", "0",
                             "--data-dir", data_dir, "--log-level", "WARNING"],
                            stdout=subprocess.PIPE, cwd=ROOT, env=env)
    return proc, read_listening_port(proc, 20, name="amqp")


def start_rabbitmq():
    """Debian's rabbitmq-server through the bench suite's starter, listening on 127.0.0.1 only."""
    from bench.systems.servers import start_rabbitmq as start
    os.environ.setdefault("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
    return start(timeout=120)


# ---- the raw publisher ------------------------------------------------------------------------------
class RawClient:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = codec.CommandReader(1 << 20, 1 << 24, greeted=True)
        self.pending = []
        self.sock.sendall(PROTOCOL_HEADER)
        self.expect(m.ConnectionStart)
        self.send(0, m.ConnectionStartOk({}, "PLAIN", b"\x00guest\x00guest", "en_US"))
        self.expect(m.ConnectionTune)
        self.send(0, m.ConnectionTuneOk(2047, 131072, 0))
        self.send(0, m.ConnectionOpen("/"))
        self.expect(m.ConnectionOpenOk)
        self.send(1, m.ChannelOpen())
        self.expect(m.ChannelOpenOk)

    def send(self, ch, args):
        self.sock.sendall(codec.frame_method(ch, args))

    def expect(self, cls):
        while not self.pending:
            data = self.sock.recv(1 << 16)
            if not data:
                raise ConnectionError("server closed the connection")
            self.pending.extend(self.reader.feed(data))
        cmd = self.pending.pop(0)
        if type(cmd[1]) is not cls:
            raise AssertionError(f"expected {cls.__name__}, got {cmd}")
        return cmd[1]


def raw_run(port, pid, queue, messages, size, chunk_messages=1000) -> dict:
    client = RawClient(port)
    client.send(1, m.QueueDeclare(queue=queue))
    client.expect(m.QueueDeclareOk)
    one = b"".join(codec.frame_content(1, m.BasicPublish(routing_key=queue), None, b"x" * size, 131072))
    chunk = one * chunk_messages
    cpu0 = cpu_seconds(pid)
    start = time.perf_counter()
    for _ in range(messages // chunk_messages):
        client.sock.sendall(chunk)
    sent = messages // chunk_messages * chunk_messages
    # minibroker answers after applying every publish before it; RabbitMQ's queue may still be
    # taking them in, so ask until the count is complete.
    deadline = time.monotonic() + 300
    while True:
        client.send(1, m.QueueDeclare(queue=queue, passive=True))
        count = client.expect(m.QueueDeclareOk).message_count
        if count >= sent or time.monotonic() > deadline:
            break
        time.sleep(0.001)
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds(pid) - cpu0
    client.send(1, m.QueueDelete(queue=queue))
    client.expect(m.QueueDeleteOk)
    client.sock.close()
    assert count == sent, (count, sent)
    return {"msgs_per_s": sent / elapsed, "server_cpu_s_per_100k": cpu / sent * 100_000}


# ---- the real pika, 1 producer and 1 consumer ----------------------------------------------------------
def pika_producer(port, queue, messages, size, go):
    import pika
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    ch = conn.channel()
    body = b"x" * size
    go.wait()
    for _ in range(messages):
        ch.basic_publish("", queue, body)
    conn.close()


def pika_consumer(port, queue, messages, ready, results):
    import pika
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=1000)
    state = {"n": 0}

    def on_message(c, method, props, body):
        state["n"] += 1
        if state["n"] == 1:
            state["first"] = time.perf_counter()
        if state["n"] % 100 == 0 or state["n"] == messages:
            c.basic_ack(method.delivery_tag, multiple=True)
        if state["n"] == messages:
            c.stop_consuming()

    ch.basic_consume(queue, on_message)
    ready.set()
    ch.start_consuming()
    results.put(time.perf_counter())
    conn.close()


def aio_producer(port, queue, messages, size, go):
    import asyncio

    import aio_pika

    async def run():
        conn = await aio_pika.connect(f"amqp://guest:guest@127.0.0.1:{port}/")
        ch = await conn.channel(publisher_confirms=False)
        body = b"x" * size
        go.wait()
        for _ in range(messages):
            await ch.default_exchange.publish(aio_pika.Message(body), routing_key=queue)
        await conn.close()
    asyncio.run(run())


def aio_consumer(port, queue, messages, ready, results):
    import asyncio

    import aio_pika

    async def run():
        conn = await aio_pika.connect(f"amqp://guest:guest@127.0.0.1:{port}/")
        ch = await conn.channel()
        await ch.set_qos(prefetch_count=1000)
        q = await ch.get_queue(queue)
        n = 0
        ready.set()
        async with q.iterator() as it:
            async for message in it:
                n += 1
                if n % 100 == 0 or n == messages:
                    await message.ack(multiple=True)
                if n == messages:
                    break
        results.put(time.perf_counter())
        await conn.close()
    asyncio.run(run())


def pika_run(port, pid, queue, messages, size, producer_fn=None, consumer_fn=None) -> dict:
    import pika
    setup = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    setup.channel().queue_declare(queue)
    ctx = mp.get_context("fork")
    ready, go, results = ctx.Event(), ctx.Event(), ctx.Queue()
    consumer = ctx.Process(target=consumer_fn or pika_consumer, args=(port, queue, messages, ready, results))
    producer = ctx.Process(target=producer_fn or pika_producer, args=(port, queue, messages, size, go))
    consumer.start()
    producer.start()
    ready.wait(60)
    cpu0 = cpu_seconds(pid)
    start = time.perf_counter()
    go.set()
    end = results.get(timeout=600)
    cpu = cpu_seconds(pid) - cpu0
    producer.join(60)
    consumer.join(60)
    setup.channel().queue_delete(queue)
    setup.close()
    return {"msgs_per_s": messages / (end - start), "server_cpu_s_per_100k": cpu / messages * 100_000}


def aio_run(port, pid, queue, messages, size) -> dict:
    return pika_run(port, pid, queue, messages, size, aio_producer, aio_consumer)


RUNS = {"raw": raw_run, "pika": pika_run, "aio": aio_run}


# ---- main -------------------------------------------------------------------------------------------
def _median(runs):
    return {k: round(statistics.median(r[k] for r in runs), 3 if "cpu" in k else 0) for k in runs[0]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.amqp_wire", description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["raw", "pika", "aio"])
    parser.add_argument("--messages", type=int, default=None)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rabbitmq", action="store_true", help="also run against Debian's rabbitmq-server")
    args = parser.parse_args(argv)
    messages = args.messages or (200_000 if args.what == "raw" else 50_000)
    report = {"what": args.what, "messages": messages, "size": args.size, "runs": args.runs,
              "load": os.getloadavg()}
    with tempfile.TemporaryDirectory() as data_dir:
        proc, port = start_minibroker(data_dir)
        try:
            fn = RUNS[args.what]
            runs = [fn(port, proc.pid, f"bench-amqp-{i}", messages, args.size) for i in range(args.runs)]
            report["minibroker"] = _median(runs)
            report["minibroker_runs"] = runs
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    if args.rabbitmq:
        rabbit = start_rabbitmq()
        try:
            port = rabbit.endpoint["port"]
            fn = RUNS[args.what]
            runs = [fn(port, rabbit.pid, f"bench-amqp-{i}", messages, args.size) for i in range(args.runs)]
            report["rabbitmq"] = _median(runs)
            report["rabbitmq_runs"] = runs
            report["rabbitmq_version"] = rabbit.version
        finally:
            rabbit.stop()      # and its epmd
    report["load_after"] = os.getloadavg()
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
