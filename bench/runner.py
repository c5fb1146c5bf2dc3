"""Runs one case against one system: separate processes for producers and consumers, clocks,
counting, timeouts, and the figures of the run.

The parent process never imports a client library: it forks workers (bench/systems adapters
are built inside them) and talks to them over pipes and shared counters. Every wait has a
deadline, and every child is killed on the way out, so a broker that stalls costs a bounded
time and shows as a failed run, never a hung bench.

Timing: producers get one start time `t0` (CLOCK_MONOTONIC, shared by every process on the
machine). Closed-loop producers send as fast as the system takes them; open-loop producers
(`case.rate`) stamp each message with its *intended* send time t0 + i/rate and send everything
that is due, so when the system falls behind, the delay shows up as latency at the consumer
instead of silently lowering the offered load (no coordinated omission).
"""

import asyncio
import json
import multiprocessing
import os
import signal
import time
import traceback
import uuid
from array import array

from . import stats
from .payload import HEADER, HEADER_SIZE, BodyMaker, now_ns
from .progress import Progress
from .systems import make_adapter
from .systems.base import Unsupported

CTX = multiprocessing.get_context("fork")
CLOSED_LOOP_BATCH = 100
WARMUP_SHARE = 0.1
READY_TIMEOUT = 60.0


class RunFailed(Exception):
    pass


# ---------------------------------------------------------------- child processes

def _child_main(role, system, endpoint, case, prefix, arg, pipe, counter, stop):
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # the parent decides when we stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)     # and may end us at once (not inherited)
    try:
        try:
            import uvloop
            uvloop.install()
        except ImportError:
            pass
        adapter = make_adapter(system, endpoint)
        coro = {"setup": _admin_setup, "teardown": _admin_teardown, "producer": _producer,
                "consumer": _consumer}[role]
        result = asyncio.run(coro(adapter, case, prefix, arg, pipe, counter, stop))
        pipe.send(("done", result))
    except BaseException as e:
        tb = traceback.format_exc().strip().splitlines()
        pipe.send(("error", f"{role}: {type(e).__name__}: {e} [{tb[-3].strip() if len(tb) > 2 else ''}]"))
    finally:
        pipe.close()


async def _admin_setup(adapter, case, prefix, arg, pipe, counter, stop):
    await adapter.setup(case, prefix)
    return {}


async def _admin_teardown(adapter, case, prefix, arg, pipe, counter, stop):
    await adapter.teardown(case, prefix)
    return {}


async def _producer(adapter, case, prefix, index, pipe, counter, stop):
    producer = await adapter.open_producer(case, prefix, index)
    pipe.send(("ready", None))
    if not pipe.poll(READY_TIMEOUT * 2):
        raise RuntimeError("no start signal from the runner")
    t0 = pipe.recv()
    cpu0 = _cpu_now()
    share = _share(case.count, case.producers, index) if case.count else None
    maker = BodyMaker(case.size, case.json_body)
    keys_here = max(1, case.keys // case.producers)
    seqs = [0] * keys_here
    lanes, shape, nprod = case.lanes, case.shape, case.producers
    sent = 0
    unsent = 0
    end = t0 + int(case.duration * 1e9)

    def build(n_from, n_to, stamp_of):
        items = []
        for n in range(n_from, n_to):
            k = n % keys_here
            key = k * nprod + index
            seq = seqs[k]
            seqs[k] = seq + 1
            lane = key % lanes if shape == "keyed" else n % lanes
            items.append((lane, key, maker.make(stamp_of(n), seq, key)))
        return items

    if case.rate is None:
        while not stop.is_set():
            todo = CLOSED_LOOP_BATCH if share is None else min(CLOSED_LOOP_BATCH, share - sent)
            if todo <= 0:
                break
            t = now_ns()
            if share is None and t >= end:
                break
            await producer.send_batch(build(sent, sent + todo, lambda n: t))
            sent += todo
            counter.value = sent
    else:
        rate = case.rate / nprod
        total = share if share is not None else int(case.duration * rate)
        step = 1e9 / rate
        # Past this point the producer gives up on its schedule and counts the rest as unsent.
        give_up = end + int(max(2.0, case.duration) * 1e9)
        while sent < total and not stop.is_set():
            t = now_ns()
            if t > give_up:
                unsent = total - sent
                break
            due = min(total, int((t - t0) / step) + 1)
            if due > sent:
                due = min(due, sent + 1000)
                await producer.send_batch(build(sent, due, lambda n: t0 + int(n * step)))
                sent = due
                counter.value = sent
            else:
                await asyncio.sleep(min(0.002, (t0 + sent * step - t) / 1e9))
    await producer.flush()
    t_done = now_ns()
    cpu = _cpu_now() - cpu0
    await producer.close()
    return {"sent": sent, "unsent": unsent, "t0": t0, "t_done": t_done,
            "cpu_s": cpu, "wall_s": (t_done - t0) / 1e9}


def _cpu_now() -> float:
    """CPU seconds of this whole process, every thread included (librdkafka's among them)."""
    t = os.times()
    return t.user + t.system


def _share(total, parts, index):
    return total // parts + (1 if index < total % parts else 0)


async def _consumer(adapter, case, prefix, arg, pipe, counter, stop):
    group, index, record_latency = arg
    consumer = await adapter.open_consumer(case, prefix, group, index)
    t_ready = now_ns()
    cpu0 = _cpu_now()
    pipe.send(("ready", None))
    lat = array("q")
    sent_at = array("q")        # intended send times, so the parent can drop the warm-up
    count = first = last = violations = 0
    last_seq: dict[int, int] = {}
    check_order, parse = case.check_order, case.json_body
    unpack = HEADER.unpack_from
    while not stop.is_set():
        bodies = await consumer.poll(0.05)
        if not bodies:
            continue
        now = now_ns()
        if not first:
            first = now
        last = now
        for b in bodies:
            t, seq, key = unpack(b)
            if record_latency:
                lat.append((now - t) // 1000)
                sent_at.append(t)
            if check_order:
                if seq <= last_seq.get(key, -1):
                    violations += 1
                last_seq[key] = seq
            if parse:
                json.loads(b[HEADER_SIZE:])
        count += len(bodies)
        counter.value = count
    cpu = _cpu_now() - cpu0
    t_end = now_ns()
    await consumer.close()
    return {"count": count, "first": first, "last": last, "violations": violations,
            "t_ready": t_ready, "cpu_s": cpu, "wall_s": (t_end - t_ready) / 1e9,
            "lat": lat.tobytes(), "sent_at": sent_at.tobytes()}


# ---------------------------------------------------------------- parent side

class Worker:
    def __init__(self, role, system, endpoint, case, prefix, arg, stop):
        self.role = role
        self.pipe, child_pipe = CTX.Pipe()
        self.counter = CTX.RawValue("q", 0)
        self.proc = CTX.Process(target=_child_main, daemon=True,
                                args=(role, system, endpoint, case, prefix, arg, child_pipe,
                                      self.counter, stop))
        self.proc.start()
        child_pipe.close()
        self.result = None
        self.error = None
        self.ready = False

    def pump(self) -> None:
        """Read whatever the child has said so far (never blocks)."""
        try:
            while self.result is None and self.error is None and self.pipe.poll():
                kind, body = self.pipe.recv()
                if kind == "ready":
                    self.ready = True
                elif kind == "done":
                    self.result = body
                else:
                    self.error = body
        except (EOFError, OSError):
            if self.result is None and self.error is None:
                self.error = f"{self.role}: process exited (status {self.proc.exitcode})"

    @property
    def finished(self) -> bool:
        self.pump()
        return self.result is not None or self.error is not None

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)


STALL_TIMEOUT = 15.0


def _wait(workers, cond, timeout, what, on_tick=None, stall=False):
    """Poll until cond holds for every worker; fail on a child's error or the deadline.

    With `stall`, also give up when the workers' counters have not moved for STALL_TIMEOUT
    seconds: a broker that stopped delivering should cost seconds, not the whole deadline.
    """
    now = time.monotonic()
    deadline = now + timeout
    progress, moved = None, now
    while True:
        for w in workers:
            w.pump()
            if w.error:
                raise RunFailed(w.error)
        if all(cond(w) for w in workers):
            return
        now = time.monotonic()
        if now > deadline:
            raise RunFailed(f"timed out after {timeout:.0f} s waiting for {what}")
        if stall:
            total = sum(w.counter.value for w in workers)
            if total != progress:
                progress, moved = total, now
            elif now - moved > STALL_TIMEOUT:
                raise RunFailed(f"timed out: stalled, nothing new for {STALL_TIMEOUT:.0f} s "
                                f"while waiting for {what}")
        if on_tick:
            on_tick()
        time.sleep(0.02)


def _admin(role, system, endpoint, case, prefix, timeout=60.0):
    stop = CTX.Event()
    w = Worker(role, system, endpoint, case, prefix, None, stop)
    try:
        _wait([w], lambda w: w.finished, timeout, f"{role} of {system}")
    finally:
        w.kill()


def run_case(server, case, progress: Progress | None = None, options: dict | None = None) -> dict:
    """One run of `case` against the system behind `server` (bench/systems/servers.py).

    Returns the run's figures; raises Unsupported when the system cannot do the case and
    RunFailed when it could not finish (the message says what went wrong).
    """
    options = options or {}
    system, endpoint = server.system, server.endpoint
    from .systems import adapter_class
    adapter_class(system)(endpoint).check(case)
    prefix = f"bench-{case.workload}-{uuid.uuid4().hex[:8]}"
    drain_timeout = options.get("drain_timeout", max(15.0, case.duration * 3))
    count_timeout = options.get("count_timeout", max(120.0, (case.count or 0) / 1000))
    stop = CTX.Event()
    workers: list[Worker] = []
    peak_rss = [0]
    # Messages sent but not yet received, at its highest: where a producer outruns its consumers
    # one broker throttles the publisher (RabbitMQ's flow control) and another buffers (minibroker),
    # so this and the server's memory say more than the produce rates do.
    peak_backlog = [0]

    def sample_rss():
        r = server.rss()
        if r:
            peak_rss[0] = max(peak_rss[0], r)
        consumers_now = [w for w in workers if w.role == "consumer"]
        if consumers_now and not case.backlog:
            groups = max(1, len(case.groups))
            sent_now = sum(w.counter.value for w in workers if w.role == "producer")
            got_now = sum(w.counter.value for w in consumers_now) / groups
            peak_backlog[0] = max(peak_backlog[0], int(sent_now - got_now))

    def tick(phase, done, total):
        sample_rss()
        if progress:
            progress.update(phase, done, total)

    _admin("setup", system, endpoint, case, prefix)
    cpu_start, wall_start = server.cpu(), time.monotonic()
    try:
        def spawn_consumers(groups, record_latency):
            cs = [Worker("consumer", system, endpoint, case, prefix, (g, i, record_latency), stop)
                  for g in groups for i in range(case.consumers)]
            workers.extend(cs)
            return cs

        consumers = [] if case.backlog else spawn_consumers(case.groups, True)
        producers = [Worker("producer", system, endpoint, case, prefix, i, stop)
                     for i in range(case.producers)]
        workers.extend(producers)
        _wait(consumers + producers, lambda w: w.ready, READY_TIMEOUT, "producers and consumers to connect",
              lambda: tick("connecting", 0, 1))
        t0 = now_ns()
        for p in producers:
            p.pipe.send(t0)
        sample_rss()

        produce_timeout = (count_timeout if case.count else case.duration * 2 + 60)
        target = (case.count or 0)
        _wait(producers, lambda w: w.finished, produce_timeout, "producers to finish",
              lambda: tick("producing", sum(p.counter.value for p in producers) if case.count
                           else min(now_ns() - t0, case.duration * 1e9),
                           target or case.duration * 1e9), stall=bool(case.count))
        prod = [p.result for p in producers]
        sent = sum(r["sent"] for r in prod)
        expected = sent * len(case.groups)

        if case.backlog:
            consumers = spawn_consumers(case.groups, False)
            _wait(consumers, lambda w: w.ready, READY_TIMEOUT, "consumers to connect")
        wait_more = count_timeout if case.backlog else drain_timeout
        try:
            _wait(consumers, lambda w: sum(c.counter.value for c in consumers) >= expected,
                  wait_more, "consumers to receive every message",
                  lambda: tick("consuming", sum(c.counter.value for c in consumers), expected),
                  stall=True)
            drained = True
        except RunFailed as e:
            if "timed out" not in str(e):
                raise
            drained = False
        stop.set()
        _wait(consumers, lambda w: w.finished, 30, "consumers to stop")
        cons = [c.result for c in consumers]
        out = _figures(case, t0, prod, cons, expected, backlog=case.backlog)
        out["drained"] = drained
        # Client processes as run, for the report: the same count on every system of a case.
        out["producer_processes"], out["consumer_processes"] = len(producers), len(consumers)

        if case.replay:
            stop2 = CTX.Event()
            replayers = [Worker("consumer", system, endpoint, case, prefix, ("replay", i, False),
                                stop2) for i in range(case.consumers)]
            workers.extend(replayers)
            _wait(replayers, lambda w: w.ready, READY_TIMEOUT, "replay consumers to connect")
            try:
                _wait(replayers, lambda w: sum(c.counter.value for c in replayers) >= sent,
                      count_timeout, "the replay to finish",
                      lambda: tick("replaying", sum(c.counter.value for c in replayers), sent),
                      stall=True)
            except RunFailed as e:
                if "timed out" not in str(e):
                    raise
            stop2.set()
            _wait(replayers, lambda w: w.finished, 30, "replay consumers to stop")
            rep = _figures(case, t0, prod, [r.result for r in replayers], sent, backlog=True)
            out["replay_rate"] = rep["throughput"]
            out["replay_received"] = rep["received"]
        out["peak_rss_mb"] = peak_rss[0] / 2**20 if peak_rss[0] else None
        if not case.backlog:
            out["peak_in_flight"] = peak_backlog[0]
        cpu_end = server.cpu()
        if cpu_start is not None and cpu_end is not None:
            # Share of one core the server used over the run: near 100 % (or more, for a
            # multi-threaded server) means the server was the limit; low means the clients were.
            out["server_cpu_pct"] = 100.0 * (cpu_end - cpu_start) / max(1e-9, time.monotonic() - wall_start)
            out["server_cpu_s"] = cpu_end - cpu_start
        out.update(cpu_figures(out, prod, cons))
        return out
    finally:
        stop.set()
        for w in workers:
            w.pump()
        deadline = time.monotonic() + 5
        for w in workers:
            w.proc.join(max(0.0, deadline - time.monotonic()))
            w.kill()
        try:
            _admin("teardown", system, endpoint, case, prefix, timeout=30)
        except RunFailed:
            pass        # names are unique per run; a leftover queue or topic harms nothing


BUSY_SHARE = 0.85     # a process using this share of a core or more was the limit of its run


def cpu_figures(out: dict, prod: list[dict], cons: list[dict]) -> dict:
    """CPU per 100k messages for the server and for the client processes, and which side was
    the limit, so a reader sees who worked harder for a rate, not only the rate."""
    moved = max(out.get("received", 0), out.get("sent", 0), 1)
    clients = prod + cons
    client_cpu = sum(r.get("cpu_s", 0.0) for r in clients)
    fig = {"client_cpu_s": client_cpu, "client_cpu_s_per_100k": client_cpu / moved * 1e5}
    if out.get("server_cpu_s") is not None:
        fig["server_cpu_s_per_100k"] = out["server_cpu_s"] / moved * 1e5
    shares = [r["cpu_s"] / r["wall_s"] for r in clients if r.get("wall_s")]
    busiest_client = max(shares, default=0.0)
    server_share = (out.get("server_cpu_pct") or 0.0) / 100
    fig["busiest_client_cpu_pct"] = 100 * busiest_client
    if busiest_client >= BUSY_SHARE and busiest_client > server_share:
        fig["bound"] = "client"
    elif server_share >= BUSY_SHARE:
        fig["bound"] = "server"
    return fig


def _figures(case, t0, prod, cons, expected, backlog=False) -> dict:
    sent = sum(r["sent"] for r in prod)
    t_done = max(r["t_done"] for r in prod)
    received = sum(c["count"] for c in cons)
    firsts = [c["first"] for c in cons if c["count"]]
    lasts = [c["last"] for c in cons if c["count"]]
    out = {"sent": sent, "unsent": sum(r["unsent"] for r in prod), "expected": expected,
           "received": received, "lost": max(0, expected - received),
           "extra": max(0, received - expected),
           "produce_rate": sent / max(1e-9, (t_done - t0) / 1e9),
           "order_violations": sum(c["violations"] for c in cons)}
    if case.rate is not None:
        out["offered_rate"] = case.rate
    if lasts:
        # A drain is timed from the moment the consumers were subscribed, not from the first
        # delivery seen: a blocking client can hand over a whole backlog in one poll call.
        start = min(c["t_ready"] for c in cons) if backlog else t0
        out["throughput"] = received / max(1e-9, (max(lasts) - start) / 1e9)
    else:
        out["throughput"] = 0.0
    out["mb_per_s"] = out["throughput"] * case.size / 1e6
    # Latency leaves out messages meant to be sent in the warm-up (the first WARMUP_SHARE of
    # the run): first fetches and connection set-up are not the steady state being measured.
    # (Runs of a fixed count have no duration to take a share of; they keep every sample.)
    warm_end = t0 + int(case.duration * WARMUP_SHARE * 1e9) if case.count is None else t0
    lat = array("q")
    for c in cons:
        ls, ts = array("q"), array("q")
        ls.frombytes(c["lat"])
        ts.frombytes(c["sent_at"])
        lat.extend(l for l, t in zip(ls, ts) if t >= warm_end)
    if len(lat):
        out["latency_us"] = stats.latency_summary(lat)
    return out
