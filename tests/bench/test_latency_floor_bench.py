"""bench/latency_floor.py runs (no figures asserted: speed is the bench's business): in both
modes every record the producer sends reaches the consumer, and the JSON says so."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_both_modes_deliver_every_record(tmp_path):
    out = tmp_path / "floor.json"
    proc = subprocess.run([sys.executable, "-m", "bench.latency_floor", "--rate", "2000", "--seconds", "0.5",
                           "--runs", "1", "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = json.loads(out.read_text())["runs"]
    assert set(runs) == {"push", "longpoll"}
    for mode, results in runs.items():
        assert [r["records"] for r in results] == [1000], mode
        assert 0 < results[0]["p50_us"] <= results[0]["p99_us"], mode
