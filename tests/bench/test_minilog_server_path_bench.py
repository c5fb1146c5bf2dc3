"""bench/minilog_server_path.py runs (no figures asserted: speed is the bench's business): each
parked fetch is answered by its produce, each fetch of the record at once, and each record of the
streamed fetch by one answer starting at it, and each chained record by the loop callback's read
(not inside its append), or the bench fails."""

from harness import run_bench


def test_the_server_path_bench_runs_every_step_for_every_record(tmp_path):
    (run,) = run_bench("minilog_server_path", ["--records", 300, "--runs", 1], tmp_path / "path.json")["runs"]
    assert set(run) == {"park_fetch_us", "produce_and_parked_reply_us", "immediate_fetch_us",
                        "produce_and_streamed_reply_us", "loop_turn_us", "produce_and_loop_read_reply_us"}
    assert all(us > 0 for us in run.values())
