"""`minibroker trace` shows each message's path, and tracing off leaves the fast path alone."""

import json
import threading

from clients import broker as pika
from clients.rpc import RpcConnection
from harness import wait_until
from minibroker.admin_cli import trace_main


def events_until(conn, predicate, timeout=10):
    seen = []

    def ready():
        conn.read(0.05)
        while conn.pushes:
            push = conn.pushes.popleft()
            if push.event == "trace":
                seen.append(push.body)
        return predicate(seen)
    wait_until(ready, timeout=timeout, message="trace events")
    return seen


def test_a_message_path_from_publish_to_dead_letter(minibroker_server):
    s = minibroker_server
    tracer = RpcConnection("127.0.0.1", s.port)
    assert tracer.call("trace", {"on": True}) == {"tracing": True}
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", s.port))
    ch = conn.channel()
    ch.exchange_declare("logs", "topic")
    ch.queue_declare("parked")
    ch.queue_declare("errors", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "parked"})
    ch.queue_bind("errors", "logs", "*.error")
    ch.basic_publish("logs", "db.error", b"disk full")
    ch.basic_publish("logs", "db.info", b"fine")
    deliveries = []
    ch.basic_consume("errors", lambda c, m, p, b: deliveries.append(m.delivery_tag), consumer_tag="w")
    wait_until(lambda: conn.process_data_events(0.05) or deliveries, message="the delivery")
    ch.basic_reject(deliveries[0], requeue=False)
    conn.process_data_events(0.1)
    events = events_until(tracer, lambda seen: any(e["event"] == "dead_lettered" for e in seen))
    kinds = [e["event"] for e in events]
    assert kinds[:4] == ["published", "routed", "published", "unroutable"]
    assert events[1]["queues"] == [{"queue": "errors", "via": ["*.error"]}]
    delivered = next(e for e in events if e["event"] == "delivered")
    assert (delivered["queue"], delivered["consumer_tag"], delivered["redelivered"]) == ("errors", "w", False)
    rejected = next(e for e in events if e["event"] == "rejected")
    assert rejected["requeue"] is False
    dead = next(e for e in events if e["event"] == "dead_lettered")
    assert (dead["queue"], dead["reason"], dead["to"]) == ("errors", "rejected", ["parked"])
    # While tracing, the publish fast path is off; when the tracer leaves, it is back.
    assert s.call(lambda: s.server.broker.queues["parked"].fast) is False
    tracer.close()
    wait_until(lambda: s.call(lambda: s.server.broker.queues["parked"].fast) is True, message="fast path back")
    conn.close()


def test_trace_command_prints_lines(minibroker_server, capsys):
    s = minibroker_server
    result = {}

    def trace():
        result["code"] = trace_main(["--server", f"127.0.0.1:{s.port}", "--count", "2", "--for", "20"])
    t = threading.Thread(target=trace)
    t.start()
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", s.port))
    ch = conn.channel()
    ch.queue_declare("q")
    # The tracer may subscribe after the first publish: publish until the command has its two events.
    while t.is_alive():
        ch.basic_publish("", "q", b"x")
        t.join(0.2)
    conn.close()
    out = capsys.readouterr().out.splitlines()
    assert result["code"] == 0
    assert out[0].startswith("published  conn") and "exchange ''" in out[0]
    assert out[1].startswith("routed") and "q (via 'q')" in out[1]


def test_minilog_trace_shows_appends_rolls_index_entries_and_groups(start_minilog):
    from clients.log import Consumer, Producer
    s = start_minilog(log_config={"segment.bytes": 600, "index.interval.bytes": 100})
    tracer = RpcConnection("127.0.0.1", s.port)
    tracer.call("trace", {})
    p = Producer({"bootstrap.servers": f"127.0.0.1:{s.port}", "linger.ms": 0})
    for i in range(12):
        p.produce("t", value=b"x" * 100)
        p.flush(10)
    c = Consumer({"bootstrap.servers": f"127.0.0.1:{s.port}", "group.id": "g", "auto.offset.reset": "earliest"})
    c.subscribe(["t"])
    try:
        wait_until(lambda: c.poll(0.1), message="a record")
        events = events_until(tracer, lambda seen: any(e["event"] == "group" and e["state"] == "Stable"
                                                       for e in seen))
    finally:
        c.close()
    kinds = {e["event"] for e in events}
    assert {"append", "segment_roll", "index_entry", "group"} <= kinds
    roll = next(e for e in events if e["event"] == "segment_roll")
    assert roll["topic"] == "t" and roll["new_base_offset"] > roll["sealed_base_offset"]
    entry = next(e for e in events if e["event"] == "index_entry")
    assert entry["position"] > 0 and entry["offset"] > entry["segment"] - 1
    tracer.close()


def test_minilog_trace_command_lines(start_minilog, capsys):
    from clients.log import Producer
    from minilog.admin_cli import trace_main
    s = start_minilog(log_config={"segment.bytes": 300, "index.interval.bytes": 50})
    result = {}
    t = threading.Thread(target=lambda: result.setdefault(
        "code", trace_main(["--server", f"127.0.0.1:{s.port}", "--count", "6", "--for", "20"])))
    t.start()
    p = Producer({"bootstrap.servers": f"127.0.0.1:{s.port}", "linger.ms": 0})
    while t.is_alive():
        p.produce("t", value=b"y" * 120)
        p.flush(10)
        t.join(0.1)
    lines = capsys.readouterr().out.splitlines()
    assert result["code"] == 0 and len(lines) == 6
    assert any(line.startswith("append        t-0 offsets ") for line in lines)
    assert any(line.startswith("segment roll  t-0 sealed ") or line.startswith("index entry   t-0 ")
               for line in lines)


def test_minilog_trace_shows_appends_made_through_the_kafka_door(minilog):
    import pytest
    confluent_kafka = pytest.importorskip("confluent_kafka")
    tracer = RpcConnection("127.0.0.1", minilog.port)
    tracer.call("trace", {})
    p = confluent_kafka.Producer({"bootstrap.servers": minilog.kafka_bootstrap, "linger.ms": 0})
    p.produce("kt", b"y" * 50)
    assert p.flush(15) == 0
    events = events_until(tracer, lambda seen: any(e["event"] == "append" and e["topic"] == "kt" for e in seen))
    append = next(e for e in events if e["event"] == "append" and e["topic"] == "kt")
    assert append["base_offset"] == append["last_offset"] == 0 and append["bytes"] > 50
    tracer.close()
