"""RabbitMQ's six Python tutorials run with the real pika against minibroker's AMQP listener.

The programs are the ones in tests/broker_clients/tutorials/ (written for pika), with their
import line put back to `import pika`; the only other change is the port, given as pika's
default port. The test functions are the same ones tests/broker_clients/test_pika_tutorials.py
runs against our own client: they are imported here and take this module's `run_program`.
"""

import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "broker_clients"))

from test_pika_tutorials import (  # noqa: E402,F401  (collected here, with this module's run_program)
    test_hello_world, test_publish_subscribe_reaches_every_subscriber, test_routing_by_severity, test_rpc,
    test_topics, test_work_queues_share_tasks_between_workers,
)

pytestmark = pytest.mark.timeout(60)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_RUNNER = ("import runpy, sys, pika; pika.ConnectionParameters.DEFAULT_PORT = int(sys.argv[1]); "
           "sys.argv = sys.argv[2:]; runpy.run_path(sys.argv[0], run_name='__main__')")


@pytest.fixture
def run_program(amqp_server, tmp_path):
    started = []

    def start(path, *argv):
        source = open(path).read()
        assert "from clients import broker as pika" in source
        real = tmp_path / os.path.basename(path)
        real.write_text(source.replace("from clients import broker as pika", "import pika"))
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen([sys.executable, "-c", _RUNNER, str(amqp_server.port), str(real), *argv],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=str(tmp_path), env=env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        proc.stdout.close()
