"""Checking request arguments, so every op rejects bad input the same clear way.

Handlers call `required(args, "queue", str)` or `optional(args, "prefetch", int, 0)`; a
missing or mistyped argument becomes BAD_REQUEST naming the argument, the type it should
have and the type it had, and the connection stays usable.
"""

from clients.protocol.errors import BrokerError, ErrorCode

_MISSING = object()
_TYPE_NAMES = {str: "string", int: "integer", bool: "boolean", bytes: "bin", dict: "map",
               list: "array", float: "float"}


def _name(t) -> str:
    if isinstance(t, tuple):
        return " or ".join(_name(x) for x in t)
    return _TYPE_NAMES.get(t, getattr(t, "__name__", str(t)))


def _check(name, value, types):
    # bool is an int in Python, but a client that sends true for a count made a mistake.
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise BrokerError(ErrorCode.BAD_REQUEST, f"argument '{name}' must be {_name(types)}, got boolean")
    if not isinstance(value, types):
        raise BrokerError(ErrorCode.BAD_REQUEST,
                          f"argument '{name}' must be {_name(types)}, got {type(value).__name__}")
    return value


def ensure_map(args) -> dict:
    if not isinstance(args, dict):
        raise BrokerError(ErrorCode.BAD_REQUEST, f"request args must be a map, got {type(args).__name__}")
    return args


def required(args: dict, name: str, types):
    value = args.get(name, _MISSING)
    if value is _MISSING or value is None:
        raise BrokerError(ErrorCode.BAD_REQUEST, f"missing required argument '{name}' ({_name(types)})")
    return _check(name, value, types)


def optional(args: dict, name: str, types, default=None):
    value = args.get(name, _MISSING)
    if value is _MISSING or value is None:
        return default
    return _check(name, value, types)


def optional_int(args: dict, name: str, default=None):
    """`optional(args, name, int, default)`, the same answers and errors, with the usual case (an
    integer, or nothing) decided first: a hot path (a fetch has four of them) pays no more."""
    value = args.get(name)
    if value.__class__ is int:
        return value
    if value is None:
        return default
    return _check(name, value, int)
