"""The floor this machine sets for the end-to-end latency of a log: three processes, no broker.

    python -m bench.latency_floor [--rate 10000] [--seconds 3] [--runs 3] [--json FILE]

A producer process sends 100-byte length-prefixed records at a fixed rate over TCP to a
"server" process (uvloop), which appends each to a file with one `os.write` and hands it to a
consumer process, and answers the producer with 4 bytes. The consumer stamps each record on
arrival. Two ways of handing records on, run alternately:

- `longpoll`: the consumer asks for the next records with a fetch, which the server parks
  until a record lands (what minilog's `fetch` does, one fetch in flight).
- `push`: the server writes each record to the consumer as it lands (what a subscription
  with a byte credit would do; minibroker's deliveries work this way).

There is no msgpack, no record batch, no index and no client library: the figures are what the
2 vCPUs, the loopback and the wake-ups between three processes cost by themselves, to set the
`python -m bench.minilog_clients --only latency` figures against (docs/clients-minilog.md,
"Latency at 10,000 records/s"). The consumer's CPU per record is printed beside the
percentiles.
"""

import argparse
import asyncio
import json
import os
import signal
import socket
import struct
import tempfile
import time

from bench.pacing import paced

_LENGTH = struct.Struct(">I")
_STAMP = struct.Struct(">q")
_RECORD = 100
_FETCH, _HELLO = b"F", b"C"


def _frames(buf: bytearray):
    """Complete frames off the front of `buf` (removed from it)."""
    out = []
    while len(buf) >= 4:
        n = _LENGTH.unpack_from(buf)[0]
        if len(buf) < 4 + n:
            break
        out.append(bytes(buf[4:4 + n]))
        del buf[:4 + n]
    return out


def _serve(mode: str, path: str, port_to) -> None:
    """The server process: one uvloop loop; the consumer says hello first."""
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
    state = {"consumer": None, "parked": False, "pending": []}

    class Connection(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            self.buf = bytearray()

        def data_received(self, data):
            self.buf += data
            for body in _frames(self.buf):
                if body == _HELLO:
                    state["consumer"] = self.transport
                    self.transport.write(b"\0\0\0\0")  # the consumer starts the producer then
                elif body == _FETCH:
                    if state["pending"]:
                        self.transport.write(b"".join(state["pending"]))
                        state["pending"].clear()
                    else:
                        state["parked"] = True
                else:
                    os.write(fd, body)
                    frame = _LENGTH.pack(len(body)) + body
                    if mode == "push" or state["parked"]:
                        state["parked"] = False
                        state["consumer"].write(frame)
                    else:
                        state["pending"].append(frame)
                    self.transport.write(b"\0\0\0\0")

    async def main():
        server = await asyncio.get_running_loop().create_server(Connection, "127.0.0.1", 0)
        port_to.sendall(_LENGTH.pack(server.sockets[0].getsockname()[1]))
        port_to.close()
        await asyncio.Event().wait()

    asyncio.run(main())


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _consume(mode: str, port: int, records: int, report_to) -> None:
    sock = _connect(port)
    # A record that never comes (a producer that died) ends the run with what arrived, not a hang.
    sock.settimeout(30)
    sock.sendall(_LENGTH.pack(1) + _HELLO)
    if sock.recv(4, socket.MSG_WAITALL) != b"\0\0\0\0":
        raise RuntimeError("the server did not take the consumer's hello")
    report_to.sendall(b"R")  # registered: records sent from now on reach this consumer
    fetch = _LENGTH.pack(1) + _FETCH
    if mode == "longpoll":
        sock.sendall(fetch)
    latencies, buf = [], bytearray()
    while len(latencies) < records:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            break
        if not data:
            break
        now = time.time_ns()
        buf += data
        for body in _frames(buf):
            latencies.append((now - _STAMP.unpack_from(body)[0]) / 1000.0)
        if mode == "longpoll":
            sock.sendall(fetch)
    latencies.sort()
    pct = lambda q: latencies[min(int(q * len(latencies)), len(latencies) - 1)]  # noqa: E731
    report_to.sendall(json.dumps({"p50_us": pct(0.5), "p99_us": pct(0.99), "p999_us": pct(0.999),
                                  "consumer_cpu_us_per_record": time.process_time() / len(latencies) * 1e6,
                                  "records": len(latencies)}).encode())
    report_to.close()


def _produce(port: int, records: int, rate: int) -> None:
    sock = _connect(port)
    padding = b"x" * (_RECORD - _STAMP.size)
    for _ in paced(records, rate):
        # sendall on a blocking socket: a non-blocking send could write part of a record (or
        # none) when the server falls behind on a loaded machine, and the run would then wait
        # for records that never come.
        sock.sendall(_LENGTH.pack(_RECORD) + _STAMP.pack(time.time_ns()) + padding)
        try:
            sock.recv(65536, socket.MSG_DONTWAIT)  # the server's answers, whenever they are there
        except BlockingIOError:
            pass


def _child(fn, *args) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            fn(*args)
        finally:
            os._exit(0)
    return pid


def one_run(mode: str, rate: int, seconds: float) -> dict:
    records = int(rate * seconds)
    with tempfile.TemporaryDirectory(prefix="latency-floor-") as tmp:
        port_from, port_to = socket.socketpair()
        server = _child(_serve, mode, os.path.join(tmp, "log"), port_to)
        port_to.close()
        port = _LENGTH.unpack(port_from.recv(4))[0]
        report_from, report_to = socket.socketpair()
        consumer = _child(_consume, mode, port, records, report_to)
        report_to.close()
        try:
            if report_from.recv(1) != b"R":
                raise RuntimeError("the consumer did not start")
            producer = _child(_produce, port, records, rate)
            os.waitpid(producer, 0)
            result = json.loads(report_from.recv(65536).decode())
            os.waitpid(consumer, 0)
        finally:
            os.kill(server, signal.SIGKILL)
            os.waitpid(server, 0)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=10_000, help="records per second")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--runs", type=int, default=3, help="runs of each mode, alternating")
    ap.add_argument("--json", help="write the runs here")
    args = ap.parse_args()
    print(f"load average at start: {' '.join(open('/proc/loadavg').read().split()[:3])}")
    runs: dict = {"push": [], "longpoll": []}
    for _ in range(args.runs):
        for mode in runs:
            r = one_run(mode, args.rate, args.seconds)
            runs[mode].append(r)
            print(f"{mode:8} p50 {r['p50_us']:.0f} us, p99 {r['p99_us']:.0f} us, p99.9 {r['p999_us']:.0f} us; "
                  f"consumer {r['consumer_cpu_us_per_record']:.1f} cpu us/record")
    for mode, rs in runs.items():
        p50s = sorted(r["p50_us"] for r in rs)
        print(f"{mode:8} median p50 {p50s[len(p50s) // 2]:.0f} us over {len(rs)} runs at {args.rate:,} records/s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rate": args.rate, "seconds": args.seconds, "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
