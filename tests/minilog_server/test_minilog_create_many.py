"""Creating many topics in one request neither blocks other clients nor slows down as topics add up."""

import threading
import time

import pytest

from clients.protocol.errors import BrokerError, ErrorCode
from minilog_wire_helpers import connect


def test_creating_300_topics_leaves_other_clients_answered_and_costs_flat(server):
    with connect(server) as admin, connect(server) as other:
        stop = threading.Event()
        worst = []

        def ping_loop():
            while not stop.is_set():
                started = time.monotonic()
                other.call("ping", timeout=30)
                worst.append(time.monotonic() - started)

        pinger = threading.Thread(target=ping_loop)
        pinger.start()
        timings = []
        try:
            for batch_no in range(3):
                specs = [{"name": f"t{batch_no}-{i}", "num_partitions": 1} for i in range(100)]
                started = time.monotonic()
                result = admin.call("create_topics", {"topics": specs}, timeout=120)
                timings.append(time.monotonic() - started)
                assert all(v is None for v in result["results"].values())
        finally:
            stop.set()
            pinger.join()
        assert len(admin.call("metadata", {})["topics"]) == 300
        # Each topic gives the loop back: another client's ping waits for one topic, not 100.
        assert max(worst) < max(timings) / 3, (max(worst), timings)
        # The 300th topic costs what the first did (it was 5x more once the index files added up).
        assert timings[2] < 3 * timings[0] + 0.5, timings


def test_a_create_request_is_bounded(server):
    with connect(server) as c:
        with pytest.raises(BrokerError) as refused:
            c.call("create_topics", {"topics": [{"name": f"x{i}"} for i in range(1001)]})
        assert refused.value.code == ErrorCode.BAD_REQUEST and "at most 1000" in refused.value.message
