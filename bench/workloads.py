"""The seven named workloads and the cases each expands into.

A workload is a question users bring ("a task queue shared by workers: how fast?"); a case is
one concrete measurement of it (one offered rate, one partition count, one message size). A
case is written once, in terms both paradigms understand - producers, *lanes* (a queue or a
partition), *groups* of consumers - and each system adapter in `bench/systems/` maps it onto
its own objects:

| shape   | routing queue (minibroker, RabbitMQ)                  | log (minilog, Kafka, Redis, NATS)          |
|---------|-------------------------------------------------------|--------------------------------------------|
| work    | one durable queue, N competing consumers               | topic of N partitions, one group of N       |
| fanout  | fanout exchange, one queue per service, 1 consumer each| one topic, one consumer group per service   |
| keyed   | direct exchange, N queues, routing key = hash(key) % N | topic of N partitions, partition = key % N  |

Each of a case's `consumers` is one process (bench/runner.py), reading the lanes
`Lanes.for_consumer` gives it. Where the workload is one service (telemetry's tracker,
scaling), `consumers=1`: one process holds every lane, on one channel or one assigned
consumer, as a real service would. Competing workers (task-queue) and independent services
(fanout) are separate processes by what they are, so they keep one process each.

Running the case (processes, clocks, counting) is `bench/runner.py`'s job.
"""

from dataclasses import asdict, dataclass, field, replace

DEFAULT_DURATION = 5.0


@dataclass(frozen=True)
class Case:
    workload: str
    label: str                      # what varies, e.g. "rate=10000" or "partitions=4"
    shape: str                      # "work" | "fanout" | "keyed"
    lanes: int = 1                  # partitions (log) / queues for keyed routing (queue)
    groups: tuple = ("g",)          # consumer groups (queue: one queue per group)
    consumers: int = 1              # consumers per group
    producers: int = 1
    size: int = 100                 # message body bytes
    keys: int = 1000                # distinct keys (driver ids), for keyed shapes
    rate: float | None = None       # total offered msgs/s; None = as fast as it takes
    duration: float = DEFAULT_DURATION
    count: int | None = None        # produce exactly this many instead of for `duration`
    backlog: bool = False           # consumers start only after every message is produced
    replay: bool = False            # after the live group, a new group reads from offset 0
    persistent: bool = True         # durable queue + persistent messages (queue systems)
    ack_each: bool = True           # consumers ack every message (queue) / commit each poll (log)
    json_body: bool = False         # body is a JSON document the worker parses
    check_order: bool = False       # verify per-key order at the consumer
    x: float | None = None          # value on a chart's x axis (rate, partitions, size)
    x_name: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["groups"] = list(self.groups)
        return d

    @property
    def queue_ok(self) -> bool:
        """Whether a routing queue can run this case at all (it cannot replay)."""
        return not self.replay


@dataclass(frozen=True)
class Workload:
    name: str
    summary: str
    parameters: str
    cases: callable = field(repr=False)     # (duration, options) -> list[Case]


def _task_queue(duration, opt):
    n = opt.get("workers", 2)
    return [Case("task-queue", f"workers={n}", "work", lanes=n, groups=("workers",),
                 consumers=n, size=200, duration=duration, persistent=True, ack_each=True,
                 json_body=True)]


def _fanout(duration, opt):
    return [Case("fanout", "services=3", "fanout", lanes=1,
                 groups=("inventory", "shipping", "email"), consumers=1, size=200,
                 duration=duration, persistent=True, json_body=True)]


def _telemetry(duration, opt):
    p = opt.get("partitions", 4)
    # One tracker service, so one consumer process reading every partition / queue.
    return [Case("telemetry", f"partitions={p}", "keyed", lanes=p, groups=("tracker",),
                 consumers=1, producers=opt.get("producers", 1), size=100, keys=1000,
                 duration=duration, persistent=False, check_order=True)]


def _replay(duration, opt):
    n = opt.get("count", 100_000)
    return [Case("replay", f"records={n}", "keyed", lanes=1, groups=("live",), consumers=1,
                 size=100, keys=1000, count=n, duration=duration, replay=True,
                 persistent=False)]


def _latency(duration, opt):
    rates = opt.get("rates", [1000, 10000, 50000, None])
    return [Case("latency", f"rate={'max' if r is None else int(r)}", "keyed", lanes=1,
                 groups=("g",), consumers=1, size=100, keys=100, rate=r, duration=duration,
                 persistent=False, x=r, x_name="offered msgs/s")
            for r in rates]


def _scaling(duration, opt):
    # One consumer process reads all k lanes, as one service would: what grows is the lanes the
    # broker spreads the stream over, not the processes sharing two cores.
    cases = [Case("scaling", f"partitions={k}", "keyed", lanes=k, groups=("g",), consumers=1,
                  size=100, keys=1000, duration=duration, persistent=False, x=k,
                  x_name="partitions / queues (one consumer process reads them all)")
             for k in opt.get("partitions", [1, 2, 4, 8])]
    cases += [Case("scaling", f"size={s}", "keyed", lanes=1, groups=("g",), consumers=1,
                   size=s, keys=100, duration=duration, persistent=False, x=s,
                   x_name="message size (bytes)")
              for s in opt.get("sizes", [100, 1024, 16384, 65536])]
    return cases


def _backlog(duration, opt):
    n = opt.get("count", 100_000)
    return [Case("backlog", f"backlog={n}", "work", lanes=1, groups=("late",), consumers=1,
                 size=100, count=n, backlog=True, duration=duration, persistent=True)]


WORKLOADS = {w.name: w for w in [
    Workload("task-queue",
             "Persistent image-processing jobs (JSON, ~200 B) shared by competing workers that "
             "ack each one: throughput and per-task latency.",
             "workers=2 (--workers); queue: durable queue, persistent messages, publisher "
             "confirms, manual ack of every message; log: topic with one partition per worker, "
             "one group, offsets committed after every poll.",
             _task_queue),
    Workload("fanout",
             "An OrderCreated event (JSON, ~200 B) consumed by three independent services "
             "(inventory, shipping, email).",
             "queue: fanout exchange to three durable queues, persistent; log: one topic read "
             "by three consumer groups. Throughput counts deliveries (3 per event).",
             _fanout),
    Workload("telemetry",
             "Ride-sharing GPS updates (~100 B, keyed by driver id, 1000 drivers) at the highest "
             "rate the system takes; per-key order checked at the consumer.",
             "partitions=4 (--partitions); queue: direct exchange with 4 queues, routing key = "
             "driver id mod 4 (consistent routing by key), transient messages; log: topic of 4 "
             "partitions, partition = driver id mod 4; one tracker: one consumer process reads "
             "all 4.",
             _telemetry),
    Workload("replay",
             "A new consumer group reads a topic's whole history from offset 0.",
             "records=100000 (--count); a live group consumes while producing, then a new group "
             "replays from offset 0. A queue cannot do this: acked messages are gone.",
             _replay),
    Workload("latency",
             "End-to-end latency percentiles at fixed offered rates, open loop: sends are "
             "scheduled by the clock and latency counts from the intended send time, so queueing "
             "delay is included (no coordinated omission).",
             "rates 1k, 10k, 50k msgs/s and max (unthrottled, closed loop); 100 B; one producer, "
             "one consumer, one lane; transient messages.",
             _latency),
    Workload("scaling",
             "Throughput as partitions/queues grow 1, 2, 4, 8 (one consumer process reads them "
             "all), and as the message size grows 100 B to 64 KiB.",
             "one producer, one consumer process; keyed routing; transient messages; sizes "
             "100 B, 1 KiB, 16 KiB, 64 KiB.",
             _scaling),
    Workload("backlog",
             "Consumers start only after a backlog exists: drain rate and the server's peak "
             "memory (RSS from /proc).",
             "backlog=100000 (--count; the question's 1M with --count 1000000); persistent; one "
             "queue / one partition, one consumer.",
             _backlog),
]}


def cases_for(name: str, duration: float, options: dict | None = None) -> list[Case]:
    if name not in WORKLOADS:
        raise KeyError(f"unknown workload {name!r}; `python -m bench list` shows them")
    options = options or {}
    cases = WORKLOADS[name].cases(duration, options)
    if options.get("only"):
        cases = [c for c in cases if c.label in options["only"]]
    return cases


def with_duration(case: Case, duration: float) -> Case:
    return replace(case, duration=duration)
