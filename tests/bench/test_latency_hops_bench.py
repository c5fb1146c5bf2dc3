"""bench/latency_hops.py runs (no figures asserted: speed is the bench's business): every record
the producer sends reaches the consumer through the instrumented server, and each record on
the parked path has all five hops."""

from harness import run_bench


def test_every_record_arrives_and_parked_records_have_every_hop(tmp_path):
    (run,) = run_bench("latency_hops", ["--rate", 1000, "--seconds", 0.5, "--runs", 1], tmp_path / "hops.json")["runs"]
    assert run["records"] == 500
    assert 0 < run["p50_us"] <= run["p99_us"]
    assert 0 <= run["parked"] <= run["records"] and run["records_per_reply"] >= 1
    # At 1,000 records/s the consumer's fetch is parked when most records land: the tool must
    # find them where the server writes their replies.
    assert run["parked"] > 0, run
    assert all(v is not None for v in run["parked_hops_us"].values()), run
    assert 0 <= run["waited"] <= run["records"] - run["parked"]
    if run["waited"]:
        assert all(v is not None for v in run["waited_hops_us"].values()), run


def test_a_record_that_waited_for_a_fetch_is_timed_from_its_produce_to_the_fetch_that_took_it():
    from bench.latency_hops import analyse
    us = 1000
    # Offset 0 lands (produce rx at 100 us) while no fetch is parked; the consumer's fetch comes
    # at 300 us and is answered at once (on arrival) with offsets 0 and 1, written 310 -> 330 us.
    # Offset 2 lands at 500 us on a parked fetch, answered inside that produce: 520 -> 540 us.
    replies = [[2, 300 * us, 310 * us, 330 * us, True], [3, 500 * us, 520 * us, 540 * us, False]]
    appends = [[0, 0, 100 * us], [1, 1, 250 * us], [2, 2, 500 * us]]
    records = [[0, 50 * us, 350 * us, 400 * us], [1, 200 * us, 350 * us, 410 * us], [2, 450 * us, 560 * us, 600 * us]]
    r = analyse(replies, records, appends)
    assert r["parked"] == 1 and r["parked_hops_us"]["stamp->server rx"] == 50.0
    assert r["waited"] == 2
    hops = r["waited_hops_us"]
    assert hops["server rx->fetch rx"] == 125.0                      # 200 and 50 us
    assert hops["fetch rx->reply start"] == 10.0 and hops["reply write"] == 20.0
    assert hops["reply end->consumer wake"] == 20.0 and hops["consumer wake->returned"] == 55.0
    assert r["waited_p50_us"] == 280.0                                # 350 and 210 us
