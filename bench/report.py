"""Turns saved result JSON (bench/results/*.json) into bench/RESULTS.md and PNG charts.

For each workload the newest result file is used, so one `python -m bench run all` followed by
`python -m bench report` gives a side-by-side report from a single session. Tables carry the
median of the repeats with min-max, and each system's durability setting beside its figures.
Charts need matplotlib (the `bench` extra); without it the tables are still written and one
line says how to get the charts. What is measured is bench/runner.py's business; this module
only reads JSON.
"""

import glob
import json
import os
import re
import sys

from .stats import ratio
from .workloads import WORKLOADS

from .systems import SAME_CLIENT_PAIRS

QUEUE_SYSTEMS = ("minibroker", "minibroker-pika", "minibroker-amqp", "minibroker-amqp-pika",
                 "rabbitmq", "rabbitmq-pika")
LOG_SYSTEMS = ("minilog", "minilog-aio", "minilog-kafka", "minilog-kafka-aiokafka", "kafka",
               "kafka-aiokafka", "redis", "nats")
ORDER = ("minibroker", "minibroker-pika", "minibroker-amqp", "minibroker-amqp-pika", "minilog",
         "minilog-aio", "minilog-kafka", "minilog-kafka-aiokafka", "rabbitmq", "rabbitmq-pika",
         "kafka", "kafka-aiokafka", "nats", "redis")
COLORS = {"minibroker": "#1f77b4", "minilog": "#ff7f0e", "rabbitmq": "#9467bd",
          "kafka": "#2ca02c", "nats": "#8c564b", "redis": "#d62728", "minilog-aio": "#bcbd22",
          "minibroker-pika": "#17becf", "rabbitmq-pika": "#e377c2", "minibroker-amqp": "#aec7e8",
          "minibroker-amqp-pika": "#393b79", "minilog-kafka": "#ffbb78",
          "minilog-kafka-aiokafka": "#8c6d31", "kafka-aiokafka": "#98df8a"}


def load_latest(json_dir: str) -> dict[str, dict]:
    """workload name -> newest result dict found in json_dir."""
    latest: dict[str, dict] = {}
    for path in sorted(glob.glob(os.path.join(json_dir, "*.json"))):
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            print(f"skipping {path}: {e}", file=sys.stderr)
            continue
        name = data.get("workload")
        if name and (name not in latest or data.get("started", "") >= latest[name].get("started", "")):
            data["path"] = path
            latest[name] = data
    return latest


def _fmt(v, digits=0):
    if v is None:
        return "–"
    if isinstance(v, float) and digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def _us(v):
    if v is None:
        return "–"
    return f"{v / 1000:,.1f} ms" if v >= 10_000 else f"{v:,.0f} µs"


def _median(r, key):
    sm = r.get("summary", {})
    return sm.get(key, {}).get("median") if isinstance(sm.get(key), dict) else None


def _spread_text(r, key, digits=0):
    sm = r.get("summary", {}).get(key)
    if not sm or sm.get("median") is None:
        return "–"
    if sm["n"] > 1:
        return f"{_fmt(sm['median'], digits)} ({_fmt(sm['min'], digits)}–{_fmt(sm['max'], digits)})"
    return _fmt(sm["median"], digits)


def _why_missing(r) -> str:
    if "skipped" in r:
        return f"skipped: {r['skipped']}"
    if "unsupported" in r:
        return f"not applicable: {r['unsupported']}"
    if r.get("errors"):
        return f"failed: {r['errors'][0]}"
    return "no runs"


def headline(workload: str) -> tuple[str, str, bool]:
    """(figure key, words, higher is better) a workload is judged by."""
    return {"replay": ("replay_rate", "records/s replayed", True),
            "backlog": ("throughput", "msgs/s drained", True),
            "fanout": ("throughput", "deliveries/s", True),
            "latency": ("latency_p99_us", "p99 latency", False)}.get(
        workload, ("throughput", "msgs/s delivered", True))


def _incomplete(r) -> bool:
    """A system that did not deliver everything in time has no verdict-worthy figure."""
    sm = r.get("summary", {})
    return bool((sm.get("lost") or {}).get("max")) or bool(sm.get("undrained_runs"))


def _best(entry, systems, key, higher):
    best = None
    for s in systems:
        r = entry["results"].get(s, {})
        v = _median(r, key)
        if v is None or v == 0 or _incomplete(r):
            continue
        if best is None or (v > best[1] if higher else v < best[1]):
            best = (s, v)
    return best


def _compare(a, b, key, higher, what):
    """Plain words comparing (system, value) a against b."""
    if not a or not b:
        return None
    fa, fb = (_us if "latency" in key else _fmt)(a[1]), (_us if "latency" in key else _fmt)(b[1])
    r = ratio(a[1], b[1]) if higher else ratio(b[1], a[1])
    if r is None:
        return None
    if r >= 1:
        return f"{a[0]} {fa} vs {b[0]} {fb} {what}: {a[0]} ahead {r:.1f}×"
    return f"{a[0]} {fa} vs {b[0]} {fb} {what}: {b[0]} ahead {1 / r:.1f}×"


def summary_lines(results: dict) -> list[str]:
    lines = []
    for name in WORKLOADS:
        data = results.get(name)
        if not data:
            lines.append(f"- **{name}**: not run.")
            continue
        key, what, higher = headline(name)
        entries = data["cases"]
        if name == "latency":
            entries = [e for e in entries if e["case"]["rate"] is not None]
        if name == "scaling":
            entries = [e for e in entries if e["case"]["label"].startswith("partitions")]
        parts = []
        for entry in entries[:4] if name in ("latency",) else entries[-1:] if name == "scaling" else entries[:1]:
            label = entry["case"]["label"]
            q, l = _best(entry, QUEUE_SYSTEMS, key, higher), _best(entry, LOG_SYSTEMS, key, higher)
            ours = _compare(_best(entry, ("minilog", "minilog-aio"), key, higher),
                            _best(entry, ("minibroker", "minibroker-pika"), key, higher), key,
                            higher, what)
            ours_blocking = _compare(_best(entry, ("minilog",), key, higher),
                                     _best(entry, ("minibroker-pika",), key, higher), key, higher, what)
            ours_aio = _compare(_best(entry, ("minilog-aio",), key, higher),
                                _best(entry, ("minibroker",), key, higher), key, higher, what)
            peers = _compare(_best(entry, ("kafka",), key, higher),
                             _best(entry, ("rabbitmq", "rabbitmq-pika"), key, higher), key,
                             higher, what)
            if q and l:
                win = ("log" if ((l[1] > q[1]) == higher) else "queue")
                factor = max(l[1], q[1]) / min(l[1], q[1])
                verdict = f"the **{win}** wins ({factor:.1f}× best-of-paradigm)"
            elif l and not q:
                verdict = "only the **log** can do it (a queue deletes what was acked)"
            elif q and not l:
                verdict = "only the queue ran"
            else:
                verdict = "no results"
            dropped = [s for s in ORDER if _incomplete(entry["results"].get(s, {}))]
            failed = [s for s in ORDER if entry["results"].get(s, {}).get("errors")
                      and "summary" not in entry["results"][s]]
            detail = "; ".join(x for x in (
                f"ours, asyncio clients: {ours_aio}" if ours_aio else None,
                f"ours, blocking clients: {ours_blocking}" if ours_blocking else None,
                f"ours: {ours}" if ours and not (ours_aio or ours_blocking) else None,
                f"peers: {peers}" if peers else None,
                f"left out, not everything delivered in time: {', '.join(dropped)}" if dropped else None,
                f"failed: {', '.join(failed)}" if failed else None) if x)
            parts.append(f"{label}: {verdict}" + (f" — {detail}" if detail else ""))
        lines.append(f"- **{name}** — " + " · ".join(parts))
    return lines


def _systems_in(data):
    return [s for s in ORDER if s in data["systems"]]


# What a chart calls a system: "kafka" is the Kafka protocol as tansu serves it from memory,
# not Apache Kafka, and a reader of a chart alone should not have to know that.
CHART_NAMES = {"kafka": "tansu (Kafka protocol)"}


def durability_tag(text: str | None) -> str:
    """A few words for a chart label from an adapter's durability setting."""
    t = (text or "").lower()
    if not t:
        return "?"
    if "memory" in t or "no persistence" in t:
        return "memory only"
    if "fsync" in t and ("after fsync" in t or "fsynced before" in t):
        return "fsync"
    if "no confirms" in t:
        return "disk, unconfirmed"
    if "page cache" in t or "acks=1" in t:
        return "page cache"
    if "transient" in t or "not persistent" in t:
        return "transient"
    return t.split(",")[0][:24]


def chart_label(data, entry, system) -> str:
    """A system's name on a chart, with its durability in brackets."""
    settings = entry["results"].get(system, {}).get("settings") or {}
    return f"{CHART_NAMES.get(system, system)} [{durability_tag(settings.get('durability'))}]"


def workload_section(name, data, charts_rel) -> list[str]:
    w = WORKLOADS[name]
    opts = ", ".join(f"--{k} {v}" for k, v in (data.get("options") or {}).items())
    # The words saved with the run describe what ran; today's may describe a changed workload.
    summary, parameters = data.get("summary") or w.summary, data.get("parameters") or w.parameters
    out = [f"## {name}", "", summary, "", f"Parameters: {parameters} Duration {data['duration']} s "
           f"per run, {data['repeat']} repeats (median, min–max)"
           + (f", run with {opts}" if opts else "") + f". Run {data['started']}.", ""]
    systems = _systems_in(data)
    for entry in data["cases"]:
        case = entry["case"]
        out.append(f"**{case['label']}**" + (f" (offered {case['rate']:,.0f} msgs/s)" if case.get("rate") else "")
                   + f" — {_processes(case)}")
        out.append("")
        first = ("drained msgs/s" if case.get("backlog") else
                 "live group msgs/s" if case.get("replay") else "delivered msgs/s")
        cols = ["system", first, "produce msgs/s", "p50", "p99", "p99.9", "max"]
        if case.get("replay"):
            cols.insert(3, "replay records/s")
        cols += ["peak in flight", "server RSS MB", "server CPU s/100k", "client CPU s/100k", "durability"]
        out.append("| " + " | ".join(cols) + " |")
        out.append("|" + "---|" * len(cols))
        for s in systems:
            r = entry["results"].get(s, {})
            if "summary" not in r:
                out.append(f"| {s} | {_why_missing(r)} |" + " |" * (len(cols) - 2))
                continue
            sm = r["summary"]
            row = [s, _spread_text(r, "throughput"), _spread_text(r, "produce_rate"),
                   _us(_median(r, "latency_p50_us")), _us(_median(r, "latency_p99_us")),
                   _us(_median(r, "latency_p99.9_us")), _us(_median(r, "latency_max_us"))]
            if case.get("replay"):
                row.insert(3, _spread_text(r, "replay_rate"))
            notes = []
            if sm.get("order_violations"):
                notes.append(f"{sm['order_violations']} per-key order violations")
            elif case.get("check_order"):
                notes.append("per-key order kept in every run")
            if sm.get("lost", {}).get("max"):
                notes.append(f"up to {sm['lost']['max']:.0f} not delivered in time")
            if sm.get("undrained_runs"):
                notes.append(f"{sm['undrained_runs']} run(s) not drained before the deadline")
            if sm.get("bound"):
                notes.append(f"{sm['bound']}-bound")
            row += [_fmt(_median(r, "peak_in_flight")), _fmt(_median(r, "peak_rss_mb")),
                    _fmt(_median(r, "server_cpu_s_per_100k"), 2), _fmt(_median(r, "client_cpu_s_per_100k"), 2),
                    r.get("settings", {}).get("durability", "–") + ("; " + "; ".join(notes) if notes else "")]
            out.append("| " + " | ".join(row) + " |")
        out.append("")
    for chart in CHARTS_FOR.get(name, []):
        path = os.path.join(charts_rel, chart)
        out.append(f"![{name}]({path})")
        out.append("")
    return out


def _processes(case: dict) -> str:
    """The client processes a case runs, from its shape (bench/workloads.py): one per producer
    and one per consumer of each group, every lane of a consumer read in its one process."""
    producers, groups = case.get("producers", 1), len(case.get("groups") or [1])
    consumers = groups * case.get("consumers", 1)
    lanes = case.get("lanes", 1)
    each = (f", reading {lanes} {'lanes' if lanes > 1 else 'lane'}" if consumers == 1 and lanes > 1
            else "")
    return (f"{producers} producer process{'es' if producers > 1 else ''}, "
            f"{consumers} consumer process{'es' if consumers > 1 else ''}{each}")


CHARTS_FOR = {"task-queue": ["task-queue.png"], "fanout": ["fanout.png"],
              "telemetry": ["telemetry.png"], "replay": ["replay.png"],
              "latency": ["latency-percentiles.png"], "scaling": ["scaling-partitions.png",
                                                                  "scaling-size.png"],
              "backlog": ["backlog.png"]}


def settings_section(results) -> list[str]:
    out = ["## Systems and settings", "", "| system | server | client | settings (as run) |", "|---|---|---|---|"]
    seen = {}
    for data in results.values():
        for s, info in data["systems"].items():
            if s in seen:
                continue
            if "skipped" in info:
                seen[s] = f"| {s} | skipped: {info['skipped']} | | |"
                continue
            settings = {}
            for entry in data["cases"]:
                settings = entry["results"].get(s, {}).get("settings") or settings
                if settings:
                    break
            txt = "; ".join(f"{k}: {v}" for k, v in settings.items() if k != "durability")
            seen[s] = f"| {s} | {info['server']} | {info['client']} | {txt} |"
    out += [seen[s] for s in ORDER if s in seen]
    out += ["", "Durability differs and is stated beside every figure: persistent messages on a "
            "durable queue are fsynced before the publisher's confirm in RabbitMQ and in "
            "minibroker (`--fsync always`, its default); minilog with acks=1 has the record in "
            "the page cache, like Kafka's default; tansu runs on memory storage and Redis runs "
            "without persistence, so neither survives a restart.", ""]
    return out


def machine_section(results) -> list[str]:
    any_data = next(iter(results.values()))
    m = any_data["machine"]
    loads = [d["machine"].get("loadavg_at_start") for d in results.values()]
    loads += [d["machine"].get("loadavg_at_end") for d in results.values()]
    loads = [l[0] for l in loads if l]
    return ["## Machine", "",
            f"{m['cores']} cores ({m['cpu_model']}), {m.get('memory_gib')} GiB, {m['os']}, "
            f"Python {m['python']}. One-minute load average at the start and end of each workload: "
            f"{min(loads):.1f} to {max(loads):.1f} (2.0 = both cores busy). Producers, consumers and the server all share "
            "these cores, so the client library is usually the busier side.", ""]


def same_client_section(results) -> list[str]:
    """Server against server: the same real client library against the peer and against ours,
    with each server's CPU per 100k messages (the figure that is the server's own)."""
    rows = []
    for name in WORKLOADS:
        data = results.get(name)
        if not data:
            continue
        key, what, higher = headline(name)
        for entry in data["cases"]:
            for peer, ours, client in SAME_CLIENT_PAIRS:
                rp, ro = entry["results"].get(peer, {}), entry["results"].get(ours, {})
                vp, vo = _median(rp, key), _median(ro, key)
                if vp is None or vo is None:
                    continue
                cp, co = _median(rp, "server_cpu_s_per_100k"), _median(ro, "server_cpu_s_per_100k")
                fmt = _us if "latency" in key else _fmt
                speed = ratio(vo, vp) if higher else ratio(vp, vo)
                cpu = ratio(cp, co)
                rows.append(f"| {name} | {entry['case']['label']} | {client} | {fmt(vp)} | {fmt(vo)} | "
                            f"{'–' if speed is None else f'{speed:.2f}×'} | {_fmt(cp, 2)} | {_fmt(co, 2)} | "
                            f"{'–' if cpu is None else f'{cpu:.1f}×'} |")
    if not rows:
        return []
    return ["## Server against server, same client", "",
            "The same real client library, the same program, against the peer and against our server's "
            "AMQP or Kafka door, in the same run. \"ours/peer\" above 1 means ours is faster (for "
            "latency: lower); the CPU columns are each server's own CPU seconds per 100k messages, "
            "and \"peer/ours\" above 1 means ours spent less. The sections after this one show what each "
            "whole stack, client included, delivers to a Python program.", "",
            "| workload | case | client | peer | ours | ours/peer | peer server CPU s/100k | ours | peer/ours |",
            "|---|---|---|---|---|---|---|---|---|"] + rows + [""]


def runs_section(results) -> list[str]:
    """Which run (session) each workload's figures come from, so nobody compares across runs
    without knowing it: figures are side by side only within one run."""
    sessions = {d.get("session") or d.get("started", "?") for d in results.values()}
    lines = ["## Which run each figure comes from", ""]
    if len(sessions) > 1:
        lines += [f"**These workloads come from {len(sessions)} different runs.** Within a workload "
                  "every system ran in the same run, repeats interleaved; between workloads the "
                  "machine's load may differ, so compare systems within a table, not across them.", ""]
    lines += ["| workload | run | started (UTC) | repeats | load at start / end | file |", "|---|---|---|---|---|---|"]
    for name in WORKLOADS:
        d = results.get(name)
        if not d:
            continue
        m = d.get("machine", {})
        load = lambda k: f"{m[k][0]:.1f}" if m.get(k) else "?"
        lines.append(f"| {name} | {d.get('session', '(before sessions were recorded)')} | {d.get('started', '?')} | "
                     f"{d.get('repeat', '?')} | {load('loadavg_at_start')} / {load('loadavg_at_end')} | "
                     f"`{os.path.basename(d.get('path', '?'))}` |")
    return lines + [""]


NOTES_MARK = re.compile(r"<!--\s*notes on runs:(.*?)-->", re.S)


def run_id(data: dict) -> str:
    """What names a result's run: its session id, or its file for results saved before runs
    had one."""
    return data.get("session") or os.path.basename(data.get("path", "?"))


def notes_section(json_dir: str, results: dict) -> list[str]:
    """The hand-written NOTES.md, only if it says it is about the runs being reported.

    Notes quote figures; pasted above a newer run's tables they would contradict them. So
    NOTES.md names its runs in a first line `<!-- notes on runs: ID ... -->` (a session id, or a
    result file's name), and a report with a run it does not name leaves the notes out and says
    so, in RESULTS.md and on stderr, with the line to write once the notes are brought up to date.
    """
    path = os.path.join(json_dir, "NOTES.md")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        text = f.read()
    mark = NOTES_MARK.search(text)
    named = set(mark.group(1).split()) if mark else set()
    reported = {run_id(d) for d in results.values()}
    unnamed = sorted({run_id(d) for d in results.values()
                      if d.get("session") not in named
                      and os.path.basename(d.get("path", "")) not in named})
    if not unnamed:
        return [NOTES_MARK.sub("", text).strip(), ""]
    wanted = "<!-- notes on runs: " + " ".join(sorted(reported)) + " -->"
    print(f"{path} is not about run(s) {', '.join(unnamed)}, so RESULTS.md leaves it out; once it "
          f"describes these results, make its first line: {wanted}", file=sys.stderr)
    return [f"**No notes on this run yet:** `{os.path.basename(path)}` was written about "
            f"{'other runs' if named else 'runs it does not name'}; it is left out until it "
            f"describes run {', '.join(unnamed)}. The tables below are complete without it.", ""]


def write_report(json_dir: str, out_path: str, charts_dir: str) -> int:
    results = load_latest(json_dir)
    if not results:
        print(f"no result JSON in {json_dir}; run `python -m bench run all` first", file=sys.stderr)
        return 1
    charts_rel = os.path.relpath(charts_dir, os.path.dirname(os.path.abspath(out_path)) or ".")
    made = draw_charts(results, charts_dir)
    lines = ["# Benchmark results", "",
             "Generated by `python -m bench report` from the newest JSON per workload in "
             f"`{json_dir}`; how to reproduce: [README.md](README.md).", ""]
    lines += notes_section(json_dir, results)
    lines += same_client_section(results)
    lines += ["## Summary: which paradigm wins here, and by how much (whole stacks)", ""]
    lines += summary_lines(results)
    lines += ["", "\"Best-of-paradigm\" compares the fastest queue (minibroker, RabbitMQ, "
              "through either client) with the fastest log (minilog, Kafka/tansu, NATS JetStream, "
              "Redis Streams) on the workload's headline figure. The \"ours\" lines compare our "
              "two brokers through the same client style on both sides - asyncio (minibroker via "
              "its aio-pika API vs minilog-aio via its aiokafka API) and blocking (minibroker-pika "
              "via its pika API vs minilog via its confluent-kafka API) - which share a language "
              "and a wire protocol, so they come closest to comparing the paradigms themselves. "
              "\"peers\" compares Kafka (tansu) with the faster of RabbitMQ's two clients.", ""]
    lines += machine_section(results)
    lines += runs_section(results)
    lines += settings_section(results)
    for name in WORKLOADS:
        if name in results:
            lines += workload_section(name, results[name], charts_rel if made else charts_rel)
    if not made:
        lines += ["(Charts not drawn: matplotlib is not installed; `pip install -e '.[bench]'`.)", ""]
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w") as f:
        f.write("\n".join(lines).rstrip() + "\n")
    print(f"wrote {out_path}" + (f" and {made} charts in {charts_dir}" if made else ""))
    return 0


def draw_charts(results: dict, charts_dir: str) -> int:
    """Draws every chart it has data for; returns how many (0 without matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed, so no charts: pip install -e '.[bench]'", file=sys.stderr)
        return 0
    os.makedirs(charts_dir, exist_ok=True)
    made = 0
    for name in ("task-queue", "fanout", "telemetry", "replay", "backlog"):
        data = results.get(name)
        if not data or not data["cases"]:
            continue
        entry = data["cases"][0]
        key, what, _ = headline(name)
        systems, meds, lows, highs = [], [], [], []
        for s in _systems_in(data):
            r = entry["results"].get(s, {})
            sm = r.get("summary", {}).get(key)
            if sm and sm.get("median") and not _incomplete(r):
                systems.append(s)
                meds.append(sm["median"])
                lows.append(sm["median"] - sm["min"])
                highs.append(sm["max"] - sm["median"])
        if not systems:
            continue
        fig, ax = plt.subplots(figsize=(8.5, 0.42 * len(systems) + 1.4))
        ys = list(range(len(systems)))[::-1]
        ax.barh(ys, meds, xerr=[lows, highs], capsize=3, color=[COLORS[s] for s in systems])
        ax.set_yticks(ys, [chart_label(data, entry, s) for s in systems])
        ax.set_xscale("log")      # the systems span three orders of magnitude
        ax.set_xlabel(what + " (log scale)")
        ax.set_title(f"{name}: {entry['case']['label']} - median, bars = min–max\n"
                     "(systems that did not deliver every message are left out)", fontsize=9)
        for y, v, hi in zip(ys, meds, highs):
            # Written past the end of the whisker, not on it, so the two never overlap.
            ax.annotate(f"{v:,.0f}", (v + hi, y), xytext=(6, 0), textcoords="offset points",
                        va="center", fontsize=8)
        ax.set_xlim(right=max(m + h for m, h in zip(meds, highs)) * 8)
        ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        fig.savefig(os.path.join(charts_dir, f"{name}.png"), dpi=110)
        plt.close(fig)
        made += 1
    data = results.get("latency")
    if data:
        entries = data["cases"]
        # One y axis for every panel, so a reader compares heights across rates at a glance.
        fig, axes = plt.subplots(1, len(entries), figsize=(4 * len(entries), 3.8), squeeze=False,
                                 sharey=True)
        keys = ("p50", "p90", "p99", "p99.9", "max")
        for ax, entry in zip(axes[0], entries):
            for s in _systems_in(data):
                r = entry["results"].get(s, {})
                ys = [_median(r, f"latency_{k}_us") for k in keys]
                if _incomplete(r):
                    continue
                if all(y is not None for y in ys):
                    ax.plot(range(len(keys)), [y / 1000 for y in ys], marker="o",
                            label=chart_label(data, entry, s), color=COLORS[s])
            ax.set_xticks(range(len(keys)), keys)
            ax.set_yscale("log")
            rate = entry["case"].get("rate")
            ax.set_title(f"open loop: {rate:,} msgs/s offered" if rate else
                         "closed loop: as fast as taken", fontsize=9)
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("ms (log)")
        axes[0][-1].legend(fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
        fig.suptitle("End-to-end latency percentiles (median of repeats); open-loop panels offer a fixed "
                     "rate, the closed-loop one sends as fast as the system takes", fontsize=9)
        fig.tight_layout()
        fig.savefig(os.path.join(charts_dir, "latency-percentiles.png"), dpi=110)
        plt.close(fig)
        made += 1
    data = results.get("scaling")
    if data:
        for prefix, fname, logx in (("partitions", "scaling-partitions.png", False),
                                    ("size", "scaling-size.png", True)):
            entries = [e for e in data["cases"] if e["case"]["label"].startswith(prefix)]
            if not entries:
                continue
            # The axis says what the run varied, one consumer process or one per lane.
            xlabel = entries[0]["case"].get("x_name") or prefix
            fig, axes = plt.subplots(1, 2 if prefix == "size" else 1, figsize=(11 if prefix == "size" else 6.5, 3.6),
                                     squeeze=False)
            for s in _systems_in(data):
                xs, ys, mbs = [], [], []
                for e in entries:
                    v = _median(e["results"].get(s, {}), "throughput")
                    if v and not _incomplete(e["results"].get(s, {})):
                        xs.append(e["case"]["x"])
                        ys.append(v)
                        mbs.append(_median(e["results"].get(s, {}), "mb_per_s"))
                if xs:
                    label = chart_label(data, entries[0], s)
                    axes[0][0].plot(xs, ys, marker="o", label=label, color=COLORS[s])
                    if prefix == "size":
                        axes[0][1].plot(xs, mbs, marker="o", label=label, color=COLORS[s])
            for ax in axes[0]:
                ax.set_xlabel(xlabel)
                if logx:
                    ax.set_xscale("log", base=2)
                ax.grid(alpha=0.3)
            axes[0][0].set_ylabel("msgs/s delivered")
            axes[0][0].set_yscale("log")
            if prefix == "size":
                axes[0][1].set_ylabel("MB/s delivered")
            axes[0][-1].legend(fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
            fig.suptitle(f"scaling by {prefix}, median of repeats\n(points where not every "
                         "message was delivered are left out)", fontsize=9)
            fig.tight_layout()
            fig.savefig(os.path.join(charts_dir, fname), dpi=110)
            plt.close(fig)
            made += 1
    return made
