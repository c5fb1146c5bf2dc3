"""`minibroker list|declare|delete|purge|bind|unbind|publish|get` against a real server."""

import json
import os
import subprocess
import sys

import pytest

from clients import broker as pika
from harness import ROOT, wait_until
from minibroker.admin_cli import bind_main, declare_main, delete_main, get_main, list_main, publish_main, purge_main


def cli(capsys, fn, server, *argv):
    code = fn(["--server", f"127.0.0.1:{server.port}", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def table(out):
    lines = out.strip().splitlines()
    header = lines[0].split()
    return header, [line.split() for line in lines[1:]]


def test_declare_bind_publish_list_get_purge_delete(minibroker_server, capsys):
    s = minibroker_server
    assert cli(capsys, declare_main, s, "exchange", "logs", "--type", "topic")[0] == 0
    code, out, _ = cli(capsys, declare_main, s, "queue", "errors", "--durable", "--json")
    assert code == 0 and json.loads(out)["queue"] == "errors"
    assert cli(capsys, bind_main, s, "logs", "errors", "--routing-key", "*.error")[0] == 0
    code, out, err = cli(capsys, publish_main, s, "--exchange", "logs", "--routing-key", "db.error",
                         "--body", "disk full")
    assert code == 0, err
    assert "confirmed: 1" in out

    code, out, _ = cli(capsys, list_main, s, "queues")
    header, rows = table(out)
    assert header[:4] == ["name", "messages_ready", "messages_unacknowledged", "consumers"]
    assert ["errors", "1", "0", "0"] == rows[0][:4]
    code, out, _ = cli(capsys, list_main, s, "queues", "--json")
    q = json.loads(out)[0]
    assert q["name"] == "errors" and q["messages_ready"] == 1 and q["publish"] == 1 and q["durable"] is True
    assert q["memory"] > 0

    code, out, _ = cli(capsys, list_main, s, "bindings", "--json")
    assert {"source": "logs", "destination": "errors", "destination_kind": "queue", "routing_key": "*.error",
            "arguments": {}} in json.loads(out)
    code, out, _ = cli(capsys, list_main, s, "exchanges")
    header, rows = table(out)
    assert ["logs", "topic"] == [r for r in rows if r[0] == "logs"][0][:2]

    code, out, _ = cli(capsys, get_main, s, "errors", "--json")
    got = json.loads(out)
    assert got[0]["body"] == "disk full" and got[0]["routing_key"] == "db.error"
    code, out, _ = cli(capsys, get_main, s, "errors", "--ack-mode", "ack", "--json")
    assert json.loads(out)[0]["redelivered"] is True
    code, out, _ = cli(capsys, list_main, s, "queues", "--json")
    assert json.loads(out)[0]["messages"] == 0

    cli(capsys, publish_main, s, "--routing-key", "errors", "--body", "x")
    code, out, _ = cli(capsys, purge_main, s, "errors", "--json")
    assert json.loads(out) == {"queue": "errors", "purged": 1}
    assert cli(capsys, delete_main, s, "queue", "errors")[0] == 0
    code, out, _ = cli(capsys, list_main, s, "queues", "--json")
    assert json.loads(out) == []


def test_consumers_channels_connections_and_rates(minibroker_server, capsys):
    s = minibroker_server
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", s.port))
    ch = conn.channel()
    ch.queue_declare("work")
    ch.basic_qos(prefetch_count=5)
    for i in range(20):
        ch.basic_publish("", "work", b"job %d" % i)
    ch.basic_consume("work", lambda *a: None, consumer_tag="w1")
    conn.process_data_events(0.2)
    try:
        def unacked():
            code, out, _ = cli(capsys, list_main, s, "queues", "--json")
            q = json.loads(out)[0]
            return q if q["messages_unacknowledged"] == 5 else None
        q = wait_until(unacked, message="5 unacked deliveries")
        assert q["messages_ready"] == 15 and q["consumers"] == 1
        assert q["consumer_utilisation"] == 0.0          # prefetch is full: it cannot take more now
        code, out, _ = cli(capsys, list_main, s, "consumers")
        header, rows = table(out)
        assert header[:4] == ["queue", "connection", "channel", "consumer_tag"]
        assert rows[0][0] == "work" and rows[0][3] == "w1" and rows[0][5] == "5"
        code, out, _ = cli(capsys, list_main, s, "channels", "--json")
        assert [c["messages_unacknowledged"] for c in json.loads(out)] == [5]
        code, out, _ = cli(capsys, list_main, s, "connections", "--json")
        rows = json.loads(out)
        assert any(r["channels"] == 1 and r["unacknowledged"] == 5 for r in rows)
        # Rates: sampled once a second by the server; publishes happened, so a rate shows up.
        wait_until(lambda: json.loads(cli(capsys, list_main, s, "queues", "--json")[1])[0]["deliver"] == 5,
                   message="deliver counter")
    finally:
        conn.close()


def test_unknown_names_and_unreachable_servers_fail_in_one_line(minibroker_server, capsys):
    s = minibroker_server
    code, out, err = cli(capsys, purge_main, s, "nope")
    assert code == 1 and err.count("\n") == 1 and "nope" in err
    code, out, err = cli(capsys, delete_main, s, "exchange", "nope")
    assert code == 1 and "nope" in err
    code, out, err = cli(capsys, bind_main, s, "nope", "nowhere")
    assert code == 1 and err.count("\n") == 1
    code = list_main(["--server", "127.0.0.1:1", "queues"])
    out, err = capsys.readouterr()
    assert code == 3 and err.startswith("minibroker list: cannot reach the server at 127.0.0.1:1")
    assert err.count("\n") == 1


def test_the_console_script_runs_list(minibroker_server):
    env = dict(os.environ, PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, "-m", "minibroker", "list", "exchanges", "--server",
                           f"127.0.0.1:{minibroker_server.port}"], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "amq.topic" in done.stdout and done.stdout.startswith("name")
