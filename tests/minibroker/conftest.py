"""Helpers for the minibroker wire tests: a raw client that sorts the server's pushes.

`Wire` wraps `clients.rpc.RpcConnection` (the raw ops, no pika-style client) and files each
push by kind, so a test can wait for "5 deliveries" or "the confirm of seq 10" with a deadline.
"""

import pytest

from minibroker_test_wire import Wire


@pytest.fixture
def broker(start_minibroker):
    return start_minibroker()


@pytest.fixture
def wire(broker):
    opened = []

    def connect(max_frame=None):
        w = Wire(broker, max_frame)
        opened.append(w)
        return w

    yield connect
    for w in opened:
        w.close()


@pytest.fixture
def client(wire):
    return wire()
