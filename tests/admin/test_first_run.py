"""The README's first-run steps, as a newcomer types them: `make run` with server flags passed
through, the console scripts in the venv, `make stop` from another shell."""

import os
import subprocess
import sys
import time

from clients.rpc import RpcConnection
from harness import LISTENING, ROOT


def _venv():
    # Reuse the venv this test runs in when it is the Makefile's, so nothing is reinstalled.
    return sys.prefix if os.path.exists(os.path.join(sys.prefix, ".installed")) else os.path.join(ROOT, ".venv")


def _make(*args, timeout=120):
    return subprocess.run(["make", "-s", *args, f"VENV={_venv()}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_make_run_passes_server_flags_through_and_make_stop_stops_it(tmp_path):
    run_args = f"RUN_ARGS=--minibroker-port 0 --minilog-port 0 --amqp-port 0 --kafka-port 0 " \
               f"--data-dir {tmp_path} --fsync never " \
               f"--log-segment-bytes 4096 --log-level debug"
    proc = subprocess.Popen(["make", "-s", "run", f"VENV={_venv()}", run_args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    ports, seen = {}, []
    deadline = time.monotonic() + 120
    try:
        while len(ports) < 2:
            line = proc.stdout.readline().decode(errors="replace")
            seen.append(line)
            assert line, f"make run exited ({proc.wait(30)}) before both servers listened:\n{''.join(seen)}"
            match = LISTENING.search(line)
            if match and match.group(1) in ("minibroker", "minilog"):   # the msgpack doors
                ports[match.group(1)] = int(match.group(3))
            assert time.monotonic() < deadline, "".join(seen)
        with RpcConnection("127.0.0.1", ports["minibroker"]) as conn:
            assert conn.call("server_info")["store"]["fsync"] == "never"
        assert os.path.exists(tmp_path / "launcher.pid")
        stopped = _make("stop", run_args)
        assert stopped.returncode == 0, stopped.stderr
        assert proc.wait(30) == 0
        output = "".join(seen) + proc.stdout.read().decode(errors="replace")
        assert output.count("shutting down") == 2, output
        assert not os.path.exists(tmp_path / "launcher.pid")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait(30)
    again = _make("stop", run_args)
    assert again.returncode != 0 and "nothing to stop" in again.stderr


def test_make_run_refuses_an_unknown_flag_in_one_line(tmp_path):
    done = _make("run", f"RUN_ARGS=--data-dir {tmp_path} --no-such-flag 3")
    assert done.returncode != 0
    assert "unknown flag --no-such-flag: neither minibroker nor minilog has it" in done.stderr


def test_console_scripts_are_in_the_venv_bin():
    for name in ("minibroker", "minilog"):
        script = os.path.join(_venv(), "bin", name)
        done = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "--data-dir" in done.stdout
