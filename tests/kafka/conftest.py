"""Fixtures for the Kafka front door: a minilog server with `kafka_port=0`, and its address."""

import pytest


@pytest.fixture
def kafka_minilog(start_minilog):
    """A started minilog (in a thread) with its Kafka door on a free port; `.bootstrap` is HOST:PORT."""
    srv = start_minilog(kafka_port=0)
    srv.bootstrap = f"127.0.0.1:{srv.server.listener('kafka').port}"
    return srv


@pytest.fixture
def bootstrap(kafka_minilog) -> str:
    return kafka_minilog.bootstrap
