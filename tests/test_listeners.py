"""Several front doors per server (serverbase/listener.py) and the console scripts' commands."""

import asyncio
import socket
import subprocess
import sys

import pytest

from harness import ROOT, ServerThread, wait_until
from serverbase.listener import Listener, ListenerError
from serverbase.server import BrokerServer


class EchoDoor(asyncio.Protocol):
    """A stand-in second protocol: echoes bytes, takes part in the server's life like a real door."""

    def __init__(self, server):
        self.server = server
        self.id = server.next_connection_id()
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        self.server.track(self)

    def data_received(self, data):
        self.transport.write(data)

    def connection_lost(self, exc):
        self.server.untrack(self)

    def close(self):
        self.transport.close()


class TwoDoorServer(BrokerServer):
    name = "twodoor"

    def __init__(self, *args, echo_port=0, **kwargs):
        super().__init__(*args, **kwargs)
        self.echo_port = echo_port

    def extra_listeners(self):
        return [Listener("echo", "--echo-port", self.echo_port, lambda: EchoDoor(self), host=self.host)]


def test_every_listener_opens_and_shares_the_connection_count(tmp_path):
    with ServerThread(TwoDoorServer, tmp_path) as srv:
        echo = srv.server.listener("echo")
        assert echo.port and srv.server.listener("").port == srv.port
        with socket.create_connection(("127.0.0.1", echo.port), timeout=5) as sock:
            sock.sendall(b"hi")
            assert sock.recv(2) == b"hi"
            wait_until(lambda: len(srv.server.connections) == 1, message="the echo connection is counted")
            srv.stop()
            # stop() closed the door's connection as it closes msgpack ones
            assert sock.recv(10) == b""


def test_a_taken_port_names_the_flag_and_closes_the_doors_already_open(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        srv = ServerThread(TwoDoorServer, tmp_path, echo_port=port)
        with pytest.raises(ListenerError) as info:
            srv.start()
        assert "--echo-port" in str(info.value) and "in use" in str(info.value)
        assert srv.server.listeners == []


def test_the_command_line_refuses_a_taken_port_in_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "minibroker", "--port", str(port), "--data-dir",
                               str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert "--port" in last and "in use" in last, proc.stderr


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_ports_outside_the_range_are_refused(port, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "minilog", "--port", port, "--data-dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "port number" in proc.stderr


def test_a_console_script_runs_its_commands(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "minibroker", "dump", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    helptext = subprocess.run([sys.executable, "-m", "minibroker", "--help"], cwd=ROOT,
                              capture_output=True, text=True, timeout=60).stdout
    assert "commands: " in helptext and " dump," in helptext   # sorted among the others


def test_the_launcher_passes_each_server_flag_to_the_server_that_has_it():
    from serverbase.launcher import route_server_flags
    import argparse
    parser = argparse.ArgumentParser()
    passed = route_server_flags(parser, ["--fsync", "never", "--num-partitions=3", "--max-frame", "4096"])
    assert passed == {"minibroker": ["--fsync", "never", "--max-frame", "4096"],
                      "minilog": ["--num-partitions=3", "--max-frame", "4096"]}
    with pytest.raises(SystemExit):
        route_server_flags(parser, ["--no-such-flag"])
