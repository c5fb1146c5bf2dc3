"""Shared fixtures: real servers on 127.0.0.1, ephemeral ports, temporary data directories.

`minibroker_server` / `minilog_server` run in-process (a thread with its own loop);
`minibroker_process` / `minilog_process` run as subprocesses that can be killed. The factory
fixtures (`start_minibroker`, `start_minilog`, `spawn_server`) start more of either, with
extra options, and stop them all at the end of the test.
"""

import os
import sys

import pytest
from hypothesis import HealthCheck, settings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import ServerProcess, ServerThread  # noqa: E402

settings.register_profile("ci", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("deep", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# The deep profile runs ~33 times the examples, so pytest's per-test timeout (120 s in
# pyproject.toml, less in some modules) would stop its long runs part-way: there every test gets
# at least DEEP_TEST_TIMEOUT seconds (30 minutes unless set), still bounded so a hang ends.
DEEP = os.environ.get("HYPOTHESIS_PROFILE") == "deep"
DEEP_TEST_TIMEOUT = float(os.environ.get("DEEP_TEST_TIMEOUT", "1800"))


def pytest_collection_modifyitems(config, items):
    if not DEEP:
        return
    default = float(config.getini("timeout") or 0)
    for item in items:
        marker = item.get_closest_marker("timeout")
        own = float(marker.args[0]) if marker and marker.args else default
        if own and own < DEEP_TEST_TIMEOUT:
            item.add_marker(pytest.mark.timeout(DEEP_TEST_TIMEOUT), append=False)


@pytest.fixture
def start_server_thread(tmp_path):
    """start_server_thread(ServerClass, data_dir=None, **server_kwargs) -> a started ServerThread.

    Every server it started is stopped when the test ends, last started first.
    """
    started = []

    def start(server_cls, data_dir=None, **kwargs):
        name = server_cls.name
        server = ServerThread(server_cls, data_dir or tmp_path / f"{name}-{len(started)}", **kwargs)
        started.append(server)
        return server.start()

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture
def start_minibroker(start_server_thread):
    from minibroker.server import MinibrokerServer
    return lambda data_dir=None, **kwargs: start_server_thread(MinibrokerServer, data_dir, **kwargs)


@pytest.fixture
def start_minilog(start_server_thread):
    from minilog.server import MinilogServer
    return lambda data_dir=None, **kwargs: start_server_thread(MinilogServer, data_dir, **kwargs)


@pytest.fixture
def minibroker_server(start_minibroker):
    return start_minibroker()


@pytest.fixture
def minilog_server(start_minilog):
    return start_minilog()


@pytest.fixture
def spawn_server(tmp_path):
    """spawn_server("minibroker", data_dir=None, extra_args=()) -> a started ServerProcess."""
    started = []

    def spawn(module, data_dir=None, extra_args=()):
        proc = ServerProcess(module, data_dir or tmp_path / f"{module}-proc-{len(started)}", extra_args)
        started.append(proc)
        return proc.start()

    yield spawn
    for proc in reversed(started):
        proc.kill()


@pytest.fixture
def minibroker_process(spawn_server):
    return spawn_server("minibroker")


@pytest.fixture
def minilog_process(spawn_server):
    return spawn_server("minilog")
