"""bench/log_page_cache.py runs (no figures asserted: speed is measured by the bench, not here):
every log it appends reads back whole, with and without drop-behind."""

from harness import run_bench


def test_each_window_appends_and_reads_back_the_whole_log(tmp_path):
    result = run_bench("log_page_cache", ["--total-mib", 6, "--repeat", 1, "--windows", "1,off", "--dir", tmp_path],
                       tmp_path / "result.json")
    assert set(result["medians"]) == {"raw os.write", "append, drop-behind 1 MiB", "append, drop-behind off"}
    for name, m in result["medians"].items():
        assert m["MBps"] > 0 and m["cpu_s_per_GB"] >= 0, (name, m)
        if name != "raw os.write":
            assert m["read_back_MBps"] > 0
