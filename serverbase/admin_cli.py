"""What every admin command shares: finding the server, printing tables or JSON, failing in one line.

`minibroker list queues`, `minilog topics describe` and the rest talk to a running server over
the msgpack protocol (`clients.rpc.RpcConnection`). Each takes `--server HOST:PORT` (minilog's
also `--bootstrap-server`, as Kafka's tools do; the `MINIBROKER_SERVER` / `MINILOG_SERVER`
environment variable otherwise), prints an aligned table by default and JSON with `--json`, and
exits non-zero with one line on stderr when the server cannot be reached or refuses (an unknown
queue, topic or group): 1 for a refusal, 2 for bad usage, 3 when the server is unreachable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from clients.protocol.errors import BrokerError
from clients.rpc import RpcConnection

UNREACHABLE = 3


class CommandError(Exception):
    """A command failed in a way the user should read as one line; `code` is the exit status."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, ""
    try:
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT") from None
    if not 0 < number <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: port must be 1-65535")
    return host or "127.0.0.1", number


def add_server_arguments(parser, server: str, default_port: int, kafka_style: bool = False) -> None:
    default = os.environ.get(f"{server.upper()}_SERVER", f"127.0.0.1:{default_port}")
    names = ["--server", "--bootstrap-server"] if kafka_style else ["--server"]
    parser.add_argument(*names, dest="server", type=host_port, default=host_port(default), metavar="HOST:PORT",
                        help=f"the {server} to ask (default {default}; env {server.upper()}_SERVER)")
    parser.add_argument("--user", metavar="USER:PASSWORD", help="credentials, if the server requires them")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the server (default 10)")


def connect(args, client_name: str) -> RpcConnection:
    host, port = args.server
    credentials = None
    if args.user:
        user, _, password = args.user.partition(":")
        credentials = {"username": user, "password": password}
    try:
        return RpcConnection(host, port, client_name=client_name, credentials=credentials,
                             connect_timeout=args.timeout)
    except BrokerError as exc:
        raise CommandError(f"{host}:{port}: {exc.message}", UNREACHABLE) from None
    except (OSError, TimeoutError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        raise CommandError(f"cannot reach the server at {host}:{port}: {why}", UNREACHABLE) from None


def call(conn: RpcConnection, op: str, args: dict | None = None, timeout: float = 30.0):
    try:
        return conn.call(op, args or {}, timeout=timeout)
    except BrokerError as exc:
        raise CommandError(exc.message or exc.code) from None
    except (OSError, TimeoutError) as exc:
        raise CommandError(f"lost the server during '{op}': {exc}", UNREACHABLE) from None


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, separators=(",", ":"), default=str) if value else ""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def print_table(rows: list[dict], columns: list[str], out=None) -> None:
    """An aligned table with a header row, as rabbitmqctl and kafka-topics print."""
    out = out or sys.stdout
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip(), file=out)
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip(), file=out)


def emit(args, rows, columns: list[str] | None = None, out=None) -> None:
    out = out or sys.stdout
    if args.json:
        json.dump(rows, out, indent=1, default=lambda v: v.decode(errors="replace") if isinstance(v, bytes) else str(v))
        print(file=out)
    elif isinstance(rows, list):
        print_table(rows, columns or (list(rows[0]) if rows else []), out)
    else:
        for key, value in rows.items():
            print(f"{key}: {_cell(value)}", file=out)


def run(prog: str, handler, args) -> int:
    """Run `handler(args)`, turning a CommandError into one line on stderr and its exit status."""
    try:
        return handler(args) or 0
    except CommandError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return exc.code
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130


def stats_command(server: str, default_port: int, argv=None) -> int:
    """`<server> stats`: the server's counters and gauges (the `stats` op), as a table or JSON."""
    parser = argparse.ArgumentParser(prog=f"{server} stats", description="Print the server's counters and gauges "
                                     "(the same figures as --metrics-port serves to Prometheus).")
    add_server_arguments(parser, server, default_port, kafka_style=server == "minilog")
    args = parser.parse_args(argv)

    def handler(args):
        with connect(args, f"{server} stats") as conn:
            rows = call(conn, "stats")["metrics"]
        for row in rows:
            if row["labels"]:
                row["name"] += "{" + ",".join(f"{k}={v}" for k, v in row["labels"].items()) + "}"
        emit(args, rows, ["name", "type", "value", "help"])
    return run(f"{server} stats", handler, args)
