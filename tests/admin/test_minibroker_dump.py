"""`minibroker dump` on a data directory a real server wrote: definitions, records, and how many
message copies of each journal segment are still live."""

import os
import subprocess
import sys

from clients import broker as pika
from harness import ROOT


def test_dump_counts_live_and_settled_copies(start_minibroker, tmp_path):
    data = tmp_path / "mb"
    server = start_minibroker(data)
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", server.port))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("jobs", durable=True)
    for i in range(5):
        ch.basic_publish("", "jobs", b"job %d" % i, properties=pika.BasicProperties(delivery_mode=2))
    for _ in range(2):
        method, _props, _body = ch.basic_get("jobs")
        ch.basic_ack(method.delivery_tag)
    conn.close()
    server.stop()
    env = dict(os.environ, PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, "-m", "minibroker", "dump", str(data), "--records"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "definitions: " in done.stdout and "queue 'jobs'" in done.stdout
    assert "message copies: 3 live, 2 settled or dropped" in done.stdout
    assert done.stdout.count("PUBLISH id=") == 5
