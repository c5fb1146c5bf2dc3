"""bench/log_page_cache.py runs (no figures asserted: speed is measured by the bench, not here):
every log it appends reads back whole, with and without drop-behind."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_each_window_appends_and_reads_back_the_whole_log(tmp_path):
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, "-m", "bench.log_page_cache", "--total-mib", "6", "--repeat", "1",
                           "--windows", "1,off", "--dir", str(tmp_path), "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert set(result["medians"]) == {"raw os.write", "append, drop-behind 1 MiB", "append, drop-behind off"}
    for name, m in result["medians"].items():
        assert m["MBps"] > 0 and m["cpu_s_per_GB"] >= 0, (name, m)
        if name != "raw os.write":
            assert m["read_back_MBps"] > 0
