"""`minilog users ...`: the user store's command with Kafka-style ACLs.

    minilog users set-permissions alice topic:orders:read,write topic:logs-*:read group:billing:read

Each argument is one ACL, RESOURCE:NAME:OPERATIONS: the resource `topic` or `group`; the name
literal (`orders`), a prefix (`logs-*`) or every name (`*`); the operations read, write,
create, delete, describe, alter, or all (minilog/acl.py says what each op needs). The
arguments replace all of the user's ACLs; none leaves the user with no permissions.
"""

from serverbase.users_cli import PermissionsSyntax, run_users

from .acl import describe_acl, parse_acl
from .server import DEFAULT_DATA_DIR


def _add_arguments(parser) -> None:
    parser.add_argument("acls", nargs="*", metavar="RESOURCE:NAME:OPERATIONS",
                        help="e.g. topic:orders:read,write  topic:logs-*:read  group:*:all")


def _from_args(args) -> list:
    return [parse_acl(spec) for spec in args.acls]


def _describe(stored) -> str:
    if not isinstance(stored, list) or not stored:
        return "no permissions"
    return "  ".join(describe_acl(e) for e in stored)


SYNTAX = PermissionsSyntax(_add_arguments, _from_args, _describe)


def main(argv=None) -> int:
    return run_users(argv, prog="minilog", default_data_dir=DEFAULT_DATA_DIR, syntax=SYNTAX)
