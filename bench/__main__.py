"""python -m bench: list the workloads, run them against the brokers, turn results into a report.

    python -m bench list
    python -m bench run WORKLOAD|all [--systems minibroker,minibroker-pika,minilog,minilog-aio,rabbitmq,rabbitmq-pika,kafka,nats,redis]
                        [--duration S] [--repeat N] [--start-peers] [--peer-url NAME=URL ...]
                        [--save | --json-dir DIR] [--count N] [--workers N] [--partitions N]
                        [--only rate=1000,size=65536]
    python -m bench report [--json-dir bench/results] [--out FILE] [--charts DIR]

A run's JSON goes to bench/runs/ (not in git) unless `--save` puts it in bench/results/, the
published results that RESULTS.md is made from: a quick try never replaces them.

(`python -m bench.codec` is a separate micro-benchmark of the protocol decoder.)
"""

import argparse
import signal
import sys

from .systems import DESCRIPTIONS, OWN, PEERS
from .workloads import DEFAULT_DURATION, WORKLOADS, cases_for

ALL_SYSTEMS = OWN + PEERS
# Workloads that measure the servers' memory get servers of their own within `run all`.
FRESH_SERVERS = ("backlog",)


def _list(args) -> int:
    print("Workloads (python -m bench run NAME):\n")
    for w in WORKLOADS.values():
        cases = cases_for(w.name, DEFAULT_DURATION)
        print(f"  {w.name}")
        print(f"      {w.summary}")
        print(f"      parameters: {w.parameters}")
        print(f"      cases: {', '.join(c.label for c in cases)}\n")
    print("Systems (--systems):\n")
    for s in ALL_SYSTEMS:
        origin = "always started by the bench" if s in OWN else "--start-peers or --peer-url"
        print(f"  {s:11} {DESCRIPTIONS[s]}  [{origin}]")
    return 0


def _run(args) -> int:
    from .suite import Servers, run_workload, summary_table
    names = list(WORKLOADS) if args.workload == "all" else args.workload.split(",")
    for n in names:
        if n not in WORKLOADS:
            print(f"unknown workload {n!r}; known: {', '.join(WORKLOADS)}", file=sys.stderr)
            return 2
    systems = args.systems.split(",")
    bad = [s for s in systems if s not in ALL_SYSTEMS]
    if bad:
        print(f"unknown system(s) {', '.join(bad)}; known: {', '.join(ALL_SYSTEMS)}", file=sys.stderr)
        return 2
    peer_urls = {}
    for item in args.peer_url:
        name, _, url = item.partition("=")
        if name not in ALL_SYSTEMS or not url:
            print(f"--peer-url wants NAME=URL with NAME one of {', '.join(ALL_SYSTEMS)}", file=sys.stderr)
            return 2
        peer_urls[name] = url
    options = {}
    if args.count:
        options["count"] = args.count
    if args.workers:
        options["workers"] = args.workers
    if args.partitions:
        options["partitions"] = args.partitions
    if args.only:
        options["only"] = args.only.split(",")
    say = lambda s: print(s, file=sys.stderr, flush=True)
    # A SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so the servers and workers this
    # session started are stopped by the `finally` blocks instead of outliving it.
    before = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    from .suite import PUBLISHED_DIR, UNSAVED_DIR, new_session_id
    json_dir = args.json_dir or (PUBLISHED_DIR if args.save else UNSAVED_DIR)
    session = new_session_id()
    say(f"run {session}: results go to {json_dir}/" + ("" if args.save or args.json_dir else
                                                       " (pass --save to publish them in bench/results/)"))
    servers = Servers(systems, args.start_peers, peer_urls, say)
    try:
        for i, n in enumerate(names):
            if n in FRESH_SERVERS and i > 0:
                # Its memory figures must come from servers that have not held the other
                # workloads' data: a process's resident memory rarely shrinks.
                say(f"\n{n}: restarting the servers, so its memory figures start from empty ones")
                servers.stop()
                servers = Servers(systems, args.start_peers, peer_urls, say)
            say(f"\n== {n}: {WORKLOADS[n].summary}")
            result = run_workload(n, systems, args.duration, args.repeat, json_dir=json_dir,
                                  options=options, servers=servers, say=say, session=session)
            print(f"\n{n} (median of {args.repeat}; min-max in brackets)")
            print(summary_table(result))
            if result.get("path"):
                print(f"saved {result['path']}")
    except KeyboardInterrupt:
        say("interrupted; stopping servers")
        return 130
    finally:
        servers.stop()
        signal.signal(signal.SIGTERM, before)      # a caller (a test) gets its own back
    return 0


def _report(args) -> int:
    import os
    from .report import write_report
    from .suite import PUBLISHED_DIR
    published = os.path.normpath(args.json_dir) == os.path.normpath(PUBLISHED_DIR)
    # The published report lives at bench/RESULTS.md; a report of unsaved runs stays beside them.
    out = args.out or ("bench/RESULTS.md" if published else os.path.join(args.json_dir, "RESULTS.md"))
    charts = args.charts or ("bench/charts" if published else os.path.join(args.json_dir, "charts"))
    return write_report(args.json_dir, out, charts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="the workloads and systems")
    r = sub.add_parser("run", help="run a workload (or 'all') against the systems")
    r.add_argument("workload")
    r.add_argument("--systems", default=",".join(ALL_SYSTEMS))
    r.add_argument("--duration", type=float, default=DEFAULT_DURATION, help="seconds of producing per run")
    r.add_argument("--repeat", type=int, default=3)
    r.add_argument("--start-peers", action="store_true", help="start installed peer servers on loopback")
    r.add_argument("--peer-url", action="append", default=[], metavar="NAME=URL",
                   help="use a running server, e.g. rabbitmq=amqp://guest:guest@127.0.0.1:5672/, "
                        "kafka=127.0.0.1:9092, redis=redis://127.0.0.1:6379, nats=nats://127.0.0.1:4222")
    where = r.add_mutually_exclusive_group()
    where.add_argument("--save", action="store_true",
                       help="publish: write the JSON to bench/results/, which RESULTS.md is made from")
    where.add_argument("--json-dir", help="write the JSON here (default bench/runs/, not in git)")
    r.add_argument("--count", type=int, help="messages for replay/backlog (default 100000)")
    r.add_argument("--workers", type=int, help="task-queue workers (default 2)")
    r.add_argument("--partitions", type=int, help="telemetry partitions/queues (default 4)")
    r.add_argument("--only", help="run only the cases with these labels, e.g. rate=1000,size=65536")
    p = sub.add_parser("report", help="write RESULTS.md and charts from saved JSON")
    p.add_argument("--json-dir", default="bench/results",
                   help="results to report on (default the published bench/results; a run's own: bench/runs)")
    p.add_argument("--out", help="default bench/RESULTS.md for bench/results, else JSON_DIR/RESULTS.md")
    p.add_argument("--charts", help="default bench/charts for bench/results, else JSON_DIR/charts")
    args = ap.parse_args(argv)
    return {"list": _list, "run": _run, "report": _report}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
