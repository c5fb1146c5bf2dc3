"""`minilog` / `python -m minilog`: run the log broker, or one of its commands.

`minilog [flags]` runs the server; `minilog COMMAND ...` runs a command from `COMMANDS`
(each a "module:function" called with the rest of the command line).
"""

import sys

from serverbase.cli import run_console

from .server import DEFAULT_DATA_DIR, DEFAULT_PORT, MinilogServer

COMMANDS: dict[str, str] = {
    "dump": "minilog.dump:main",
    "users": "minilog.users_command:main",
    "topics": "minilog.admin_cli:topics_main",
    "groups": "minilog.admin_cli:groups_main",
    "produce": "minilog.admin_cli:produce_main",
    "consume": "minilog.admin_cli:consume_main",
    "stats": "minilog.admin_cli:stats_main",
    "trace": "minilog.admin_cli:trace_main",
}


def main(argv=None) -> int:
    return run_console(MinilogServer, argv, commands=COMMANDS,
                       default_port=DEFAULT_PORT, default_data_dir=DEFAULT_DATA_DIR)


if __name__ == "__main__":
    sys.exit(main())
