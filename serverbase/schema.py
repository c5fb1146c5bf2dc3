"""Request schemas: every op's arguments are checked once, at the edge, before its handler runs.

An op declares what it accepts next to its handler,

    @op("queue_bind", schema={"queue": Name(), "exchange": Name(), "routing_key": Name(default=""),
                              "arguments": Table()})

and `BrokerServer.dispatch` runs `Schema.validate` on the request's args first. The handler then
gets a plain dict holding exactly the declared keys, each of the declared type and within its
bounds, with defaults filled in; it never sees a list where it expected a string, an integer of
a thousand digits, a map nested a thousand deep or a key it does not know. Anything else is
BAD_REQUEST naming the argument, what it must be and what was sent, and the connection stays
open. A `nil` value counts as absent (the default applies), as the protocol has always had it.

The specs are small classes (`Str`, `Name`, `Int`, `Bool`, `Bin`, `Table`, `Value`, `Array`,
`Row`, `Map`) with one method, `check(value, where) -> value`. They bound every size a client
controls: string bytes, array items, and for free-form maps (queue arguments, headers) the depth,
the number of entries and the bytes of all strings in them. The limits and their meaning are
listed in docs/robustness.md.
"""

from clients.protocol.errors import BrokerError, ErrorCode

MISSING = object()

NAME_MAX_BYTES = 255          # AMQP's short string: queue, exchange, routing key, consumer tag
TABLE_MAX_DEPTH = 32          # nesting of maps/arrays inside an arguments table
TABLE_MAX_ENTRIES = 1024      # map entries and array items in one table, counted at every level
TABLE_MAX_BYTES = 64 * 1024   # bytes of all strings and binaries in one table, keys included

_TYPE_NAMES = {str: "string", int: "integer", bool: "boolean", bytes: "bin", dict: "map",
               list: "array", float: "float", type(None): "nil"}


def type_name(value) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def bad(where: str, message: str) -> BrokerError:
    return BrokerError(ErrorCode.BAD_REQUEST, f"argument '{where}' {message}")


def utf8_len(s: str) -> int:
    # A character is at most 4 bytes: short strings need no encoding to be measured.
    return len(s) if s.isascii() else len(s.encode("utf-8", "surrogatepass"))


class Spec:
    """One argument's type and bounds; `default` MISSING means the argument is required."""

    default = MISSING
    what = "a value"

    def check(self, value, where: str):
        raise NotImplementedError

    def wrong_type(self, value, where: str) -> BrokerError:
        return bad(where, f"must be {self.what}, got {type_name(value)}")


class Str(Spec):
    def __init__(self, max_bytes: int = 65535, default=MISSING, choices=None):
        self.max_bytes = max_bytes
        self.default = default
        self.choices = tuple(choices) if choices else None
        self.what = "a string" if not self.choices else f"one of {', '.join(map(repr, self.choices))}"

    def check(self, value, where):
        if type(value) is not str:
            raise self.wrong_type(value, where)
        if len(value) > self.max_bytes // 4 and utf8_len(value) > self.max_bytes:
            raise bad(where, f"is {utf8_len(value)} bytes of UTF-8; the limit is {self.max_bytes}")
        if self.choices is not None and value not in self.choices:
            raise bad(where, f"must be {self.what}, got {value[:100]!r}")
        return value


def Name(default=MISSING) -> Str:
    """A queue, exchange, routing or binding key, consumer tag: at most 255 bytes of UTF-8, as in AMQP."""
    return Str(NAME_MAX_BYTES, default)


class Int(Spec):
    what = "an integer"

    def __init__(self, min: int = -(1 << 63), max: int = (1 << 64) - 1, default=MISSING):
        self.min, self.max, self.default = min, max, default

    def check(self, value, where):
        if type(value) is not int:   # bool is an int in Python, but true is no count
            raise self.wrong_type(value, where)
        if not self.min <= value <= self.max:
            raise bad(where, f"must be an integer in {self.min}..{self.max}, got {value}")
        return value


class Bool(Spec):
    what = "a boolean"

    def __init__(self, default=MISSING):
        self.default = default

    def check(self, value, where):
        if type(value) is not bool:
            raise self.wrong_type(value, where)
        return value


class Bin(Spec):
    what = "bin (binary data)"

    def __init__(self, max_bytes: int | None = None, default=MISSING):
        self.max_bytes, self.default = max_bytes, default

    def check(self, value, where):
        if type(value) is not bytes:
            raise self.wrong_type(value, where)
        if self.max_bytes is not None and len(value) > self.max_bytes:
            raise bad(where, f"is {len(value)} bytes; the limit is {self.max_bytes}")
        return value


def check_table(value, where: str, max_depth: int = TABLE_MAX_DEPTH, max_entries: int = TABLE_MAX_ENTRIES,
                max_bytes: int = TABLE_MAX_BYTES, keys_str: bool = True):
    """Check a free-form msgpack value (an arguments map, headers) against the table bounds.

    Walks it without recursion, so no depth a client sends can exhaust the interpreter's stack.
    """
    entries = 0
    nbytes = 0
    stack = [(value, 1, where)]
    while stack:
        node, depth, path = stack.pop()
        t = type(node)
        if t is dict or t is list:
            if depth > max_depth:
                raise bad(where, f"is nested more than {max_depth} levels deep (at '{path}')")
            entries += len(node)
            if entries > max_entries:
                raise bad(where, f"holds more than {max_entries} entries (maps and arrays, every level counted)")
            if t is dict:
                for k, v in node.items():
                    if keys_str and type(k) is not str:
                        raise bad(where, f"has a {type_name(k)} key at '{path}'; map keys must be strings")
                    if type(k) is str:
                        nbytes += len(k)
                    stack.append((v, depth + 1, f"{path}.{k}"))
            else:
                for i, v in enumerate(node):
                    stack.append((v, depth + 1, f"{path}[{i}]"))
        elif t is str or t is bytes:
            nbytes += len(node)
        elif t is int or t is float or t is bool or node is None:
            continue
        else:   # msgpack ext types and the like: nothing the brokers store or compare
            raise bad(where, f"holds a value of type {type_name(node)} at '{path}'")
        if nbytes > max_bytes:
            raise bad(where, f"holds more than {max_bytes} bytes of strings and binaries")
    return value


class Value(Spec):
    """Any msgpack value, within the table bounds (an echo, an opaque setting)."""

    what = "a value"

    def __init__(self, default=MISSING, **bounds):
        self.default, self.bounds = default, bounds

    def check(self, value, where):
        return check_table(value, where, **self.bounds)


class Table(Value):
    """A map with string keys and free-form values: queue, exchange, binding, consumer arguments."""

    what = "a map"

    def __init__(self, default=None, **bounds):
        super().__init__(default if default is not None else {}, **bounds)

    def check(self, value, where):
        if type(value) is not dict:
            raise self.wrong_type(value, where)
        return check_table(value, where, **self.bounds)


class Array(Spec):
    what = "an array"

    def __init__(self, items: Spec | None = None, max_items: int = 100_000, default=MISSING):
        self.items, self.max_items, self.default = items, max_items, default

    def check(self, value, where):
        if type(value) is not list:
            raise self.wrong_type(value, where)
        if len(value) > self.max_items:
            raise bad(where, f"has {len(value)} items; the limit is {self.max_items}")
        items = self.items
        if items is not None:
            for i, v in enumerate(value):
                if v is None and items.default is not MISSING:
                    continue
                items.check(v, f"{where}[{i}]")
        return value


class Row(Spec):
    """A fixed-layout array such as `[topic, partition, offset]`; the trailing `optional` may be left out."""

    def __init__(self, *fields: Spec, optional: int = 0, default=MISSING):
        self.fields, self.optional, self.default = fields, optional, default
        self.what = f"an array of {len(fields) - optional}" + (f"-{len(fields)}" if optional else "") + " items"

    def check(self, value, where):
        if type(value) is not list or not len(self.fields) - self.optional <= len(value) <= len(self.fields):
            raise self.wrong_type(value, where) if type(value) is not list else \
                bad(where, f"must be {self.what}, got {len(value)}")
        for i, (spec, v) in enumerate(zip(self.fields, value)):
            if v is None and spec.default is not MISSING:
                continue
            spec.check(v, f"{where}[{i}]")
        return value


class Map(Spec):
    """A map with named fields, checked like a request's args (credentials, a topic spec)."""

    what = "a map"

    def __init__(self, fields: dict, default=MISSING):
        self.schema = Schema(fields)
        self.default = default

    def check(self, value, where):
        if type(value) is not dict:
            raise self.wrong_type(value, where)
        return self.schema.validate(value, prefix=f"{where}.")


class Schema:
    """The arguments of one op: name → Spec. Unknown names are refused, so typos are not ignored."""

    __slots__ = ("fields", "defaults", "required")

    def __init__(self, fields: dict):
        self.fields = dict(fields)
        self.defaults = {k: s.default for k, s in self.fields.items() if s.default is not MISSING}
        self.required = [k for k, s in self.fields.items() if s.default is MISSING]

    def validate(self, args, prefix: str = "") -> dict:
        if type(args) is not dict:
            raise BrokerError(ErrorCode.BAD_REQUEST, f"request args must be a map, got {type_name(args)}")
        fields = self.fields
        out = {}
        for key, value in args.items():
            spec = fields.get(key)
            if spec is None:
                shown = key[:100] if type(key) is str else type_name(key)
                raise BrokerError(ErrorCode.BAD_REQUEST,
                                  f"unknown argument '{prefix}{shown}'; this op takes: "
                                  f"{', '.join(fields) or 'no arguments'}")
            if value is None:
                continue
            out[key] = spec.check(value, prefix + key)
        if len(out) != len(fields):
            for key in self.required:
                if key not in out:
                    raise BrokerError(ErrorCode.BAD_REQUEST,
                                      f"missing required argument '{prefix}{key}' ({fields[key].what})")
            for key, default in self.defaults.items():
                if key not in out:
                    # Mutable defaults are copied, so no handler can change the next request's.
                    out[key] = {} if type(default) is dict else ([] if type(default) is list else default)
        return out
