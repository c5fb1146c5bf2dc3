"""`minibroker` / `python -m minibroker`: run the routing broker."""

import sys

from serverbase.cli import run_server

from .server import DEFAULT_DATA_DIR, DEFAULT_PORT, MinibrokerServer, tune_gc


def main(argv=None) -> int:
    tune_gc()
    return run_server(MinibrokerServer, argv, default_port=DEFAULT_PORT, default_data_dir=DEFAULT_DATA_DIR)


if __name__ == "__main__":
    sys.exit(main())
