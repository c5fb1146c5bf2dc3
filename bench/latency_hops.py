"""Where one record's time goes in the latency bench: its path through minilog, hop by hop.

    python -m bench.latency_hops [--rate 10000] [--seconds 3] [--runs 3] [--producer library|raw]
                                 [--json FILE]

The path of `python -m bench.minilog_clients --only latency`: a confluent-style producer with
`linger.ms` 0 (or, with `--producer raw`, a bare connection sending one produce request per
record), a minilog server, and a confluent-style consumer polling at the end of the topic. Five
clocks are read along the way, all `time.time_ns` (the one clock the three processes share):

    stamp         the producer's send time, carried in the record's value (as the latency bench)
    server rx     the server receives the produce that brings it (`ClientConnection.data_received`)
    reply start   the server starts writing the fetch reply that carries it (`fetch_response.send_rows`,
                  or `MinilogServer._send_fetch` for a fetch session's)
    reply end     ... and has written it
    consumer wake the consumer's receive returns with the reply (`ClientConnectionState.receive_into`;
                  the wait is in the receive itself, `RpcConnection.receive_within`)
    returned      `Consumer.poll` returns it

The server runs in a child process with those two methods wrapped by functions that only read
the clock. A record takes one of two paths:

- *parked*: a fetch was parked on the server when the record landed, so its reply was written
  inside the produce that brought it (`MinilogServer._park_fetch`), carrying that record alone;
- *waited*: no fetch was parked (the last reply was still on its way, being decoded, or the next
  fetch was on its way), so the record waited on the server for the consumer's next fetch.

It prints, per run, the p50 of all records and of the parked ones, how many took each path,
records per fetch reply, and the median of each hop on the parked path; then the same for the
records that waited, with their wait split out: the produce that brought the record
(`PartitionLog.append` is timed too), then the consumer's fetch arriving and being answered at
once with it. A consumer that keeps
up has every record parked; the gap between the two p50s is what waiting for fetches costs
(docs/clients-minilog.md, "Latency at 10,000 records/s").
"""

import argparse
import bisect
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOPS = ("stamp->server rx", "server rx->reply start", "reply write", "reply end->consumer wake",
        "consumer wake->returned")
# A waited record's path: its produce lands, then it waits for the consumer's next fetch.
WAITED_HOPS = ("stamp->server rx", "server rx->fetch rx", "fetch rx->reply start", "reply write",
               "reply end->consumer wake", "consumer wake->returned")


# ---- the instrumented server (a child process) -------------------------------------------
def serve(data_dir: str, out: str) -> None:
    """Run minilog with the clocks read at data_received and around each fetch reply; on
    SIGUSR1 write to `out` one row per reply, `[high watermark, rx, start, end, answered a
    fetch]`, and one per append, `[first offset, last offset, rx of the produce]`, and exit."""
    from minilog import server as minilog_server
    from minilog.__main__ import main
    from serverbase import connection

    from minilog.storage.log import PartitionLog

    now = time.time_ns
    last_rx = [0, None]   # when the last data_received began, and on which connection
    replies = []
    appends = []          # [first offset, last offset, rx of the produce that appended them]
    data_received = connection.ClientConnection.data_received
    send_fetch = minilog_server.MinilogServer._send_fetch
    send_rows = minilog_server.send_rows
    append = PartitionLog.append

    def timed_data_received(conn, data):
        last_rx[0], last_rx[1] = now(), conn.id
        return data_received(conn, data)

    def timed(write, conn, rows):
        start = now()
        result = write()
        end = now()
        for row in rows:
            # A reply written while handling its own consumer's request answered that fetch at
            # once (records were waiting); otherwise an append on another connection woke it.
            replies.append((row[3], last_rx[0], start, end, last_rx[1] == conn.id))
        return result

    # A fetch's reply is written by `send_rows` (a parked fetch's from inside the append that
    # woke it), a fetch session's by `_send_fetch`: each is timed once.
    def timed_send_rows(conn, rid, rows, use_sendfile=True):
        return timed(lambda: send_rows(conn, rid, rows, use_sendfile), conn, rows)

    def timed_send_fetch(server, conn, rid, rows, session=None):
        if session is None:
            return send_fetch(server, conn, rid, rows, session)
        return timed(lambda: send_fetch(server, conn, rid, rows, session), conn, rows)

    def timed_append(plog, batches, now_ms=None):
        info = append(plog, batches, now_ms)
        appends.append((info.base_offset, info.last_offset, last_rx[0]))
        return info

    def dump(*_):
        with open(out, "w") as f:
            json.dump({"replies": replies, "appends": appends}, f)
        os._exit(0)

    connection.ClientConnection.data_received = timed_data_received
    minilog_server.MinilogServer._send_fetch = timed_send_fetch
    minilog_server.send_rows = timed_send_rows
    PartitionLog.append = timed_append
    signal.signal(signal.SIGUSR1, dump)
    main(["--port", "0", "--kafka-port", "off", "--data-dir", data_dir])


# ---- the consumer (a child process) --------------------------------------------------------
def consume(bootstrap: str, topic: str, records: int, out: str) -> None:
    """The latency bench's consumer (`bench.minilog_clients.poll_at_end`), with its receives
    timed; writes `[offset, stamp, wake, returned]` per record to `out`."""
    from bench.minilog_clients import _STAMP, poll_at_end
    from clients.protocol.client_state import ClientConnectionState

    woke = [0]
    receive_into = ClientConnectionState.receive_into

    # Where received bytes reach Python: a wait for data is made in the receive itself
    # (`RpcConnection.receive_within`), so this is the first Python the wake-up runs.
    def timed_receive_into(state, nbytes, on_push, on_async_error):
        woke[0] = time.time_ns()
        return receive_into(state, nbytes, on_push, on_async_error)

    ClientConnectionState.receive_into = timed_receive_into
    rows = [(m.offset(), _STAMP.unpack_from(m.value())[0], woke[0], returned)
            for m, returned in poll_at_end(bootstrap, topic, records)]
    with open(out, "w") as f:
        json.dump(rows, f)


# ---- one run -------------------------------------------------------------------------------
def _child(*args, stdout=subprocess.PIPE):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", "bench.latency_hops", *args], stdout=stdout,
                            stderr=subprocess.DEVNULL, cwd=ROOT, env=env, text=True)


def _median_us(values) -> float | None:
    return round(statistics.median(values) / 1000, 1) if values else None


def analyse(replies: list, records: list, appends: list = ()) -> dict:
    """Join the server's replies and the consumer's records by offset (a reply is known by its
    high watermark: the offset after the last record it carried, at the time it was written)."""
    by_last = {hw - 1: (rx, start, end, answered_fetch) for hw, rx, start, end, answered_fetch in replies}
    waited = _waited_hops(replies, records, appends)
    per_wake: dict = {}
    for _, _, wake, _ in records:
        per_wake[wake] = per_wake.get(wake, 0) + 1
    latencies = sorted(ret - stamp for _, stamp, _, ret in records)
    parked, hops = [], {h: [] for h in HOPS}
    for offset, stamp, wake, ret in records:
        reply = by_last.get(offset)
        if reply is None or reply[3] or per_wake[wake] != 1:
            continue   # waited: it shared its reply, or its reply answered a fetch on arrival
        rx, start, end, _ = reply
        parked.append(ret - stamp)
        for hop, (a, b) in zip(HOPS, ((stamp, rx), (rx, start), (start, end), (end, wake), (wake, ret))):
            hops[hop].append(b - a)
    pct = lambda q: round(latencies[min(int(q * len(latencies)), len(latencies) - 1)] / 1000, 1)  # noqa: E731
    return {"records": len(records), "p50_us": pct(0.5), "p99_us": pct(0.99),
            "parked": len(parked), "parked_p50_us": _median_us(parked),
            "records_per_reply": round(len(records) / max(len(per_wake), 1), 2),
            "parked_hops_us": {h: _median_us(v) for h, v in hops.items()},
            "waited": waited["records"], "waited_p50_us": waited["p50_us"], "waited_hops_us": waited["hops_us"]}


def _waited_hops(replies: list, records: list, appends: list) -> dict:
    """The hops of the records that waited on the server for the consumer's next fetch: the
    reply that carried each is the first one answering a fetch on arrival whose high
    watermark is past it, and the produce that brought it is the append that holds its offset."""
    produced = {o: rx for first, last, rx in appends for o in range(first, last + 1)}   # offset -> its produce's rx
    answered = sorted((hw, rx, start, end) for hw, rx, start, end, on_arrival in replies if on_arrival)
    his = [r[0] for r in answered]
    lat, hops = [], {h: [] for h in WAITED_HOPS}
    for offset, stamp, wake, ret in records:
        i = bisect.bisect_right(his, offset)
        produce_rx = produced.get(offset)
        if i == len(answered) or produce_rx is None:
            continue
        hw, fetch_rx, start, end = answered[i]
        if fetch_rx < produce_rx or not (end <= wake <= ret):
            continue   # not this reply's record after all (a parked fetch's reply came between)
        lat.append(ret - stamp)
        for hop, (a, b) in zip(WAITED_HOPS, ((stamp, produce_rx), (produce_rx, fetch_rx), (fetch_rx, start),
                                             (start, end), (end, wake), (wake, ret))):
            hops[hop].append(b - a)
    return {"records": len(lat), "p50_us": _median_us(lat), "hops_us": {h: _median_us(v) for h, v in hops.items()}}


def one_run(rate: int, seconds: float, producer: str) -> dict:
    from bench.minilog_clients import role_latency_produce, role_latency_produce_raw
    records = int(rate * seconds)
    with tempfile.TemporaryDirectory(prefix="latency-hops-") as tmp:
        replies_file, records_file = os.path.join(tmp, "replies.json"), os.path.join(tmp, "records.json")
        server = _child("--serve", os.path.join(tmp, "data"), replies_file)
        try:
            for line in server.stdout:
                m = re.search(r"listening on ([\d.]+):(\d+)", line)
                if m:
                    bootstrap = f"{m.group(1)}:{m.group(2)}"
                    break
            else:
                raise SystemExit("minilog did not start")
            topic = "hops"
            role_latency_produce_raw(bootstrap, topic, 1, 100, 1000)   # makes the topic
            consumer = _child("--consume", bootstrap, topic, str(records), records_file)
            assert consumer.stdout.readline().strip() == "ready"
            produce = role_latency_produce if producer == "library" else role_latency_produce_raw
            produce(bootstrap, topic, records, 100, rate)
            consumer.wait(timeout=180)
        finally:
            server.send_signal(signal.SIGUSR1)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        with open(replies_file) as f:
            served = json.load(f)
        with open(records_file) as f:
            got = json.load(f)
    return analyse(served["replies"], got, served["appends"])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(*sys.argv[2:4])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--consume":
        consume(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=10_000, help="records per second")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--producer", choices=("library", "raw"), default="library")
    ap.add_argument("--json", help="write the runs here")
    args = ap.parse_args()
    runs = []
    for i in range(args.runs):
        r = one_run(args.rate, args.seconds, args.producer)
        runs.append(r)
        hops = " | ".join(f"{h} {v}" for h, v in r["parked_hops_us"].items())
        print(f"run {i + 1}: p50 {r['p50_us']} us (parked {r['parked_p50_us']} us), p99 {r['p99_us']} us; "
              f"{r['parked']} of {r['records']} records parked, {r['records_per_reply']} records per reply; "
              f"parked hops (medians, us): {hops}", flush=True)
        waited = " | ".join(f"{h} {v}" for h, v in r["waited_hops_us"].items())
        print(f"       {r['waited']} records waited for a fetch, p50 {r['waited_p50_us']} us; "
              f"their hops (medians, us): {waited}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rate_per_s": args.rate, "producer": args.producer, "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
