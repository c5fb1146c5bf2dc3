"""Fixtures for the minilog client tests: a real server and confluent-style helpers.

Every test talks to a real minilog server over 127.0.0.1 through the clients under test.
`bootstrap` is the 'host:port' string a confluent-kafka program puts in its configuration;
`make_topic(partitions)` creates a fresh topic through the AdminClient and returns its name.
Clients made with `producer(...)` / `consumer(...)` are closed at the end of the test.
"""

import itertools
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from clients.log import AdminClient, Consumer, NewTopic, Producer  # noqa: E402

_names = itertools.count(1)


@pytest.fixture
def bootstrap(minilog_server):
    return f"{minilog_server.host}:{minilog_server.port}"


@pytest.fixture
def admin(bootstrap):
    client = AdminClient({"bootstrap.servers": bootstrap})
    yield client
    client.close()


@pytest.fixture
def make_topic(admin):
    def make(partitions=1, name=None, config=None):
        name = name or f"topic-{next(_names)}"
        fs = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1, config=config)])
        fs[name].result(10)
        return name
    return make


@pytest.fixture
def producer(bootstrap):
    made = []

    def make(**conf):
        p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1, **conf})
        made.append(p)
        return p
    yield make
    for p in made:
        p.close(5)


@pytest.fixture
def consumer(bootstrap):
    made = []

    def make(**conf):
        conf.setdefault("auto.offset.reset", "earliest")
        c = Consumer({"bootstrap.servers": bootstrap, **conf})
        made.append(c)
        return c
    yield make
    for c in made:
        try:
            c.close()
        except Exception:  # a test may have closed it or killed its server already
            pass
