"""The content header frame and the 14 basic properties.

A content header payload is: class id (short), weight (short, always 0), body size (longlong),
property flags (short; bit 15 is the first property, bit 0 would announce another flags word,
which class basic never needs), then the present properties in order.

Properties travel through the broker core as the dict the msgpack protocol uses, keyed by
pika's names (`minibroker/message.py: PROPERTY_NAMES`), so a message published over AMQP is
consumed over msgpack with the same properties and the other way round. A message without
properties is `None` in the core; its header is the cheapest to read and write (`EMPTY_FLAGS`).
"""

from struct import Struct, error as StructError

from .fields import decode_table, encode_table

# (name, type, flag bit) in wire order.
BASIC_PROPERTIES = (
    ("content_type", "shortstr"), ("content_encoding", "shortstr"), ("headers", "table"),
    ("delivery_mode", "octet"), ("priority", "octet"), ("correlation_id", "shortstr"),
    ("reply_to", "shortstr"), ("expiration", "shortstr"), ("message_id", "shortstr"),
    ("timestamp", "timestamp"), ("type", "shortstr"), ("user_id", "shortstr"),
    ("app_id", "shortstr"), ("cluster_id", "shortstr"),
)
_FLAGS = tuple((name, kind, 1 << (15 - i)) for i, (name, kind) in enumerate(BASIC_PROPERTIES))

HEADER = Struct(">HHQH")          # class id, weight, body size, property flags
HEADER_PREFIX = Struct(">HHQ")
_U8 = Struct(">B")
_U64 = Struct(">Q")
BASIC_CLASS = 60


class PropertiesError(ValueError):
    pass


def decode_properties(buf, off: int, end: int, flags: int):
    """The properties announced by `flags`, from buf[off:end] → dict (or None if flags is 0)."""
    if not flags:
        return None
    if flags & 0x0003:
        raise PropertiesError("property flags announce a property class basic does not have")
    props = {}
    try:
        for name, kind, bit in _FLAGS:
            if not flags & bit:
                continue
            if kind == "shortstr":
                n = buf[off]
                stop = off + 1 + n
                if stop > end:
                    raise PropertiesError(f"property {name} runs past the end of the header")
                try:
                    props[name] = str(buf[off + 1:stop], "utf-8")
                except UnicodeDecodeError:
                    raise PropertiesError(f"property {name} is not valid UTF-8") from None
                off = stop
            elif kind == "octet":
                props[name] = buf[off]
                off += 1
            elif kind == "timestamp":
                props[name] = _U64.unpack_from(buf, off)[0]
                off += 8
            else:
                props[name], off = decode_table(buf, off, end)
    except (IndexError, StructError):
        raise PropertiesError("properties run past the end of the header") from None
    except PropertiesError:
        raise
    except ValueError as exc:
        raise PropertiesError(f"property headers: {exc}") from None
    if off != end:
        raise PropertiesError("content header is longer than its properties")
    return props


def encode_properties(props) -> bytes:
    """Property flags and list for a properties dict (None or {} → no properties).

    A value of the wrong type (possible from a msgpack publisher) is dropped rather than
    stopping the delivery; unknown keys are ignored.
    """
    if not props:
        return b"\x00\x00"
    flags = 0
    pieces = []
    for name, kind, bit in _FLAGS:
        value = props.get(name)
        if value is None:
            continue
        try:
            if kind == "shortstr":
                raw = value.encode("utf-8") if type(value) is str else str(value).encode("utf-8")
                if len(raw) > 255:
                    continue
                piece = _U8.pack(len(raw)) + raw
            elif kind == "octet":
                piece = _U8.pack(value)
            elif kind == "timestamp":
                piece = _U64.pack(int(value))
            else:
                if not isinstance(value, dict):
                    continue
                piece = encode_table(value)
        except (ValueError, TypeError, OverflowError, StructError):
            continue
        flags |= bit
        pieces.append(piece)
    return flags.to_bytes(2, "big") + b"".join(pieces)


def encode_header(body_size: int, props) -> bytes:
    """A content header payload for class basic."""
    return HEADER_PREFIX.pack(BASIC_CLASS, 0, body_size) + encode_properties(props)
