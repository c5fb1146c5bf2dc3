"""Fixtures of the minilog core tests: a `LogBroker` in this test's own event loop, no sockets.

`open_broker(**settings)` opens a core on the test's temporary directory (the same directory
again after `close()`, for restarts); every core opened is closed when the test ends.
"""

import pytest

from minilog.broker import LogBroker


@pytest.fixture
def open_broker(tmp_path):
    opened = []

    def open_(data_dir=None, **settings):
        broker = LogBroker(str(data_dir or tmp_path / "minilog"), **settings)
        broker.open()
        opened.append(broker)
        return broker

    yield open_
    for broker in reversed(opened):
        broker.close()


@pytest.fixture
async def broker(open_broker):
    # async: the core opens on a running loop (its group commit answers on that loop).
    return open_broker()
