"""A benchmark session: start the servers, run every case of a workload against every system
side by side (repeats interleaved across systems, so a noisy minute hurts all of them alike),
save the results as JSON and print the summary table.

The per-run mechanics are bench/runner.py's; the tables and charts from saved JSON are
bench/report.py's.
"""

import json
import os
import sys
import time
from datetime import datetime, timezone

from . import stats
from .machine import machine_info
from .progress import Progress
from .runner import RunFailed, run_case
from .systems import DESCRIPTIONS, OWN, OWN_MODULES, PEERS, adapter_class, client_missing
from .systems.base import Unsupported
from .systems.servers import (PEER_STARTERS, ServerHandle, ServerUnavailable,
                              endpoint_from_url, start_own)
from .workloads import WORKLOADS, cases_for

# Figures summarised over repeats (median, min, max).
FIGURES = ("throughput", "produce_rate", "mb_per_s", "replay_rate", "peak_rss_mb",
           "server_cpu_pct", "server_cpu_s_per_100k", "client_cpu_s_per_100k",
           "busiest_client_cpu_pct", "peak_in_flight", "lost")
LATENCY_FIGURES = ("p50", "p90", "p99", "p99.9", "max")


class Servers:
    """The servers of one session, started once and shared by every case."""

    def __init__(self, systems, start_peers, peer_urls, say):
        self.handles: dict[str, ServerHandle] = {}
        self.skipped: dict[str, str] = {}
        for name in systems:
            missing = client_missing(name)
            if missing:
                self._skip(name, missing, say)
                continue
            try:
                if name in peer_urls:
                    self.handles[name] = ServerHandle(
                        name, endpoint_from_url(name, peer_urls[name]), version=f"{name} at {peer_urls[name]}")
                elif name in OWN:
                    self.handles[name] = start_own(OWN_MODULES[name], system=name)
                elif start_peers:
                    starter = PEER_STARTERS[name]
                    self.handles[name] = (starter(system=name) if name in ("rabbitmq-pika", "kafka-aiokafka")
                                          else starter())
                else:
                    self._skip(name, f"not started (pass --start-peers, or --peer-url {name}=URL)", say)
                    continue
                say(f"{name}: {self.handles[name].version} on {_where(self.handles[name])}")
            except ServerUnavailable as e:
                self._skip(name, f"server unavailable: {e}", say)

    def _skip(self, name, why, say):
        self.skipped[name] = why
        say(f"{name}: skipped - {why}")

    def stop(self):
        for h in self.handles.values():
            h.stop()


def _where(h):
    ep = h.endpoint
    return f"{ep.get('host')}:{ep.get('port')}"


UNSAVED_DIR = "bench/runs"           # where a run's JSON goes unless --save (not in git)
PUBLISHED_DIR = "bench/results"      # what RESULTS.md is made from


def new_session_id() -> str:
    """One id for every workload of one `python -m bench run`, so a report can tell runs apart."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + f"-{os.getpid()}"


def run_workload(name, systems, duration, repeat, start_peers=False, peer_urls=None,
                 json_dir=UNSAVED_DIR, options=None, servers=None, say=None, session=None):
    """Run workload `name`; returns the result dict (also saved under json_dir)."""
    say = say or (lambda s: print(s, file=sys.stderr, flush=True))
    options = options or {}
    cases = cases_for(name, duration, options)
    own_servers = servers is None
    servers = servers or Servers(systems, start_peers, peer_urls or {}, say)
    progress = Progress()
    result = {"workload": name, "session": session or new_session_id(), "summary": WORKLOADS[name].summary,
              "parameters": WORKLOADS[name].parameters,
              "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "duration": duration, "repeat": repeat, "options": options,
              "machine": machine_info(), "systems": {}, "cases": []}
    for sysname in systems:
        if sysname in servers.handles:
            h = servers.handles[sysname]
            try:
                client = adapter_class(sysname).client_version()
            except Exception as e:
                client = f"? ({e})"
            result["systems"][sysname] = {"server": h.version, "client": client,
                                          "description": DESCRIPTIONS[sysname],
                                          "paradigm": adapter_class(sysname).paradigm,
                                          # which server process: shared by a session's workloads
                                          "server_pid": h.pid}
        else:
            result["systems"][sysname] = {"skipped": servers.skipped.get(sysname, "not run"),
                                          "description": DESCRIPTIONS[sysname]}
    try:
        for case in cases:
            entry = {"case": case.to_dict(), "results": {}}
            result["cases"].append(entry)
            active = [s for s in systems if s in servers.handles]
            for s in systems:
                if s not in servers.handles:
                    entry["results"][s] = {"skipped": servers.skipped.get(s, "not run")}
                else:
                    entry["results"][s] = {"runs": [], "errors": [],
                                           "settings": adapter_class(s)(servers.handles[s].endpoint).settings(case)}
            for rep in range(repeat):
                for s in active:
                    slot = entry["results"][s]
                    if "unsupported" in slot:
                        continue
                    progress.begin(f"{name} {case.label} {s} #{rep + 1}/{repeat}")
                    try:
                        if not servers.handles[s].alive():
                            raise RunFailed("server process has exited")
                        run = run_case(servers.handles[s], case, progress, options)
                        slot["runs"].append(run)
                        progress.end(_one_line(run))
                    except Unsupported as e:
                        slot["unsupported"] = str(e)
                        progress.end(f"not applicable: {e}")
                    except RunFailed as e:
                        slot["errors"].append(str(e))
                        progress.end(f"FAILED: {e}")
            for s in active:
                slot = entry["results"][s]
                if slot.get("runs"):
                    slot["summary"] = summarise(slot["runs"])
    finally:
        if own_servers:
            servers.stop()
    result["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    try:
        result["machine"]["loadavg_at_end"] = os.getloadavg()
    except OSError:
        pass
    if json_dir:
        os.makedirs(json_dir, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        path = os.path.join(json_dir, f"{name}-{stamp}.json")
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
        result["path"] = path
    return result


def summarise(runs: list[dict]) -> dict:
    out = {}
    for fig in FIGURES:
        vals = [r.get(fig) for r in runs]
        if any(v is not None for v in vals):
            out[fig] = stats.spread(vals)
    for fig in LATENCY_FIGURES:
        vals = [r.get("latency_us", {}).get(fig) for r in runs]
        if any(v is not None for v in vals):
            out[f"latency_{fig}_us"] = stats.spread(vals)
    out["order_violations"] = sum(r.get("order_violations", 0) for r in runs)
    out["lost"] = stats.spread([r.get("lost", 0) for r in runs])
    out["undrained_runs"] = sum(1 for r in runs if not r.get("drained", True))
    bounds = [r.get("bound") for r in runs if r.get("bound")]
    if bounds:
        out["bound"] = max(set(bounds), key=bounds.count)   # what most repeats were limited by
    return out


def _one_line(run):
    parts = [f"{run['throughput']:>10,.0f} msg/s delivered", f"produce {run['produce_rate']:,.0f}/s"]
    lat = run.get("latency_us")
    if lat and lat.get("count"):
        parts.append(f"p50 {lat['p50']:,.0f} us p99 {lat['p99']:,.0f} us")
    if run.get("replay_rate"):
        parts.append(f"replay {run['replay_rate']:,.0f}/s")
    if run.get("lost"):
        parts.append(f"LOST {run['lost']}")
    if run.get("order_violations"):
        parts.append(f"ORDER x{run['order_violations']}")
    return ", ".join(parts)


def summary_table(result) -> str:
    """The plain-text table printed at the end of `python -m bench run`."""
    rows = [("case", "system", "delivered msg/s (min-max)", "produce msg/s", "p50 us", "p99 us",
             "p99.9 us", "CPU s/100k srv", "cli", "extra")]
    for entry in result["cases"]:
        label = entry["case"]["label"]
        for s, r in entry["results"].items():
            if "summary" not in r:
                why = r.get("skipped") or r.get("unsupported") or "; ".join(r.get("errors", [])[:1]) or "no runs"
                rows.append((label, s, why[:70], "", "", "", "", "", "", ""))
                continue
            sm = r["summary"]
            tp = sm["throughput"]
            extra = []
            if "replay_rate" in sm:
                extra.append(f"replay {sm['replay_rate']['median']:,.0f}/s")
            if sm.get("peak_rss_mb", {}).get("median"):
                extra.append(f"rss {sm['peak_rss_mb']['median']:.0f} MB")
            if sm.get("peak_in_flight", {}).get("median"):
                extra.append(f"in flight up to {sm['peak_in_flight']['median']:,.0f}")
            if sm.get("order_violations"):
                extra.append(f"order violations {sm['order_violations']}")
            if sm["lost"]["max"]:
                extra.append(f"lost up to {sm['lost']['max']:.0f}")
            if sm.get("bound"):
                extra.append(f"{sm['bound']}-bound")
            lat = lambda k: (f"{sm[k]['median']:,.0f}" if k in sm else "")
            cpu = lambda k: (f"{sm[k]['median']:.2f}" if sm.get(k, {}).get("median") is not None else "")
            rows.append((label, s, f"{tp['median']:,.0f} ({tp['min']:,.0f}-{tp['max']:,.0f})",
                         f"{sm['produce_rate']['median']:,.0f}", lat("latency_p50_us"),
                         lat("latency_p99_us"), lat("latency_p99.9_us"),
                         cpu("server_cpu_s_per_100k"), cpu("client_cpu_s_per_100k"), ", ".join(extra)))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
