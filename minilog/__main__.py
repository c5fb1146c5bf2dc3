"""`minilog` / `python -m minilog`: run the log broker."""

import sys

from serverbase.cli import run_server

from .server import DEFAULT_DATA_DIR, DEFAULT_PORT, MinilogServer


def main(argv=None) -> int:
    return run_server(MinilogServer, argv, default_port=DEFAULT_PORT, default_data_dir=DEFAULT_DATA_DIR)


if __name__ == "__main__":
    sys.exit(main())
