"""The benchmark harness itself: its arithmetic, its report, its CLI, and one short real run of
each of our brokers through it (no figures asserted - speed is measured in bench/, not here -
only that every message sent was delivered and counted)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import stats
from bench.report import write_report
from bench.suite import summarise
from bench.workloads import WORKLOADS, Case, cases_for

ROOT = Path(__file__).resolve().parents[2]


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))            # 1..100
    assert stats.percentile(values, 50) == 50
    assert stats.percentile(values, 99) == 99
    assert stats.percentile(values, 99.9) == 100
    assert stats.percentile(values, 100) == 100
    assert stats.percentile([7], 50) == 7
    with pytest.raises(ValueError):
        stats.percentile([], 50)
    with pytest.raises(ValueError):
        stats.percentile(values, 101)


def test_latency_summary_and_spread():
    s = stats.latency_summary([5, 1, 3, 2, 4] * 200)
    assert s["count"] == 1000 and s["p50"] == 3 and s["max"] == 5 and s["p99.9"] == 5
    assert stats.latency_summary([]) == {"count": 0}
    assert stats.spread([3.0, None, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert stats.spread([None])["median"] is None
    assert stats.ratio(4, 2) == 2 and stats.ratio(1, 0) is None


def test_every_workload_expands_into_cases():
    assert len(WORKLOADS) == 7
    for name in WORKLOADS:
        cases = cases_for(name, 1.0)
        assert cases and all(c.workload == name and c.duration == 1.0 for c in cases)
    assert [c.label for c in cases_for("latency", 1.0)] == [
        "rate=1000", "rate=10000", "rate=50000", "rate=max"]
    assert not cases_for("replay", 1.0)[0].queue_ok


def _sample_result(workload="telemetry"):
    case = cases_for(workload, 1.0)[0]
    runs = [{"throughput": t, "produce_rate": t * 1.1, "mb_per_s": t / 1e4, "lost": 0,
             "order_violations": 0, "drained": True, "peak_rss_mb": 30.0,
             "latency_us": {"count": 10, "p50": 100, "p90": 150, "p99": 300, "p99.9": 400, "max": 500}}
            for t in (1000.0, 1200.0, 1100.0)]
    slow = [dict(r, throughput=r["throughput"] / 4) for r in runs]
    return {"workload": workload, "started": "2026-11-28T12:00:00+00:00", "duration": 1.0, "repeat": 3,
            "machine": {"cores": 2, "cpu_model": "test cpu", "memory_gib": 1, "os": "linux",
                        "python": "3.11", "loadavg_at_start": [0.5, 0.5, 0.5]},
            "systems": {"minilog": {"server": "minilog", "client": "clients.log", "paradigm": "log"},
                        "minibroker": {"server": "minibroker", "client": "clients.aio_broker",
                                       "paradigm": "queue"},
                        "rabbitmq": {"skipped": "not started (pass --start-peers)"}},
            "cases": [{"case": case.to_dict(), "results": {
                "minilog": {"runs": runs, "summary": summarise(runs), "settings": {"durability": "page cache"}},
                "minibroker": {"runs": slow, "summary": summarise(slow), "settings": {"durability": "fsync"}},
                "rabbitmq": {"skipped": "not started (pass --start-peers)"}}}]}


def test_report_from_sample_json(tmp_path):
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "telemetry-1.json").write_text(json.dumps(_sample_result()))
    out = tmp_path / "RESULTS.md"
    assert write_report(str(tmp_path / "res"), str(out), str(tmp_path / "charts")) == 0
    text = out.read_text()
    assert "| minilog | 1,100 (1,000–1,200) |" in text
    assert "the **log** wins (4.0× best-of-paradigm)" in text
    assert "minilog ahead 4.0×" in text
    assert "skipped: not started (pass --start-peers)" in text
    assert "page cache" in text and "fsync" in text


def test_report_without_results_says_so(tmp_path, capsys):
    assert write_report(str(tmp_path), str(tmp_path / "R.md"), str(tmp_path / "c")) == 1
    assert "no result JSON" in capsys.readouterr().err


def test_cli_list_and_bad_arguments():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "bench", "list"], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    for name in WORKLOADS:
        assert name in out.stdout
    bad = subprocess.run([sys.executable, "-m", "bench", "run", "nope"], capture_output=True,
                         text=True, cwd=ROOT, env=env, timeout=30)
    assert bad.returncode == 2 and "unknown workload" in bad.stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize("system", ["minibroker", "minibroker-pika", "minilog", "minilog-aio",
                                    "minibroker-amqp", "minibroker-amqp-pika", "minilog-kafka",
                                    "minilog-kafka-aiokafka"])
def test_smoke_run_against_our_broker(system, tmp_path):
    from bench.suite import Servers, run_workload
    from bench.systems import client_missing
    if client_missing(system):
        pytest.skip(client_missing(system))
    servers = Servers([system], False, {}, lambda s: None)
    if system not in servers.handles:
        pytest.fail(f"{system} did not start: {servers.skipped.get(system)}")
    try:
        result = run_workload("telemetry", [system], 1.0, 1, json_dir=str(tmp_path),
                              options={"partitions": 2}, servers=servers, say=lambda s: None)
    finally:
        servers.stop()
    slot = result["cases"][0]["results"][system]
    assert slot["errors"] == [] and len(slot["runs"]) == 1
    run = slot["runs"][0]
    assert run["sent"] > 0 and run["received"] == run["expected"] == run["sent"]
    assert run["order_violations"] == 0
    # one tracker service: a single consumer process read both partitions / queues
    assert run["consumer_processes"] == 1 and run["producer_processes"] == 1
    assert list(tmp_path.glob("telemetry-*.json"))
    # latency leaves out the warm-up (first 10 % of the run), so it counts fewer messages
    counted = run.get("latency_us", {}).get("count", 0)
    assert counted < run["received"]
    if system in ("minibroker-pika", "minilog"):
        # Blocking producers stamp each batch as they send it. The asyncio ones stamp up to a
        # confirm window (1,000) ahead, and under heavy load may send nothing past the warm-up.
        assert counted > 0


CONSUMER_PROCESSES = {"task-queue": 2, "fanout": 3}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("system", ["minibroker", "minilog"])
def test_every_workload_runs_once_against_our_broker(system, tmp_path):
    """The smoke run that keeps the bench from rotting: every workload, one small case, one
    repeat, against one of our servers; everything sent arrives and the CPU figures are there."""
    from bench.suite import Servers, new_session_id, run_workload
    servers = Servers([system], False, {}, lambda s: None)
    assert system in servers.handles, servers.skipped.get(system)
    session = new_session_id()
    only = {"latency": ["rate=1000"], "scaling": ["size=1024"]}
    try:
        for name in WORKLOADS:
            options = {"count": 2000}
            options["only"] = only.get(name, [cases_for(name, 1.0, options)[0].label])
            result = run_workload(name, [system], 0.3, 1, json_dir=str(tmp_path), options=options,
                                  servers=servers, say=lambda s: None, session=session)
            assert result["session"] == session
            slot = result["cases"][0]["results"][system]
            if "unsupported" in slot:          # a queue cannot replay: said, not failed
                assert name == "replay" and system == "minibroker"
                continue
            assert slot["errors"] == [] and len(slot["runs"]) == 1, (name, slot)
            run = slot["runs"][0]
            assert run["received"] == run["expected"] > 0, (name, run)
            # /proc counts CPU in 10 ms ticks, so a tiny run may show 0; the figures must be there
            assert run["server_cpu_s_per_100k"] >= 0 and run["client_cpu_s_per_100k"] >= 0, (name, run)
            assert name == "backlog" or run["peak_in_flight"] >= 0, (name, run)
            # competing workers and independent services are processes of their own; the rest
            # run one consumer process, whatever its lanes
            assert run["consumer_processes"] == CONSUMER_PROCESSES.get(name, 1), (name, run)
    finally:
        servers.stop()
    assert len(list(tmp_path.glob("*.json"))) == len(WORKLOADS)


def test_a_run_is_published_only_when_asked(tmp_path):
    from bench.__main__ import main
    from bench.report import write_report
    first = _sample_result()
    second = dict(_sample_result("fanout"), session="20261206T100000Z-2")
    first["session"] = "20261206T090000Z-1"
    (tmp_path / "telemetry-1.json").write_text(json.dumps(first))
    (tmp_path / "fanout-1.json").write_text(json.dumps(second))
    out = tmp_path / "R.md"
    assert write_report(str(tmp_path), str(out), str(tmp_path / "charts")) == 0
    text = out.read_text()
    assert "These workloads come from 2 different runs" in text
    assert "20261206T090000Z-1" in text and "20261206T100000Z-2" in text
    with pytest.raises(SystemExit):      # --save and --json-dir name two places
        main(["run", "telemetry", "--save", "--json-dir", str(tmp_path)])


def test_report_puts_servers_side_by_side_through_the_same_client(tmp_path):
    data = _sample_result()
    entry = data["cases"][0]["results"]
    runs = lambda rate, cpu: [{"throughput": rate, "produce_rate": rate, "lost": 0, "drained": True,
                               "server_cpu_s_per_100k": cpu, "client_cpu_s_per_100k": 5.0}]
    for name, rate, cpu in (("rabbitmq-pika", 8000.0, 7.0), ("minibroker-amqp-pika", 12000.0, 1.4)):
        entry[name] = {"runs": runs(rate, cpu), "summary": summarise(runs(rate, cpu)),
                       "settings": {"durability": "transient messages"}}
        data["systems"][name] = {"server": name, "client": "pika", "paradigm": "queue"}
    (tmp_path / "telemetry-1.json").write_text(json.dumps(data))
    out = tmp_path / "R.md"
    assert write_report(str(tmp_path), str(out), str(tmp_path / "charts")) == 0
    text = out.read_text()
    assert "## Server against server, same client" in text
    assert "| telemetry | partitions=4 | pika | 8,000 | 12,000 | 1.50× | 7.00 | 1.40 | 5.0× |" in text


def test_notes_are_reported_only_with_the_runs_they_describe(tmp_path, capsys):
    """A new run replacing every workload must not be reported under notes quoting the old
    run's figures: NOTES.md names its runs, and is left out (with a line saying so) otherwise."""
    old, new = "20261128T130000Z-1", "20261206T134500Z-2"
    for name in ("telemetry", "fanout"):
        data = dict(_sample_result(name), session=new)
        (tmp_path / f"{name}-1.json").write_text(json.dumps(data))
    notes = tmp_path / "NOTES.md"
    notes.write_text(f"<!-- notes on runs: {old} -->\n## Read this first\n\nminilog did 999k.\n")
    out = tmp_path / "R.md"
    assert write_report(str(tmp_path), str(out), str(tmp_path / "charts")) == 0
    text = out.read_text()
    assert "999k" not in text and "No notes on this run yet" in text and new in text
    assert f"<!-- notes on runs: {new} -->" in capsys.readouterr().err
    # the runs table shows one run: no warning about mixing runs
    assert "different runs" not in text
    notes.write_text(f"<!-- notes on runs: {new} -->\n## Read this first\n\nminilog did 999k.\n")
    assert write_report(str(tmp_path), str(out), str(tmp_path / "charts")) == 0
    text = out.read_text()
    assert "minilog did 999k." in text and "No notes" not in text and "notes on runs" not in text
    # a result file's name serves for results saved before runs had a session id
    for f in tmp_path.glob("*-1.json"):
        data = json.loads(f.read_text())
        data.pop("session")
        f.write_text(json.dumps(data))
    notes.write_text("<!-- notes on runs: telemetry-1.json -->\nminilog did 999k.\n")
    assert write_report(str(tmp_path), str(out), str(tmp_path / "charts")) == 0
    assert "999k" not in out.read_text()          # fanout-1.json is not named
    notes.write_text("<!-- notes on runs: telemetry-1.json fanout-1.json -->\nminilog did 999k.\n")
    assert write_report(str(tmp_path), str(out), str(tmp_path / "charts")) == 0
    assert "999k" in out.read_text()


@pytest.mark.timeout(120)
def test_run_all_gives_backlog_servers_of_its_own(tmp_path, capsys):
    """`run all` is the published run in one command: backlog's server memory must come from
    servers that did not hold the earlier workloads' data, so it gets freshly started ones."""
    from bench.__main__ import main
    assert main(["run", "fanout,replay,backlog", "--systems", "minilog", "--duration", "0.3",
                 "--repeat", "1", "--count", "2000",
                 "--only", "services=3,records=2000,backlog=2000",
                 "--json-dir", str(tmp_path)]) == 0
    assert "backlog: restarting the servers" in capsys.readouterr().err
    pid = {}
    for f in tmp_path.glob("*.json"):
        data = json.loads(f.read_text())
        run = data["cases"][0]["results"]["minilog"]["runs"][0]
        assert run["received"] == run["expected"] > 0, (data["workload"], run)
        pid[data["workload"]] = data["systems"]["minilog"]["server_pid"]
    assert pid["fanout"] == pid["replay"] != pid["backlog"], pid


@pytest.mark.timeout(90)
def test_large_records_through_the_aiokafka_api_all_arrive(tmp_path):
    """64 KiB records in the bench's larger aiokafka-API batches (MAX_BATCH_BYTES) stay under
    minilog's 1 MiB max.message.bytes: every record sent arrives, none refused as too large.
    (clients.aio_log closes a batch one record past the size; the real aiokafka is run with the
    same setting by the telemetry smoke run above.)"""
    from bench.suite import Servers, run_workload
    system = "minilog-aio"
    servers = Servers([system], False, {}, lambda s: None)
    assert system in servers.handles, servers.skipped.get(system)
    try:
        result = run_workload("scaling", [system], 0.5, 1, json_dir=str(tmp_path),
                              options={"only": ["size=65536"]}, servers=servers, say=lambda s: None)
    finally:
        servers.stop()
    slot = result["cases"][0]["results"][system]
    assert slot["errors"] == [] and len(slot["runs"]) == 1, slot
    run = slot["runs"][0]
    assert run["sent"] > 16 and run["received"] == run["sent"] and run["lost"] == 0, run


def _listening(port_filter=None, inodes=None):
    """(address, port) of listening TCP sockets from /proc/net, by socket inode or port."""
    found = []
    for name in ("tcp", "tcp6"):
        try:
            rows = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if f[3] != "0A":                                     # LISTEN
                continue
            addr, port = f[1].rsplit(":", 1)
            port = int(port, 16)
            if (inodes is not None and f[9] in inodes) or port == port_filter:
                found.append((addr, port))
    return found


def _socket_inodes(pids):
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            pass
    return inodes


LOOPBACK = ("0100007F", "00000000000000000000000001000000")    # 127.0.0.1, ::1 as /proc shows them


@pytest.mark.timeout(120)
def test_started_rabbitmq_listens_on_loopback_only_and_leaves_nothing(tmp_path):
    """--start-peers' RabbitMQ: AMQP, Erlang distribution and its epmd on loopback only, and
    nothing of it left listening once stopped."""
    if not os.environ.get("BENCH_PEER_TESTS"):
        pytest.skip("starts a RabbitMQ: set BENCH_PEER_TESTS=1 to run")
    from bench.systems.servers import ServerUnavailable, process_tree, start_rabbitmq
    try:
        handle = start_rabbitmq()
    except ServerUnavailable as e:
        pytest.skip(f"RabbitMQ cannot start here: {e}")
    try:
        pids = process_tree(handle.proc.pid)
        env = next((Path(f"/proc/{p}/environ").read_bytes() for p in pids
                    if b"ERL_EPMD_PORT=" in Path(f"/proc/{p}/environ").read_bytes()), b"")
        epmd_port = int(env.split(b"ERL_EPMD_PORT=")[1].split(b"\0")[0])
        sockets = _listening(inodes=_socket_inodes(pids)) + _listening(port_filter=epmd_port)
        assert {p for _, p in sockets} >= {handle.endpoint["port"], epmd_port}, sockets
        assert all(addr in LOOPBACK for addr, _ in sockets), sockets
    finally:
        handle.stop()
    assert _listening(port_filter=handle.endpoint["port"]) == []
    assert _listening(port_filter=epmd_port) == []
