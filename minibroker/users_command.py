"""`minibroker users ...`: the user store's command with RabbitMQ's permission syntax.

    minibroker users set-permissions alice CONFIGURE WRITE READ

as `rabbitmqctl set_permissions`: three regular expressions over exchange and queue names
(minibroker/access.py says what each one grants). `'.*' '.*' '.*'` allows everything,
`'' '' ''` nothing.
"""

from serverbase.users_cli import PermissionsSyntax, run_users

from .access import PERMISSIONS, check_pattern
from .server import DEFAULT_DATA_DIR


def _add_arguments(parser) -> None:
    for name in PERMISSIONS:
        parser.add_argument(name, help=f"regular expression over the names the user may {name} "
                                       f"('' for none, '.*' for all)")


def _from_args(args) -> dict:
    return {name: check_pattern(getattr(args, name)) for name in PERMISSIONS}


def _describe(stored) -> str:
    if not isinstance(stored, dict):
        return "no permissions"
    return "  ".join(f"{name}={stored.get(name, '')!r}" for name in PERMISSIONS)


SYNTAX = PermissionsSyntax(_add_arguments, _from_args, _describe)


def main(argv=None) -> int:
    return run_users(argv, prog="minibroker", default_data_dir=DEFAULT_DATA_DIR, syntax=SYNTAX)
