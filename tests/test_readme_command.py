"""The README's server command (`make run`) starts both servers, and both answer."""

import os
import signal
import subprocess
import sys
import time

from clients.rpc import RpcConnection
from harness import LISTENING, ROOT


def test_make_run_starts_both_servers(tmp_path):
    readme = open(os.path.join(ROOT, "README.md")).read()
    assert "make run" in readme and "make test" in readme
    env = dict(os.environ)
    # Reuse the venv this test runs in when it is the Makefile's, so nothing is reinstalled.
    venv = sys.prefix if os.path.exists(os.path.join(sys.prefix, ".installed")) else os.path.join(ROOT, ".venv")
    proc = subprocess.Popen(
        ["make", "-s", "run", f"VENV={venv}",
         f"RUN_ARGS=--minibroker-port 0 --minilog-port 0 --kafka-port 0 --amqp-port 0 --data-dir {tmp_path}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    ports = {}
    seen = []  # everything make printed, for the failure message
    deadline = time.monotonic() + 300  # the first run may create the venv
    try:
        while len(ports) < 2:
            line = proc.stdout.readline().decode(errors="replace")
            seen.append(line)
            if not line:
                proc.wait(30)
                raise AssertionError(f"make run exited ({proc.returncode}) before both servers listened:\n{''.join(seen)}")
            match = LISTENING.search(line)
            if match and match.group(1) in ("minibroker", "minilog"):   # the msgpack doors
                ports[match.group(1)] = int(match.group(3))
            assert time.monotonic() < deadline, f"servers did not start in time:\n{''.join(seen)}"
        for name, port in ports.items():
            with RpcConnection("127.0.0.1", port) as conn:
                assert conn.call("ping")["pong"]
                assert conn.call("server_info")["server"] == name
        # launcher.pid is there while it runs, for `make stop`.
        assert sorted(os.listdir(tmp_path)) == ["launcher.pid", "minibroker", "minilog"]
        # Stop it as Ctrl-C would stop the launcher: both servers shut down and all exit 0.
        launcher = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        for pid in launcher:
            os.kill(int(pid), signal.SIGINT)
        code = proc.wait(30)
        output = "".join(seen) + proc.stdout.read().decode(errors="replace")
        assert code == 0, output
        assert output.count("shutting down") == 2, output
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
