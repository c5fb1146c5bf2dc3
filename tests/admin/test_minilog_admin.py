"""`minilog topics|groups|produce|consume` against a real server, as kafka-topics,
kafka-consumer-groups and kcat users would run them."""

import io
import json
import os
import subprocess
import sys

from clients.log import Consumer, Producer
from harness import ROOT, wait_until
from minilog.admin_cli import consume_main, groups_main, produce_main, topics_main


def run(capsys, fn, server, *argv, flag="--bootstrap-server"):
    code = fn([*argv, flag, f"127.0.0.1:{server.port}"])
    out, err = capsys.readouterr()
    return code, out, err


def rows(out):
    lines = [line for line in out.strip().splitlines() if not line.startswith(("config ", "(dry run"))]
    return lines[0].split(), [line.split() for line in lines[1:]]


def produce(server, topic, values, partition=-1, key=None):
    p = Producer({"bootstrap.servers": f"127.0.0.1:{server.port}", "acks": "all"})
    for v in values:
        p.produce(topic, value=v, key=key, partition=partition)
    assert p.flush(10) == 0


def test_topics_create_list_describe_delete(minilog_server, capsys):
    s = minilog_server
    code, out, err = run(capsys, topics_main, s, "create", "rides", "--partitions", "3",
                         "--config", "retention.ms=600000")
    assert code == 0, err
    produce(s, "rides", [b"a", b"b"], partition=1)
    code, out, _ = run(capsys, topics_main, s, "list")
    assert ["rides", "3"] in rows(out)[1]
    code, out, _ = run(capsys, topics_main, s, "describe", "rides")
    header, body = rows(out)
    assert header == ["topic", "partition", "log_start_offset", "log_end_offset", "segments", "size_bytes"]
    assert body[1][:5] == ["rides", "1", "0", "2", "1"] and int(body[1][5]) > 0
    assert "retention.ms=600000" in out
    code, out, _ = run(capsys, topics_main, s, "describe", "rides", "--json")
    doc = json.loads(out)[0]
    assert doc["config"]["retention.ms"] == 600000 and len(doc["partitions"]) == 3
    code, out, err = run(capsys, topics_main, s, "alter", "rides", "--config", "retention.ms=1000",
                         "--config", "segment.bytes=2048", "--json")
    assert code == 0, err
    assert json.loads(out)["retention.ms"] == 1000 and json.loads(out)["segment.bytes"] == 2048
    code, out, _ = run(capsys, topics_main, s, "alter", "rides", "--delete-config", "segment.bytes", "--json")
    assert json.loads(out)["segment.bytes"] == 1024 ** 3                 # back to the default
    code, out, err = run(capsys, topics_main, s, "alter", "rides", "--config", "retention.ms=soon")
    assert code == 1 and "retention.ms" in err and err.count("\n") == 1
    code, out, err = run(capsys, topics_main, s, "create", "rides")
    assert code == 1 and err.count("\n") == 1
    assert run(capsys, topics_main, s, "delete", "rides")[0] == 0
    code, out, err = run(capsys, topics_main, s, "describe", "rides")
    assert code == 1 and "rides" in err and err.count("\n") == 1


def test_groups_describe_lag_and_reset_offsets(minilog_server, capsys):
    s = minilog_server
    produce(s, "t", [b"v%d" % i for i in range(10)])
    c = Consumer({"bootstrap.servers": f"127.0.0.1:{s.port}", "group.id": "billing",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe(["t"])
    got = []
    wait_until(lambda: (got.extend(m for m in [c.poll(0.2)] if m is not None and not m.error()) or len(got) >= 4),
               message="4 records")
    c.commit(message=got[3], asynchronous=False)      # committed offset 4: lag 6
    try:
        code, out, _ = run(capsys, groups_main, s, "describe", "--group", "billing")
        header, body = rows(out)
        assert header[:6] == ["group", "topic", "partition", "current_offset", "log_end_offset", "lag"]
        assert body[0][:6] == ["billing", "t", "0", "4", "10", "6"]
        code, out, _ = run(capsys, groups_main, s, "list", "--json")
        assert {"group": "billing", "state": "Stable"} in json.loads(out)
        code, out, err = run(capsys, groups_main, s, "reset-offsets", "--group", "billing", "--topic", "t",
                             "--to-earliest", "--execute")
        assert code == 1 and "active members" in err      # as Kafka: only an inactive group is reset
        code, out, err = run(capsys, groups_main, s, "delete", "--group", "billing")
        assert code == 1 and "active member" in err
    finally:
        c.close()
    code, out, _ = run(capsys, groups_main, s, "reset-offsets", "--group", "billing", "--topic", "t",
                       "--shift-by", "-3")
    assert rows(out)[1][0][3:] == ["4", "1"] and "dry run" in out
    code, out, _ = run(capsys, groups_main, s, "describe", "--group", "billing", "--json")
    assert json.loads(out)[0]["current_offset"] == 4                # the dry run changed nothing
    code, out, err = run(capsys, groups_main, s, "reset-offsets", "--group", "billing", "--topic", "t",
                         "--to-offset", "99", "--execute", "--json")
    assert code == 0, err
    assert json.loads(out)[0]["new_offset"] == 10                    # clamped to the log end
    code, out, _ = run(capsys, groups_main, s, "describe", "--group", "billing", "--json")
    assert json.loads(out)[0]["lag"] == 0
    code, out, err = run(capsys, groups_main, s, "describe", "--group", "nobody")
    assert code == 1 and "does not exist" in err
    assert run(capsys, groups_main, s, "delete", "--group", "billing")[0] == 0
    code, out, err = run(capsys, groups_main, s, "describe", "--group", "billing")
    assert code == 1 and "does not exist" in err
    code, out, err = run(capsys, groups_main, s, "delete", "--group", "billing")
    assert code == 1 and "does not exist" in err and err.count("\n") == 1


def test_produce_and_consume_lines_like_kcat(minilog_server, capsys, monkeypatch):
    s = minilog_server
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"k1:hello\nk2:world\nnokey\n")))
    code, out, err = run(capsys, produce_main, s, "lines", "--key-separator", ":", "-H", "src=cli")
    assert code == 0, err
    code, out, err = run(capsys, consume_main, s, "lines", "--from-beginning", "-e",
                         "--format", "{offset} {key}={value} {headers}")
    assert code == 0, err
    assert out.splitlines() == ["0 k1=hello src=cli", "1 k2=world src=cli", "2 =nokey src=cli"]
    code, out, _ = run(capsys, consume_main, s, "lines", "--offset", "2", "-e")
    assert out.splitlines() == ["nokey"]
    code, out, _ = run(capsys, consume_main, s, "lines", "-e")        # from the end: nothing, and it exits
    assert code == 0 and out == ""
    code, out, _ = run(capsys, consume_main, s, "lines", "--from-time", "2000-01-01T00:00:00Z", "-e", "-K", "|")
    assert out.splitlines()[0] == "k1|hello"
    code, out, err = run(capsys, consume_main, s, "lines", "--from-beginning", "-e", "--format", "{nope}")
    assert code == 2 and "unknown field {nope}" in err
    code, out, err = run(capsys, consume_main, s, "missing", "-e")
    assert code == 1 and "missing" in err


def test_unreachable_server_and_console_script(minilog_server):
    env = dict(os.environ, PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, "-m", "minilog", "topics", "list", "--server", "127.0.0.1:1"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert done.returncode == 3 and done.stderr.count("\n") == 1
    assert "cannot reach the server at 127.0.0.1:1" in done.stderr
    done = subprocess.run([sys.executable, "-m", "minilog", "topics", "list", "--server",
                           f"127.0.0.1:{minilog_server.port}"], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("topic")
