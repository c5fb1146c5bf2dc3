"""Fixtures for the client tests: a real minibroker on 127.0.0.1 and pika-style connections to it.

`connect()` opens a `BlockingConnection` to the test's server (closed at the end);
`pika_params` are its ConnectionParameters; `run_program(path, *argv)` runs a pika program
as a separate process against that server with nothing changed but its import line (the
default port is pointed at the test server, as a user would run it against 5673).
"""

import os
import subprocess
import sys

import pytest

from clients import broker as pika

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def pika_params(minibroker_server):
    return pika.ConnectionParameters(host=minibroker_server.host, port=minibroker_server.port)


@pytest.fixture
def connect(pika_params):
    opened = []

    def make(params=None):
        conn = pika.BlockingConnection(params or pika_params)
        opened.append(conn)
        return conn

    yield make
    for conn in opened:
        if conn.is_open:
            conn.close()


# A program starts with the default port pointed at the test server: the program itself
# still says ConnectionParameters(host='localhost') and nothing else.
_RUNNER = (
    "import runpy, sys; import clients.broker.connection as c; c.DEFAULT_PORT = int(sys.argv[1]); "
    "sys.argv = sys.argv[2:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


@pytest.fixture
def run_program(minibroker_server):
    started = []

    def start(path, *argv):
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   PYTHONUNBUFFERED="1")
        proc = subprocess.Popen([sys.executable, "-c", _RUNNER, str(minibroker_server.port), path, *argv],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
