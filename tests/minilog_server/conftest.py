"""Fixtures of the minilog server tests: a server with fast group ticks and short test timeouts."""

import pytest


@pytest.fixture
def server(start_minilog):
    return start_minilog()
