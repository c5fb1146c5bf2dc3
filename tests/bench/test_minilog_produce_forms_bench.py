"""bench/minilog_produce_forms.py runs (no figures asserted: speed is the bench's business):
every form it measures delivers its records, and the common forms stay on the fast path (only a
batch's first record leaves it)."""

from harness import run_bench


def test_every_form_runs_and_the_common_forms_stay_on_the_fast_path(tmp_path):
    forms = run_bench("minilog_produce_forms", ["--runs", 1, "--records", 3000], tmp_path / "forms.json")["forms"]
    assert set(forms) == {"value", "partition", "key-partition", "keys", "aio-value", "aio-partition", "aio-keys"}
    for name, result in forms.items():
        assert result["cpu_us_per_record"] > 0, name
        # 3,000 records of 100 B fill a few batches at most (aiokafka's are 16 KiB: ~21).
        assert result["slow_calls"] < 100, (name, result["slow_calls"])
