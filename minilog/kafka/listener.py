"""minilog's Kafka front door: its command-line flags and its `Listener`.

`--kafka-port` (default 9092 on the command line; 0 picks a free port; `off` disables it) and
`--kafka-advertised HOST:PORT`, the address Metadata and FindCoordinator give clients (default:
the address the door listens on, with the port it got; clients of the door's TLS twin,
`--kafka-tls-port`, are given the twin's address). A server built in-process (the tests)
has no Kafka door unless given `kafka_port`. The door shares the server's `--max-frame` and
`--user` credentials (SASL PLAIN).
"""

from __future__ import annotations

import argparse

from serverbase.cli import port_number, port_or_off
from serverbase.listener import Listener

from .connection import KafkaConnection
from .handlers import KafkaApis

DEFAULT_KAFKA_PORT = 9092


def host_and_port(text: str) -> tuple[str, int]:
    """argparse type of HOST:PORT."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"{text!r}: give HOST:PORT, for example localhost:9092")
    port = port_number(port)
    if port == 0:
        raise argparse.ArgumentTypeError(f"{text!r}: an advertised port cannot be 0")
    return host.strip("[]"), port


def add_arguments(parser) -> None:
    g = parser.add_argument_group("Kafka protocol (docs/kafka-protocol.md)")
    g.add_argument("--kafka-port", type=port_or_off, default=DEFAULT_KAFKA_PORT,
                   help=f"port of the Kafka-protocol listener; 0 picks a free one, 'off' disables it "
                        f"(default {DEFAULT_KAFKA_PORT})")
    g.add_argument("--kafka-advertised", type=host_and_port, metavar="HOST:PORT",
                   help="the address Kafka clients are told to connect to (default: the listening address)")


def kafka_listener(server, port: int, advertised: tuple[str, int] | None) -> Listener:
    """The Kafka door of `server` (a MinilogServer whose `broker` is open when clients come)."""
    listener = None

    def where(conn) -> tuple[str, int]:
        transport = conn.transport
        if transport is not None and transport.get_extra_info("sslcontext") is not None:
            # A client of the TLS twin (serverbase/tls.py) is sent back to the TLS twin.
            return server.host, transport.get_extra_info("sockname")[1]
        return advertised or (server.host, listener.port)

    apis = KafkaApis(server, where)
    listener = Listener("kafka", "--kafka-port", port, lambda: KafkaConnection(server, apis, server.max_frame),
                        host=server.host)
    return listener
