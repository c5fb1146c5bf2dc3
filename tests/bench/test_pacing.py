"""bench/pacing.py: the latency benches' producers send each record at its own time."""

import sys
import time

import pytest

from bench.pacing import paced, tighten_timer_slack


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timer slack is a Linux setting")
def test_timer_slack_is_tightened():
    # At the default 50 us, a sleep overran most of a 100 us interval and records went in pairs.
    assert tighten_timer_slack() == 1


def test_each_record_is_yielded_once_and_never_before_it_is_due():
    rate, start = 5000, time.perf_counter()
    due_and_yielded = [(start + i * (1.0 / rate), time.perf_counter()) for i in paced(50, rate, start)]
    assert len(due_and_yielded) == 50
    assert all(yielded >= due for due, yielded in due_and_yielded)


def test_records_already_due_go_at_once():
    # A producer that ran late catches up without sleeping: all are due at a start long past.
    assert list(paced(5, 1000, time.perf_counter() - 10)) == [0, 1, 2, 3, 4]
