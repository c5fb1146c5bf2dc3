"""bench/latency_hops.py runs (no figures asserted: speed is the bench's business): every record
the producer sends reaches the consumer through the instrumented server, and each record on
the parked path has all five hops."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_record_arrives_and_parked_records_have_every_hop(tmp_path):
    out = tmp_path / "hops.json"
    proc = subprocess.run([sys.executable, "-m", "bench.latency_hops", "--rate", "1000", "--seconds", "0.5",
                           "--runs", "1", "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run,) = json.loads(out.read_text())["runs"]
    assert run["records"] == 500
    assert 0 < run["p50_us"] <= run["p99_us"]
    assert 0 <= run["parked"] <= run["records"] and run["records_per_reply"] >= 1
    if run["parked"]:
        assert all(v is not None for v in run["parked_hops_us"].values()), run
