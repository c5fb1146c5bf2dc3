"""bench/latency_floor.py runs (no figures asserted: speed is the bench's business): in both
modes every record the producer sends reaches the consumer, and the JSON says so."""

from harness import run_bench


def test_both_modes_deliver_every_record(tmp_path):
    runs = run_bench("latency_floor", ["--rate", 2000, "--seconds", 0.5, "--runs", 1], tmp_path / "floor.json")["runs"]
    assert set(runs) == {"push", "longpoll"}
    for mode, results in runs.items():
        assert [r["records"] for r in results] == [1000], mode
        assert 0 < results[0]["p50_us"] <= results[0]["p99_us"], mode
