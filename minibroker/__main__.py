"""`minibroker` / `python -m minibroker`: run the routing broker, or one of its commands.

`minibroker [flags]` runs the server; `minibroker COMMAND ...` runs a command from `COMMANDS`
(each a "module:function" called with the rest of the command line).
"""

import sys

from serverbase.cli import run_console

from . import gc_policy
from .server import DEFAULT_DATA_DIR, DEFAULT_PORT, MinibrokerServer

COMMANDS = {
    "dump": "minibroker.store.dump:main",
    "users": "minibroker.users_command:main",
    "list": "minibroker.admin_cli:list_main",
    "declare": "minibroker.admin_cli:declare_main",
    "delete": "minibroker.admin_cli:delete_main",
    "purge": "minibroker.admin_cli:purge_main",
    "bind": "minibroker.admin_cli:bind_main",
    "unbind": "minibroker.admin_cli:unbind_main",
    "publish": "minibroker.admin_cli:publish_main",
    "get": "minibroker.admin_cli:get_main",
    "stats": "minibroker.admin_cli:stats_main",
    "trace": "minibroker.admin_cli:trace_main",
}


def main(argv=None) -> int:
    return run_console(MinibrokerServer, argv, commands=COMMANDS, before_serve=gc_policy.tune,
                       default_port=DEFAULT_PORT, default_data_dir=DEFAULT_DATA_DIR)


if __name__ == "__main__":
    sys.exit(main())
