"""Fixtures for the AMQP 0-9-1 tests: a real minibroker with its AMQP listener on a free port,
and the same tests against a real RabbitMQ when `AMQP_TEST_URL` names one.

`amqp_broker` is parametrized: "minibroker" always, "rabbitmq" only with AMQP_TEST_URL set
(otherwise the run's header says so in one line). Tests that take `amqp_broker` use only AMQP, so they hold
for both; tests that also look inside minibroker (cross-protocol, wire errors) take
`amqp_server`, which is always minibroker.
"""

import os
import urllib.parse

import pytest


class AMQPTarget:
    def __init__(self, name, host, port, user="guest", password="guest", server=None):
        self.name = name
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.server = server         # the ServerThread for minibroker, None for RabbitMQ

    @property
    def url(self) -> str:
        return f"amqp://{self.user}:{self.password}@{self.host}:{self.port}/%2F"

    def pika_params(self, **kwargs):
        import pika
        return pika.ConnectionParameters(self.host, self.port, "/", pika.PlainCredentials(self.user, self.password),
                                         **kwargs)


@pytest.fixture
def amqp_server(start_minibroker):
    """A minibroker with the AMQP listener on a free port (as an AMQPTarget)."""
    thread = start_minibroker(amqp_port=0)
    return AMQPTarget("minibroker", thread.host, thread.server.listener("amqp").port, server=thread)


RABBITMQ_URL = os.environ.get("AMQP_TEST_URL")


def pytest_report_header(config):
    if not RABBITMQ_URL:
        return "tests/amqp: against minibroker only (AMQP_TEST_URL=amqp://user:pass@host:port/ adds a real RabbitMQ)"
    return f"tests/amqp: against minibroker and the RabbitMQ at {RABBITMQ_URL}"


@pytest.fixture(params=["minibroker", "rabbitmq"] if RABBITMQ_URL else ["minibroker"])
def amqp_broker(request):
    if request.param == "minibroker":
        return request.getfixturevalue("amqp_server")
    parts = urllib.parse.urlsplit(RABBITMQ_URL)
    return AMQPTarget("rabbitmq", parts.hostname, parts.port or 5672, urllib.parse.unquote(parts.username or "guest"),
                      urllib.parse.unquote(parts.password or "guest"))


@pytest.fixture
def pika_connect(amqp_broker):
    """pika_connect(**params) → an open pika.BlockingConnection, closed at the end of the test."""
    import pika
    opened = []

    def make(**kwargs):
        conn = pika.BlockingConnection(amqp_broker.pika_params(**kwargs))
        opened.append(conn)
        return conn

    yield make
    for conn in opened:
        if conn.is_open:
            conn.close()


@pytest.fixture
def unique(request):
    """A name unique to this test (RabbitMQ keeps what earlier runs declared)."""
    import re
    import uuid
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)[:40]
    return lambda prefix="t": f"{prefix}-{name}-{uuid.uuid4().hex[:8]}"
