"""Command line of both servers: flags, logging, uvloop, signals, the "listening" line.

`run_server(ServerClass, argv)` parses the shared flags (plus the subclass's own through
`ServerClass.add_arguments`), starts the server and prints one line

    <name> listening on <host>:<port>

to stdout, which scripts and tests wait for. SIGINT and SIGTERM stop it cleanly: stop
accepting, close connections, flush and close files, exit 0.
"""

import argparse
import asyncio
import logging
import signal
import sys

from clients.protocol.framing import DEFAULT_MAX_FRAME


def install_fast_loop() -> str:
    """Use uvloop when it is installed; the servers work on the standard loop too."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


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
    parser.add_argument("--port", type=int, default=default_port,
                        help=f"port to listen on; 0 picks a free one (default {default_port})")
    parser.add_argument("--data-dir", default=default_data_dir,
                        help=f"where data is kept (default {default_data_dir})")
    parser.add_argument("--log-level", default="INFO", type=str.upper,
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="in any case (default INFO)")
    parser.add_argument("--max-frame", type=int, default=DEFAULT_MAX_FRAME,
                        help=f"largest frame accepted, in bytes (default {DEFAULT_MAX_FRAME})")
    parser.add_argument("--user", action="append", metavar="USER:PASSWORD",
                        help="require credentials; repeat for several users (default: no authentication)")
    server_cls.add_arguments(parser)
    return parser


async def _serve(server) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    print(f"{server.name} listening on {server.host}:{server.port}", flush=True)
    await stop.wait()
    logging.getLogger(server.name).info("shutting down")
    await server.stop()


def run_server(server_cls, argv=None, *, default_port: int, default_data_dir: str) -> int:
    args = build_parser(server_cls, default_port, default_data_dir).parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    loop_name = install_fast_loop()
    server = server_cls.from_args(args)
    logging.getLogger(server.name).info("starting on %s loop, data in %s", loop_name, args.data_dir)
    try:
        asyncio.run(_serve(server))
    except OSError as exc:
        print(f"{server.name}: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0
