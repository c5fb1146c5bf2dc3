"""AMQP 0-9-1 as data: frame constants, reply codes, and every method of the classes we speak.

The method table is one compact text table (`METHOD_TABLE`) written from the AMQP 0-9-1
specification with RabbitMQ's errata and extensions (exchange.bind/unbind, basic.nack,
confirm.select, connection.blocked/unblocked, update-secret). At import it becomes one
`MethodSpec` per method: a named tuple class for the arguments, and a decoder and encoder
compiled to runs of precompiled `struct`s (consecutive fixed-size fields are read with one
`unpack_from`, consecutive bits share octets as the spec packs them).

Decoding a method is `METHODS[(class_id, method_id)].decode(buf, offset, end)` → named tuple;
encoding is `spec.encode(args)` → payload bytes (class and method ids included).
Malformed arguments raise `AMQPFrameError` (502 SYNTAX_ERROR); codecs never see sockets.
"""

from collections import namedtuple
from struct import Struct, error as StructError

from .fields import decode_table, encode_table

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8
FRAME_END = 0xCE
FRAME_END_BYTE = b"\xce"
FRAME_HEADER_SIZE = 7            # type, channel, size
FRAME_OVERHEAD = 8               # header + frame-end octet
FRAME_MIN_SIZE = 4096            # the smallest frame_max a peer may ask for

# ---- reply codes (spec section 1.9, "constants") ------------------------------------------------
REPLY_SUCCESS = 200
CONTENT_TOO_LARGE = 311
NO_ROUTE = 312
NO_CONSUMERS = 313
CONNECTION_FORCED = 320
INVALID_PATH = 402
ACCESS_REFUSED = 403
NOT_FOUND = 404
RESOURCE_LOCKED = 405
PRECONDITION_FAILED = 406
FRAME_ERROR = 501
SYNTAX_ERROR = 502
COMMAND_INVALID = 503
CHANNEL_ERROR = 504
UNEXPECTED_FRAME = 505
RESOURCE_ERROR = 506
NOT_ALLOWED = 530
NOT_IMPLEMENTED = 540
INTERNAL_ERROR = 541

REPLY_NAMES = {
    200: "OK", 311: "CONTENT_TOO_LARGE", 312: "NO_ROUTE", 313: "NO_CONSUMERS", 320: "CONNECTION_FORCED",
    402: "INVALID_PATH", 403: "ACCESS_REFUSED", 404: "NOT_FOUND", 405: "RESOURCE_LOCKED",
    406: "PRECONDITION_FAILED", 501: "FRAME_ERROR", 502: "SYNTAX_ERROR", 503: "COMMAND_INVALID",
    504: "CHANNEL_ERROR", 505: "UNEXPECTED_FRAME", 506: "RESOURCE_ERROR", 530: "NOT_ALLOWED",
    540: "NOT_IMPLEMENTED", 541: "INTERNAL_ERROR",
}
# Hard errors close the connection; the others ("soft") close only the channel.
HARD_ERRORS = frozenset({320, 402, 501, 502, 503, 504, 505, 506, 530, 540, 541})


class AMQPError(Exception):
    """An AMQP exception: reply code, text (RabbitMQ's "NAME - detail" form) and the method at fault."""

    def __init__(self, code: int, detail: str, class_id: int = 0, method_id: int = 0):
        self.code = code
        self.text = f"{REPLY_NAMES.get(code, 'ERROR')} - {detail}"
        self.class_id = class_id
        self.method_id = method_id
        super().__init__(self.text)

    @property
    def hard(self) -> bool:
        return self.code in HARD_ERRORS


class AMQPFrameError(AMQPError):
    """The byte stream is broken (501-505): the connection is closed with this code."""


# ---- the method table ---------------------------------------------------------------------------
# class-id class-name / method-id method-name [!content] field:type ...
# Types: octet short long longlong shortstr longstr bit table timestamp. `ticket` is the
# reserved-1 short of the spec (access tickets, always 0 now). `content` marks methods followed
# by a content header and body.
METHOD_TABLE = """
10 connection
  10 start version_major:octet version_minor:octet server_properties:table mechanisms:longstr locales:longstr
  11 start_ok client_properties:table mechanism:shortstr response:longstr locale:shortstr
  20 secure challenge:longstr
  21 secure_ok response:longstr
  30 tune channel_max:short frame_max:long heartbeat:short
  31 tune_ok channel_max:short frame_max:long heartbeat:short
  40 open virtual_host:shortstr capabilities:shortstr insist:bit
  41 open_ok known_hosts:shortstr
  50 close reply_code:short reply_text:shortstr class_id:short method_id:short
  51 close_ok
  60 blocked reason:shortstr
  61 unblocked
  70 update_secret new_secret:longstr reason:shortstr
  71 update_secret_ok
20 channel
  10 open out_of_band:shortstr
  11 open_ok channel_id:longstr
  20 flow active:bit
  21 flow_ok active:bit
  40 close reply_code:short reply_text:shortstr class_id:short method_id:short
  41 close_ok
40 exchange
  10 declare ticket:short exchange:shortstr type:shortstr passive:bit durable:bit auto_delete:bit internal:bit nowait:bit arguments:table
  11 declare_ok
  20 delete ticket:short exchange:shortstr if_unused:bit nowait:bit
  21 delete_ok
  30 bind ticket:short destination:shortstr source:shortstr routing_key:shortstr nowait:bit arguments:table
  31 bind_ok
  40 unbind ticket:short destination:shortstr source:shortstr routing_key:shortstr nowait:bit arguments:table
  51 unbind_ok
50 queue
  10 declare ticket:short queue:shortstr passive:bit durable:bit exclusive:bit auto_delete:bit nowait:bit arguments:table
  11 declare_ok queue:shortstr message_count:long consumer_count:long
  20 bind ticket:short queue:shortstr exchange:shortstr routing_key:shortstr nowait:bit arguments:table
  21 bind_ok
  30 purge ticket:short queue:shortstr nowait:bit
  31 purge_ok message_count:long
  40 delete ticket:short queue:shortstr if_unused:bit if_empty:bit nowait:bit
  41 delete_ok message_count:long
  50 unbind ticket:short queue:shortstr exchange:shortstr routing_key:shortstr arguments:table
  51 unbind_ok
60 basic
  10 qos prefetch_size:long prefetch_count:short global_:bit
  11 qos_ok
  20 consume ticket:short queue:shortstr consumer_tag:shortstr no_local:bit no_ack:bit exclusive:bit nowait:bit arguments:table
  21 consume_ok consumer_tag:shortstr
  30 cancel consumer_tag:shortstr nowait:bit
  31 cancel_ok consumer_tag:shortstr
  40 publish !content ticket:short exchange:shortstr routing_key:shortstr mandatory:bit immediate:bit
  50 return !content reply_code:short reply_text:shortstr exchange:shortstr routing_key:shortstr
  60 deliver !content consumer_tag:shortstr delivery_tag:longlong redelivered:bit exchange:shortstr routing_key:shortstr
  70 get ticket:short queue:shortstr no_ack:bit
  71 get_ok !content delivery_tag:longlong redelivered:bit exchange:shortstr routing_key:shortstr message_count:long
  72 get_empty cluster_id:shortstr
  80 ack delivery_tag:longlong multiple:bit
  90 reject delivery_tag:longlong requeue:bit
  100 recover_async requeue:bit
  110 recover requeue:bit
  111 recover_ok
  120 nack delivery_tag:longlong multiple:bit requeue:bit
85 confirm
  10 select nowait:bit
  11 select_ok
90 tx
  10 select
  11 select_ok
  20 commit
  21 commit_ok
  30 rollback
  31 rollback_ok
"""

_FIXED = {"octet": "B", "short": "H", "long": "I", "longlong": "Q", "timestamp": "Q"}
_CLASS_METHOD = Struct(">HH")
_U8 = Struct(">B")
_U32 = Struct(">I")


def decode_shortstr(buf, off: int, end: int):
    n = buf[off]
    stop = off + 1 + n
    if stop > end:
        raise AMQPFrameError(SYNTAX_ERROR, "short string runs past the end of the frame")
    try:
        return str(buf[off + 1:stop], "utf-8"), stop
    except UnicodeDecodeError:
        raise AMQPFrameError(SYNTAX_ERROR, "short string is not valid UTF-8") from None


def encode_shortstr(value) -> bytes:
    raw = value.encode("utf-8") if type(value) is str else bytes(value)
    if len(raw) > 255:
        raise ValueError(f"short string of {len(raw)} bytes (at most 255)")
    return _U8.pack(len(raw)) + raw


def encode_longstr(value) -> bytes:
    raw = value.encode("utf-8") if type(value) is str else bytes(value)
    return _U32.pack(len(raw)) + raw


class MethodSpec:
    """One method: ids, names, its arguments tuple class, and its compiled codec steps."""

    __slots__ = ("class_id", "method_id", "name", "args", "fields", "content", "prefix", "_steps")

    def __init__(self, class_id, class_name, method_id, method_name, fields, content):
        self.class_id = class_id
        self.method_id = method_id
        self.name = f"{class_name}.{method_name}"
        self.fields = [name for name, _ in fields]
        self.content = content
        self.prefix = _CLASS_METHOD.pack(class_id, method_id)
        cls_name = "".join(p.capitalize() for p in (class_name + "_" + method_name).split("_"))
        self.args = namedtuple(cls_name, self.fields, defaults=[_default(t) for _, t in fields])
        self.args.spec = self
        self._steps = _compile(fields)

    def decode(self, buf, off: int, end: int):
        """The arguments of this method from buf[off:end] (after class and method ids)."""
        values = []
        try:
            for kind, arg in self._steps:
                if kind == 0:                               # a run of fixed-size fields
                    values.extend(arg.unpack_from(buf, off))
                    off += arg.size
                elif kind == 1:                             # shortstr
                    v, off = decode_shortstr(buf, off, end)
                    values.append(v)
                elif kind == 2:                             # longstr
                    (n,) = _U32.unpack_from(buf, off)
                    stop = off + 4 + n
                    if stop > end:
                        raise AMQPFrameError(SYNTAX_ERROR, "long string runs past the end of the frame")
                    values.append(bytes(buf[off + 4:stop]))
                    off = stop
                elif kind == 3:                             # table
                    v, off = decode_table(buf, off, end)
                    values.append(v)
                else:                                       # `arg` bits packed in octets
                    count = arg
                    while count > 0:
                        octet = buf[off]
                        off += 1
                        for i in range(min(count, 8)):
                            values.append(bool(octet & (1 << i)))
                        count -= 8
        except (StructError, IndexError):
            raise AMQPFrameError(SYNTAX_ERROR, f"{self.name}: arguments run past the end of the frame") from None
        except ValueError as exc:       # from the field-table decoder
            raise AMQPFrameError(SYNTAX_ERROR, f"{self.name}: {exc}") from None
        if off > end:
            raise AMQPFrameError(SYNTAX_ERROR, f"{self.name}: arguments run past the end of the frame")
        return self.args._make(values)

    def encode(self, args) -> bytes:
        """The method frame payload: class id, method id, arguments."""
        out = [self.prefix]
        i = 0
        for kind, arg in self._steps:
            if kind == 0:
                n = len(arg.format) - 1
                out.append(arg.pack(*args[i:i + n]))
                i += n
            elif kind == 1:
                out.append(encode_shortstr(args[i]))
                i += 1
            elif kind == 2:
                out.append(encode_longstr(args[i]))
                i += 1
            elif kind == 3:
                out.append(encode_table(args[i]))
                i += 1
            else:
                count = arg
                while count > 0:
                    octet = 0
                    for b in range(min(count, 8)):
                        if args[i]:
                            octet |= 1 << b
                        i += 1
                    out.append(_U8.pack(octet))
                    count -= 8
        return b"".join(out)


def _default(type_name):
    return {"bit": False, "shortstr": "", "longstr": b"", "table": None}.get(type_name, 0)


def _compile(fields):
    steps = []
    for _, t in fields:
        if t in _FIXED:
            if steps and steps[-1][0] == 0:
                steps[-1] = (0, Struct(steps[-1][1].format + _FIXED[t]))
            else:
                steps.append((0, Struct(">" + _FIXED[t])))
        elif t == "bit":
            if steps and steps[-1][0] == 4:
                steps[-1] = (4, steps[-1][1] + 1)
            else:
                steps.append((4, 1))
        else:
            steps.append(({"shortstr": 1, "longstr": 2, "table": 3}[t], None))
    return steps


def _build(table: str):
    methods = {}
    by_name = {}
    class_name = class_id = None
    for line in table.strip().splitlines():
        words = line.split()
        if not line.startswith(" "):
            class_id, class_name = int(words[0]), words[1]
            continue
        method_id, method_name, rest = int(words[0]), words[1], words[2:]
        content = bool(rest) and rest[0] == "!content"
        if content:
            rest = rest[1:]
        fields = [tuple(w.split(":")) for w in rest]
        spec = MethodSpec(class_id, class_name, method_id, method_name, fields, content)
        methods[(class_id, method_id)] = spec
        by_name[spec.name] = spec
    return methods, by_name


METHODS, METHODS_BY_NAME = _build(METHOD_TABLE)
CLASS_NAMES = {10: "connection", 20: "channel", 40: "exchange", 50: "queue", 60: "basic", 85: "confirm", 90: "tx"}


class _Namespace:
    """`spec.m.BasicPublish` style access to the argument classes, for readable call sites."""


m = _Namespace()
for _spec in METHODS.values():
    setattr(m, _spec.args.__name__, _spec.args)
del _spec
