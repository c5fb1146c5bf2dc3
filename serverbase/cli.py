"""Command line of both servers: flags, logging, uvloop, signals, the "listening" line.

`run_server(ServerClass, argv)` parses the shared flags (plus the subclass's own through
`ServerClass.add_arguments`), starts the server and prints one line per listener

    <name> listening on <host>:<port>          the msgpack protocol
    <name> <door> listening on <host>:<port>   another front door (amqp, kafka)

to stdout, the msgpack line first, which scripts and tests wait for. SIGINT and SIGTERM stop
it cleanly: stop accepting, close connections, flush and close files, exit 0.

`run_console` is the console script: `minibroker <command> ...` runs one of the broker's
commands (a table of names to "module:function"), anything else runs the server.
"""

import argparse
import asyncio
import importlib
import logging
import signal
import sys

from clients.protocol.framing import DEFAULT_MAX_FRAME

from .log_format import configure_logging
from .settings import parse_settings


def install_fast_loop() -> str:
    """Use uvloop when it is installed; the servers work on the standard loop too."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def pin_malloc_thresholds(mmap_threshold: int = 1 << 20, trim_threshold: int = 8 << 20) -> bool:
    """Fix glibc's mmap and trim thresholds, so large buffers are returned and small ones reused.

    glibc raises its mmap threshold each time a large mmapped block is freed (up to 32 MiB), so
    after the first 16 MiB frame buffer is freed the next ones come from the heap, where freed
    memory is seldom returned to the system: 14 connections stalled on 16 MiB partial frames
    left the server at 260 MB after they closed. A fixed mmap threshold keeps every allocation
    of `mmap_threshold` bytes or more in its own mapping, unmapped when freed.

    Fixing it also stops glibc from raising the trim threshold (twice the mmap threshold when
    glibc moves it), which then stays at 128 KiB: nearly every free of a produce request's
    batch bytes gave the top of the heap back to the kernel, and the next request faulted
    fresh pages in (about 1,000 page faults per MiB produced, 1.5-1.8 times the server CPU
    per 16 or 64 KiB record; a fault costs more in a VM that hands freed memory back to its
    host). Up to `trim_threshold` bytes of free heap are kept for reuse instead. A no-op where
    the C library is not glibc.
    """
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        return bool(libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and \
            bool(libc.mallopt(M_TRIM_THRESHOLD, trim_threshold))
    except (OSError, AttributeError):
        return False


def port_number(text: str) -> int:
    """argparse type of a TCP port: 0 (pick a free one) to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0-65535; 0 picks a free one)")
    return port


def port_or_off(text: str) -> int | None:
    """argparse type of an optional front door's port: a port number, or `off` (None)."""
    if text.strip().lower() == "off":
        return None
    return port_number(text)


def parse_credentials(values):
    if not values:
        return None
    creds = {}
    for item in values:
        user, sep, password = item.partition(":")
        if not sep:
            raise SystemExit(f"--user must be USER:PASSWORD, got {item!r}")
        creds[user] = password
    return creds


def build_parser(server_cls, default_port: int, default_data_dir: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=server_cls.name, description=server_cls.__doc__)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=port_number, default=default_port,
                        help=f"port to listen on; 0 picks a free one (default {default_port})")
    parser.add_argument("--data-dir", default=default_data_dir,
                        help=f"where data is kept (default {default_data_dir})")
    parser.add_argument("--log-level", default="INFO", type=str.upper,
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="in any case (default INFO)")
    parser.add_argument("--log-format", default="text", type=str.lower, choices=["text", "json"],
                        help="text lines (default) or one JSON object per line")
    parser.add_argument("--config", metavar="FILE",
                        help=f"a TOML file of settings: keys are these flags without the dashes; precedence "
                             f"is flag > environment ({server_cls.name.upper()}_PORT, ...) > file > default")
    parser.add_argument("--metrics-port", type=port_or_off, default=None, metavar="PORT|off",
                        help="serve Prometheus metrics on http://HOST:PORT/metrics (default off)")
    parser.add_argument("--max-frame", type=int, default=DEFAULT_MAX_FRAME,
                        help=f"largest frame accepted, in bytes (default {DEFAULT_MAX_FRAME})")
    parser.add_argument("--user", action="append", metavar="USER:PASSWORD",
                        help="require credentials and let this user do everything; repeat for several users. "
                             "Visible to every local user in `ps`: for quick local use (see --auth)")
    parser.add_argument("--auth", action="store_true",
                        help=f"require a user of the data directory's user store (`{server_cls.name} users add`) "
                             f"on every front door, with its permissions (default: no authentication)")
    from . import tls
    tls.add_arguments(parser, server_cls.tls_default_ports)
    from .server import DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_HEARTBEAT, DEFAULT_MAX_PARTIAL_BYTES
    parser.add_argument("--max-partial-bytes", type=int, default=DEFAULT_MAX_PARTIAL_BYTES, metavar="BYTES",
                        help="bytes of unfinished frames held across all connections; a connection whose frame "
                             f"would go over it is closed with FRAME_TOO_LARGE (default {DEFAULT_MAX_PARTIAL_BYTES})")
    parser.add_argument("--handshake-timeout", type=float, default=DEFAULT_HANDSHAKE_TIMEOUT, metavar="SECONDS",
                        help="close a connection that has not sent its hello within this time; 0: never "
                             f"(default {DEFAULT_HANDSHAKE_TIMEOUT:g})")
    parser.add_argument("--heartbeat", type=int, default=DEFAULT_HEARTBEAT, metavar="SECONDS",
                        help="the longest heartbeat period agreed with a client that asks for heartbeats in "
                             f"its hello; 0 refuses them (default {DEFAULT_HEARTBEAT})")
    server_cls.add_arguments(parser)
    return parser


async def _serve(server) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    for listener in server.listeners:
        door = f" {listener.name}" if listener.name else ""
        print(f"{server.name}{door} listening on {listener.host}:{listener.port}", flush=True)
    await stop.wait()
    logging.getLogger(server.name).info("shutting down")
    await server.stop()


def run_console(server_cls, argv=None, *, commands: dict, default_port: int, default_data_dir: str,
                before_serve=None) -> int:
    """`<name> COMMAND ...` runs `commands[COMMAND]` ("module:function", called with the rest of
    argv); anything else starts the server (after `before_serve()`, if given)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in commands:
        module, _, function = commands[argv[0]].partition(":")
        return getattr(importlib.import_module(module), function)(argv[1:]) or 0
    if before_serve is not None:
        before_serve()
    return run_server(server_cls, argv, default_port=default_port, default_data_dir=default_data_dir,
                      commands=commands)


def run_server(server_cls, argv=None, *, default_port: int, default_data_dir: str, commands=None) -> int:
    parser = build_parser(server_cls, default_port, default_data_dir)
    if commands:
        parser.epilog = (f"commands: {', '.join(sorted(commands))} "
                         f"(`{server_cls.name} COMMAND --help` for each); without one, the server runs")
    args = parse_settings(parser, server_cls.name, argv)
    configure_logging(args.log_level, args.log_format, sys.stderr)
    loop_name = install_fast_loop()
    pin_malloc_thresholds()
    server = server_cls.from_args(args)
    from .tls import TlsConfigError, from_args as tls_from_args
    from .users import UserStoreError
    try:
        server.configure_security(args.auth, tls_from_args(args, server_cls.tls_default_ports))
    except TlsConfigError as exc:
        print(f"{server.name}: cannot start: {exc}", file=sys.stderr)
        return 1
    server.metrics_port = args.metrics_port
    logging.getLogger(server.name).info("starting on %s loop, data in %s", loop_name, args.data_dir)
    try:
        asyncio.run(_serve(server))
    except (OSError, UserStoreError) as exc:
        print(f"{server.name}: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0
