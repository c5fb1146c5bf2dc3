"""bench/latency_hops.py runs (no figures asserted: speed is the bench's business): every record
the producer sends reaches the consumer through the instrumented server, and each record on
the parked path has all five hops."""

from harness import run_bench


def test_every_record_arrives_and_parked_records_have_every_hop(tmp_path):
    (run,) = run_bench("latency_hops", ["--rate", 1000, "--seconds", 0.5, "--runs", 1], tmp_path / "hops.json")["runs"]
    assert run["records"] == 500
    assert 0 < run["p50_us"] <= run["p99_us"]
    assert 0 <= run["parked"] <= run["records"] and run["records_per_reply"] >= 1
    if run["parked"]:
        assert all(v is not None for v in run["parked_hops_us"].values()), run
