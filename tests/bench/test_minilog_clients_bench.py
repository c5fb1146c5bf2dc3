"""bench/minilog_clients.py runs (no figures asserted: speed is measured by the bench, not here):
its latency parts deliver every record, and it starts its own server whoever holds the
default ports."""

import socket

from harness import run_bench


def test_latency_and_raw_latency_count_every_record_with_the_kafka_port_taken(tmp_path):
    # The bench's server must not need the Kafka door's default port (another minilog, or a
    # second bench, may hold it): hold it ourselves when it is free.
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", 9092))
        holder.listen()
    except OSError:
        pass  # taken already: the case this guards against
    try:
        result, printed = run_bench("minilog_clients", ["--runs", 1, "--only", "latency,latency-raw",
                                                        "--latency-rate", 1000, "--latency-seconds", 0.3],
                                    tmp_path / "result.json", with_output=True)
    finally:
        holder.close()
    for part in ("latency", "latency_raw"):
        assert result[part]["records"] == 300 and 0 < result[part]["p50_us"] <= result[part]["max_us"], result[part]
    assert "latency-raw at 1,000/s" in printed


def test_both_replays_read_every_record_once_in_order(tmp_path):
    # Each consume role asserts it got every record once, last offset last; a failure exits non-zero.
    result = run_bench("minilog_clients", ["--runs", 1, "--records", 20000, "--only", "consume,aio-consume"],
                       tmp_path / "result.json")
    assert result["consume_records_per_s"] > 0 and result["aio_consume_records_per_s"] > 0, result
