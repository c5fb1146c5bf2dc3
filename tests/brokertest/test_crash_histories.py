"""Histories under kill -9, checked for anomalies (brokertest/crash_histories.py, history.py).

The quick profile runs a few kills per broker; HYPOTHESIS_PROFILE=deep (make test-deep) runs
500 per broker, 1,000 in all, and prints each anomaly's count. HISTORY_KILLS=N sets it.
"""

import os

import pytest

from brokertest.crash_histories import log_history, queue_history
from brokertest.history import check_log, check_queue

DEEP = os.environ.get("HYPOTHESIS_PROFILE") == "deep"
KILLS = int(os.environ.get("HISTORY_KILLS", "500" if DEEP else "3"))


@pytest.mark.timeout(600 + 4 * KILLS)
def test_minibroker_history_under_kill_9_has_no_anomaly(minibroker_factory, capsys):
    pytest.importorskip("pika")
    broker = minibroker_factory(mode="process", fsync="always")
    history = queue_history(broker, rounds=KILLS, seed=KILLS)
    found = check_queue(history)
    with capsys.disabled():
        print(f"\nminibroker, {KILLS} kill -9s: {len(history.sent)} sent, {len(history.confirmed)} "
              f"confirmed, {len(history.deliveries)} deliveries\n{found.table()}")
    assert history.confirmed and history.deliveries
    assert found.ok, found


@pytest.mark.timeout(600 + 4 * KILLS)
def test_minilog_history_under_kill_9_has_no_anomaly(minilog_factory, capsys):
    pytest.importorskip("confluent_kafka")
    broker = minilog_factory(mode="process")
    history = log_history(broker, rounds=KILLS, seed=KILLS)
    found = check_log(history)
    with capsys.disabled():
        print(f"\nminilog, {KILLS} kill -9s: {len(history.sent)} sent, {len(history.acked)} acked, "
              f"{len(history.polls)} polled, {sum(map(len, history.final.values()))} in the log\n"
              f"{found.table()}")
    assert history.acked and history.polls
    assert found.ok, found
