"""The server's own CPU for one record's path, measured in one process.

    python -m bench.minilog_server_path [--records 20000] [--runs 3] [--json out.json]

A real `MinilogServer` (broker, storage engine, a data directory under /tmp) is driven through
two `ClientConnection`s with the frames a consumer and a producer send. `data_received`, the
decoding, dispatch, broker, append and fetch reply all run as they do on the wire. Only the
transport is replaced: `_KeptWrites` keeps the replies instead of writing to a socket. So the
figures are the server's Python and storage work alone. They leave out the wake-ups, the other
processes and the machine's load, which decide `bench/minilog_clients.py --only latency`
(docs/clients-minilog.md, "The server hop, cut").

For each record, five steps, timed one by one:

1. the consumer's fetch at the log end parks (`max_wait_ms` 500);
2. a produce of one 100-byte record (`acks` 1) appends it and answers the parked fetch inside
   the append;
3. a fetch of that record is answered at once;
4. the streamed case, as the blocking consumer keeps it (docs/minilog.md, "Fetch sessions"):
   on another topic and connection, one session fetch with `answers` 32 is parked; a produce
   appends a record, the fetch answers it, and whatever parks the fetch again runs, loop
   callbacks included: the step ends after one turn of the loop (`asyncio.sleep(0)`), whose
   bare cost (`loop_turn_us`, measured alone) is in the step too. When one answer is left
   the bench sends the successor fetch (offsets nil, `answers` 32), outside the clock, as the
   consumer does.
5. the streamed case as it mostly runs in the latency bench (docs/clients-minilog.md, "The
   streamed fetch parked again without a read"): on a third topic, a produce arrives while the
   stream waits for the loop callback that starts it again, so no fetch is parked; the
   callback's read answers the record on the next turn of the loop and schedules the next
   start, which the next record again beats. The step is the produce and one turn of the loop
   (`loop_turn_us` included). When the stream's answers are used up, a new streamed fetch and
   two records in one read set the chain up again, outside the clock. Step 4's turns of the
   loop would park the stream between two records, so this step runs after the others, in a
   loop of its own (its caches are warmer than theirs).

Each step runs between the others, so caches are as warm as between requests of a busy
server, and not as cold as after the 100 us pauses of the latency bench. Prints the median of
each step over `--records`, for each run. Every parked fetch must be answered by its produce:
the bench checks that its path ran and fails otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time

import msgpack

from clients.protocol.framing import LENGTH
from clients.record_batch import build_batch

STEPS = ("park_fetch_us", "produce_and_parked_reply_us", "immediate_fetch_us", "produce_and_streamed_reply_us",
         "loop_turn_us", "produce_and_loop_read_reply_us")
STREAM_ANSWERS = 32


class _KeptWrites:
    """The transport of one bench connection: counts the replies instead of sending them."""

    def __init__(self):
        self.writes = 0
        self.last = b""

    def write(self, data) -> None:
        self.writes += 1
        self.last = data

    def writelines(self, pieces) -> None:
        self.writes += 1

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name, default=None):
        return default

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _frame(request_id: int, op: str, args: dict) -> bytes:
    body = msgpack.packb([0, request_id, op, args], use_bin_type=True)
    return LENGTH.pack(len(body)) + body


def _stream_fetch(request_id: int, offset: int | None, topic: str = "stream") -> bytes:
    return _frame(request_id, "fetch", {"session": 1, "answers": STREAM_ANSWERS, "max_wait_ms": 500,
                                        "partitions": [[topic, 0, offset, 1 << 20]]})


def _produce(request_id: int, topic: str, value: bytes) -> bytes:
    return _frame(request_id, "produce", {"acks": 1, "data": [
        [topic, 0, build_batch([(None, value, int(time.time() * 1000), None)])]]})


async def _chain(producer, chainer, rid: int, offset: int | None, value: bytes) -> None:
    """Set step 5's chain up: a streamed fetch parked, then two records in one read: the first
    answered by the parked fetch, the second read by the loop callback that follows."""
    await asyncio.sleep(0)   # what the stream before it left to the loop runs first
    chainer.data_received(_stream_fetch(rid, offset, "chain"))
    producer.data_received(_produce(rid, "chain", value) + _produce(rid, "chain", value))
    await asyncio.sleep(0)


def _more_and_start(frame: bytes) -> tuple:
    """A streamed answer's `more` and the offset its row was read from."""
    _, _, result = msgpack.unpackb(frame[LENGTH.size:], raw=False)
    return result.get("more"), result["results"][0][6]


async def _one_run(records: int, size: int) -> dict:
    from minilog.server import MinilogServer
    from serverbase.connection import ClientConnection

    with tempfile.TemporaryDirectory(prefix="bench-server-path-") as data_dir:
        server = MinilogServer(data_dir=data_dir)
        await server.open()
        try:
            server.broker.create_topic("path", 1)
            server.broker.create_topic("stream", 1)
            consumer, producer = ClientConnection(server, 1), ClientConnection(server, 2)
            streamer, chainer = ClientConnection(server, 3), ClientConnection(server, 4)
            server.broker.create_topic("chain", 1)
            for conn in (consumer, producer, streamer, chainer):
                conn.transport = _KeptWrites()
                conn.handshake_done = True
            stream_rid = 1
            streamer.data_received(_stream_fetch(stream_rid, 0))
            value = b"x" * size
            clock = time.perf_counter_ns
            spent = {step: [] for step in STEPS}
            for i in range(records):
                # Frames are made before each step's clock starts: the clients' work, not the server's.
                park = _frame(3 * i + 1, "fetch", {"max_wait_ms": 500, "partitions": [["path", 0, i, 1 << 20]]})
                produce = _frame(3 * i + 2, "produce", {"acks": 1, "data": [
                    ["path", 0, build_batch([(None, value, int(time.time() * 1000), None)])]]})
                again = _frame(3 * i + 3, "fetch", {"max_wait_ms": 500, "partitions": [["path", 0, i, 1 << 20]]})
                answered = consumer.transport.writes
                t0 = clock()
                consumer.data_received(park)
                t1 = clock()
                producer.data_received(produce)
                t2 = clock()
                if consumer.transport.writes != answered + 1:
                    raise RuntimeError(f"record {i}: the produce did not answer the parked fetch")
                consumer.data_received(again)
                t3 = clock()
                if consumer.transport.writes != answered + 2:
                    raise RuntimeError(f"record {i}: the fetch of the record was not answered at once")
                spent["park_fetch_us"].append(t1 - t0)
                spent["produce_and_parked_reply_us"].append(t2 - t1)
                spent["immediate_fetch_us"].append(t3 - t2)
                # 4: the streamed fetch.
                produce = _frame(3 * i + 2, "produce", {"acks": 1, "data": [
                    ["stream", 0, build_batch([(None, value, int(time.time() * 1000), None)])]]})
                answered = streamer.transport.writes
                t0 = clock()
                producer.data_received(produce)
                await asyncio.sleep(0)
                t1 = clock()
                await asyncio.sleep(0)
                t2 = clock()
                if streamer.transport.writes != answered + 1:
                    raise RuntimeError(f"record {i}: the produce did not answer the streamed fetch")
                more, start = _more_and_start(streamer.transport.last)
                if start != i:
                    raise RuntimeError(f"record {i}: the streamed answer starts at {start}")
                if more == 1:   # the consumer's successor, sent when one answer is left
                    stream_rid += 1
                    streamer.data_received(_stream_fetch(stream_rid, None))
                spent["produce_and_streamed_reply_us"].append(t1 - t0)
                spent["loop_turn_us"].append(t2 - t1)
                if i % 100 == 99:
                    await asyncio.sleep(0)   # let the loop run its callbacks, as a server does
            # 5: the stream started again by its loop callback, which each record beats.
            chain_rid = 1
            await _chain(producer, chainer, chain_rid, 0, value)
            for i in range(records):
                offset = server.broker.topics.get_log("chain", 0).log_end_offset
                produce = _produce(3 * i + 2, "chain", value)
                answered = chainer.transport.writes
                t0 = clock()
                producer.data_received(produce)
                appended = chainer.transport.writes
                await asyncio.sleep(0)
                t1 = clock()
                if appended != answered or chainer.transport.writes != answered + 1:
                    raise RuntimeError(f"record {i}: the chained record was not answered by the loop's read")
                more, start = _more_and_start(chainer.transport.last)
                if start != offset:
                    raise RuntimeError(f"record {i}: the chained answer starts at {start}, not {offset}")
                spent["produce_and_loop_read_reply_us"].append(t1 - t0)
                if more == 0:   # the stream used up: a new one, and the chain set up again
                    chain_rid += 1
                    await _chain(producer, chainer, chain_rid, None, value)
            if (server.broker.topics.get_log("path", 0).log_end_offset != records
                    or server.broker.topics.get_log("stream", 0).log_end_offset != records):
                raise RuntimeError("not every record was appended")
            return {step: round(statistics.median(v) / 1000, 2) for step, v in spent.items()}
        finally:
            await server.stop()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    import uvloop
    load = os.getloadavg()
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    runs = []
    for run in range(args.runs):
        result = uvloop.run(_one_run(args.records, args.size))
        runs.append(result)
        print(f"run {run + 1}: " + ", ".join(f"{step} {us:.2f}" for step, us in result.items()), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"records": args.records, "size": args.size, "load_average": load, "runs": runs}, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
