"""Server settings from flags, environment variables and a TOML file (flag > env > file >
default), one-line errors for bad ones, and the log lines an operator relies on."""

import json
import os
import subprocess
import sys

import pytest

from clients import broker as pika
from clients.rpc import RpcConnection
from harness import ROOT, ServerProcess, wait_until


def _run(module, *args, env_extra=None):
    env = dict(os.environ, PYTHONPATH=ROOT, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=60)


@pytest.mark.parametrize("args,env,says", [
    (["--port", "99999"], {}, "--port: 99999 is not a port number"),
    ([], {"MINIBROKER_PORT": "-1"}, "MINIBROKER_PORT: --port: -1 is not a port number"),
    (["--log-level", "loud"], {}, "invalid choice: 'LOUD'"),
    ([], {"MINIBROKER_FSYNC": "sometimes"}, "MINIBROKER_FSYNC: --fsync: invalid choice"),
])
def test_bad_settings_are_refused_in_one_line(args, env, says, tmp_path):
    done = _run("minibroker", "--data-dir", str(tmp_path), *args, env_extra=env)
    assert done.returncode == 2
    assert says in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_bad_config_files_are_refused_in_one_line(tmp_path):
    cfg = tmp_path / "c.toml"
    for text, says in [("prot = 1\n", "unknown key 'prot'"), ("port = [1]\n", "takes one value"),
                       ("port = \n", "not valid TOML"), ("no-auto-create-topics = 3\n", "is a switch")]:
        cfg.write_text(text)
        done = _run("minilog", "--config", str(cfg), "--data-dir", str(tmp_path / "d"))
        assert done.returncode == 2 and says in done.stderr, (text, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_flag_beats_environment_beats_file_beats_default(tmp_path):
    cfg = tmp_path / "brokers.toml"
    cfg.write_text('log-format = "json"\nmax_frame = 70000\n[minilog]\nnum-partitions = 2\n'
                   '[minibroker]\nfsync = "never"\n')
    env = dict(os.environ, MINILOG_CONFIG=str(cfg), MINILOG_NUM_PARTITIONS="3", MINILOG_MAX_FRAME="80000",
               MINILOG_NO_AUTO_CREATE_TOPICS="yes")
    server = ServerProcess("minilog", tmp_path / "data", ["--max-frame", "90000"], env=env).start()
    try:
        with RpcConnection("127.0.0.1", server.port) as conn:
            assert conn.call("server_info")["max_frame"] == 90000          # the flag over env and file
            conn.call("create_topics", {"topics": [{"name": "t"}]})
            partitions = conn.call("metadata", {"topics": ["t"]})["topics"]["t"]["partitions"]
            assert len(partitions) == 3                                      # env over file
            # MINILOG_NO_AUTO_CREATE_TOPICS=yes: the switch from the environment took effect
            missing = conn.call("metadata", {"topics": ["nope"], "allow_auto_create": True})["topics"]["nope"]
            assert missing["error"][0] == "NOT_FOUND"
    finally:
        server.stop()
    lines = [json.loads(line) for line in server.stderr_text().splitlines() if line.startswith("{")]
    assert lines and all({"ts", "level", "logger", "message"} <= set(line) for line in lines)
    assert any("new empty log, first start" in line["message"] for line in lines)
    assert not any("no previous shutdown" in line["message"] for line in lines)


def test_operator_log_lines(tmp_path):
    server = ServerProcess("minibroker", tmp_path / "data", ["--log-level", "debug"]).start()
    try:
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", server.port))
        ch = conn.channel()
        ch.queue_declare("jobs")
        ch.queue_delete("jobs")
        conn.close()
        wait_until(lambda: "closed" in server.stderr_text(), message="the connection-closed line")
    finally:
        server.stop()
    text = server.stderr_text()
    assert "DEBUG serverbase.server: connection 1 opened from" in text
    assert "connection 1 from" in text and "closed" in text
    assert "INFO minibroker.broker: deleted queue 'jobs' (0 ready message(s) dropped)" in text
