"""The `stats` op, `minibroker stats` / `minilog stats`, and /metrics scraped over HTTP and parsed."""

import json
import re
import socket
import urllib.error
import urllib.request

from clients import broker as pika
from clients.log import Consumer, Producer
from harness import read_listening_port, wait_until
from minibroker.admin_cli import stats_main

LINE = re.compile(r'^([a-z_]+)(\{[^}]*\})? (\S+)$')


def parse_prometheus(text):
    """{name: value} of every sample; checks each metric has HELP and TYPE before its samples."""
    values, typed = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("#") or not line:
            continue
        match = LINE.match(line)
        assert match, f"not a Prometheus sample line: {line!r}"
        name, labels, value = match.groups()
        assert name in typed, f"{name} has no TYPE line before it"
        values[name + (labels or "")] = float(value)
    return values


def scrape(port, path="/metrics"):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse_prometheus(resp.read().decode())


def test_minibroker_metrics_endpoint_counts_the_message_path(spawn_server):
    server = spawn_server("minibroker", extra_args=["--metrics-port", "0", "--amqp-port", "off"])
    metrics_port = read_listening_port(server.proc, 20, name="metrics")
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", server.port))
    ch = conn.channel()
    ch.queue_declare("q", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"})
    ch.queue_declare("dlq")
    for i in range(10):
        ch.basic_publish("", "q", b"m%d" % i)
    ch.basic_publish("", "nowhere", b"x", mandatory=True)
    got = []
    for _ in range(3):
        method, _props, _body = wait_until(lambda: ch.basic_get("q"), message="a message")
        got.append(method.delivery_tag)
    ch.basic_ack(got[0])
    ch.basic_nack(got[1], requeue=True)
    ch.basic_reject(got[2], requeue=False)
    try:
        m = wait_until(lambda: (lambda v: v if v["minibroker_dead_lettered_total"] == 1 else None)(
            scrape(metrics_port)), message="the dead-letter counted")
        assert m["minibroker_published_total"] == 11
        assert m["minibroker_delivered_total"] == 3
        assert m["minibroker_acked_total"] == 1
        assert m["minibroker_redelivered_total"] == 1
        assert m["minibroker_returned_total"] == 1
        assert m["minibroker_connections"] >= 1
        assert m["minibroker_received_bytes_total"] > 0 and m["minibroker_sent_bytes_total"] > 0
        assert m["minibroker_resident_memory_bytes"] > 1_000_000
        assert m["minibroker_messages_ready"] == 8 + 1     # 7 untouched and 1 requeued in q, 1 in dlq
    finally:
        conn.close()
    with socket.create_connection(("127.0.0.1", metrics_port)) as s:
        s.sendall(b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 404")
    with socket.create_connection(("127.0.0.1", metrics_port)) as s:
        s.sendall(b"garbage\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400")


def test_stats_command_and_minilog_metrics(spawn_server, capsys):
    server = spawn_server("minilog", extra_args=["--metrics-port", "0", "--kafka-port", "off"])
    metrics_port = read_listening_port(server.proc, 20, name="metrics")
    producer = Producer({"bootstrap.servers": f"127.0.0.1:{server.port}", "acks": "all"})
    for i in range(5):
        producer.produce("t", value=b"v%d" % i)
    producer.flush(10)
    consumer = Consumer({"bootstrap.servers": f"127.0.0.1:{server.port}", "group.id": "g",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe(["t"])
    try:
        wait_until(lambda: consumer.poll(0.2), message="a record")
        m = wait_until(lambda: (lambda v: v if v["minilog_rebalances_total"] >= 1 else None)(scrape(metrics_port)),
                       message="a rebalance counted")
        assert m["minilog_produced_records_total"] == 5
        assert m["minilog_fsyncs_total"] >= 1 and m["minilog_durable_acks_total"] >= 1
        assert m["minilog_topics"] >= 1
    finally:
        consumer.close()

    from serverbase.admin_cli import stats_command
    assert stats_command("minilog", 9093, ["--bootstrap-server", f"127.0.0.1:{server.port}", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    row = next(r for r in rows if r["name"] == "produced_records_total")
    assert (row["type"], row["value"]) == ("counter", 5)


def test_minibroker_stats_table(minibroker_server, capsys):
    assert stats_main(["--server", f"127.0.0.1:{minibroker_server.port}"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["name", "type", "value", "help"]
    assert any(line.startswith("published_total ") for line in out.splitlines())
