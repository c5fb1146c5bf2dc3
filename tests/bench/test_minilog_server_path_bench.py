"""bench/minilog_server_path.py runs (no figures asserted: speed is the bench's business): each
parked fetch is answered by its produce and each fetch of the record at once, or the bench fails."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_server_path_bench_runs_every_step_for_every_record(tmp_path):
    out = tmp_path / "path.json"
    proc = subprocess.run([sys.executable, "-m", "bench.minilog_server_path", "--records", "300", "--runs", "1",
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    (run,) = json.loads(out.read_text())["runs"]
    assert set(run) == {"park_fetch_us", "produce_and_parked_reply_us", "immediate_fetch_us"}
    assert all(us > 0 for us in run.values())
