"""The pytest plugin: fixtures that give a test a real broker.

    def test_orders(minibroker):                       # AMQP: the real pika, unchanged
        conn = pika.BlockingConnection(pika.URLParameters(minibroker.amqp_url))

    def test_events(minilog):                          # Kafka: the real confluent-kafka
        p = confluent_kafka.Producer({"bootstrap.servers": minilog.kafka_bootstrap})

`minibroker` and `minilog` run in a thread of the test process (fast; `restart()` keeps the
data directory). `minibroker_factory(mode="process", fsync="never")` and `minilog_factory(...)`
start more, as subprocesses when `mode="process"` (then `kill()` is a real kill -9 and
`start()` recovers from the same directory); options are the server's command-line flags
with `_` for `-` (`num_partitions=3`, `fsync="never"`). Every server a test started is stopped
when it ends. Each listens on 127.0.0.1 only, every door on a port the OS picks.
"""

import pytest

from .servers import ServerProcess, ServerThread


def _server_class(name):
    if name == "minibroker":
        from minibroker.server import MinibrokerServer
        return MinibrokerServer, {"amqp_port": 0}
    from minilog.server import MinilogServer
    return MinilogServer, {"kafka_port": 0}


def _flags(options: dict) -> list[str]:
    out = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            out.append(flag)
        elif value is not False and value is not None:
            out += [flag, str(value)]
    return out


def _factory(name, tmp_path_factory):
    started = []

    def start(mode: str = "thread", data_dir=None, **options):
        """Start a server; mode "thread" (in this process) or "process" (a subprocess)."""
        data_dir = data_dir or tmp_path_factory.mktemp(name)
        if mode == "thread":
            cls, doors = _server_class(name)
            server = ServerThread(cls, data_dir, **{**doors, **options})
        elif mode == "process":
            server = ServerProcess(name, data_dir, extra_args=_flags(options))
        else:
            raise ValueError(f"mode must be 'thread' or 'process', not {mode!r}")
        started.append(server)
        return server.start()

    return start, started


def _stop_all(started):
    for server in reversed(started):
        if isinstance(server, ServerProcess):
            server.kill()
        else:
            server.stop()


@pytest.fixture
def minibroker_factory(tmp_path_factory):
    """minibroker_factory(mode="thread"|"process", data_dir=None, **options) -> a started minibroker."""
    start, started = _factory("minibroker", tmp_path_factory)
    yield start
    _stop_all(started)


@pytest.fixture
def minilog_factory(tmp_path_factory):
    """minilog_factory(mode="thread"|"process", data_dir=None, **options) -> a started minilog."""
    start, started = _factory("minilog", tmp_path_factory)
    yield start
    _stop_all(started)


@pytest.fixture
def minibroker(minibroker_factory):
    """A minibroker for this test: `.amqp_url` for AMQP clients, `.address` for ours."""
    return minibroker_factory()


@pytest.fixture
def minilog(minilog_factory):
    """A minilog for this test: `.kafka_bootstrap` for Kafka clients, `.address` for ours."""
    return minilog_factory()
