"""AMQP field tables and arrays, with every value type as RabbitMQ reads and writes them.

RabbitMQ's errata differ from the 0-9-1 text for a few type octets; we follow RabbitMQ (and
pika, kombu and aio-pika do too):

    t bool        b int8      B uint8     s int16     u uint16    I int32     i uint32
    l int64       f float32   d float64   D decimal   S long string          A array
    T timestamp   F table     V void      x byte array

Decoding gives the plain values the broker core stores and the msgpack protocol carries
(serverbase/schema.py `check_table`): ints, floats, str for a long string that is valid UTF-8
(bytes otherwise, as pika does), bytes for `x`, dict, list, None; a `T` timestamp becomes its
seconds (an int) and a `D` decimal its text ("1.25"), since neither has a msgpack type. Encoding
picks the type from the value as pika does: bool `t`, int `I` when it fits in 32 bits else `l`,
float `d`, Decimal `D`, str `S`, bytes `x`, dict `F`, list/tuple `A`, None `V`, datetime `T`.

Errors are `ValueError` with a sentence; the method decoder turns them into 502 SYNTAX_ERROR.
Nesting is bounded (`MAX_DEPTH`) so a hostile table cannot exhaust the stack.
"""

import calendar
import datetime
import decimal
from struct import Struct

MAX_DEPTH = 32

_U8 = Struct(">B")
_I8 = Struct(">b")
_I16 = Struct(">h")
_U16 = Struct(">H")
_I32 = Struct(">i")
_U32 = Struct(">I")
_I64 = Struct(">q")
_U64 = Struct(">Q")
_F32 = Struct(">f")
_F64 = Struct(">d")
_DECIMAL = Struct(">BI")

_FIXED_TYPES = {
    ord("b"): _I8, ord("B"): _U8, ord("s"): _I16, ord("u"): _U16, ord("I"): _I32, ord("i"): _U32,
    ord("l"): _I64, ord("L"): _U64, ord("f"): _F32, ord("d"): _F64,
}


def decode_table(buf, off: int, end: int, depth: int = 0):
    """A table (uint32 byte length, then name/type/value entries) → (dict, offset after it)."""
    if depth > MAX_DEPTH:
        raise ValueError(f"field tables nested deeper than {MAX_DEPTH}")
    (size,) = _U32.unpack_from(buf, off)
    off += 4
    stop = off + size
    if stop > end:
        raise ValueError("field table runs past the end of the frame")
    table = {}
    while off < stop:
        n = buf[off]
        key_end = off + 1 + n
        if key_end > stop:
            raise ValueError("field name runs past the end of its table")
        try:
            key = str(buf[off + 1:key_end], "utf-8")
        except UnicodeDecodeError:
            raise ValueError("field name is not valid UTF-8") from None
        table[key], off = decode_value(buf, key_end, stop, depth)
    if off != stop:
        raise ValueError("field table length does not match its entries")
    return table, off


def decode_array(buf, off: int, end: int, depth: int = 0):
    if depth > MAX_DEPTH:
        raise ValueError(f"field arrays nested deeper than {MAX_DEPTH}")
    (size,) = _U32.unpack_from(buf, off)
    off += 4
    stop = off + size
    if stop > end:
        raise ValueError("field array runs past the end of the frame")
    items = []
    while off < stop:
        value, off = decode_value(buf, off, stop, depth)
        items.append(value)
    if off != stop:
        raise ValueError("field array length does not match its values")
    return items, off


def decode_value(buf, off: int, end: int, depth: int = 0):
    """One type octet and its value → (value, offset after it)."""
    if off >= end:
        raise ValueError("field value missing at the end of its table")
    kind = buf[off]
    off += 1
    fixed = _FIXED_TYPES.get(kind)
    if fixed is not None:
        if off + fixed.size > end:
            raise ValueError(f"field value of type {chr(kind)!r} runs past the end of its table")
        return fixed.unpack_from(buf, off)[0], off + fixed.size
    if kind == 0x53 or kind == 0x78:          # S long string, x byte array
        (n,) = _U32.unpack_from(buf, off)
        stop = off + 4 + n
        if stop > end:
            raise ValueError("string field runs past the end of its table")
        raw = bytes(buf[off + 4:stop])
        if kind == 0x53:
            try:
                return raw.decode("utf-8"), stop
            except UnicodeDecodeError:
                return raw, stop
        return raw, stop
    if kind == 0x74:                          # t bool
        if off >= end:
            raise ValueError("bool field runs past the end of its table")
        return buf[off] != 0, off + 1
    if kind == 0x46:                          # F table
        return decode_table(buf, off, end, depth + 1)
    if kind == 0x41:                          # A array
        return decode_array(buf, off, end, depth + 1)
    if kind == 0x54:                          # T timestamp
        if off + 8 > end:
            raise ValueError("timestamp field runs past the end of its table")
        return _U64.unpack_from(buf, off)[0], off + 8
    if kind == 0x44:                          # D decimal: scale octet, unsigned 32-bit value
        if off + 5 > end:
            raise ValueError("decimal field runs past the end of its table")
        scale, value = _DECIMAL.unpack_from(buf, off)
        return str(decimal.Decimal(value).scaleb(-scale)), off + 5
    if kind == 0x56:                          # V void
        return None, off
    raise ValueError(f"unknown field type {chr(kind)!r} (0x{kind:02x})")


# ---- encoding -----------------------------------------------------------------------------------
def encode_table(table) -> bytes:
    if not table:
        return b"\x00\x00\x00\x00"
    pieces = []
    _encode_table_into(table, pieces, 0)
    body = b"".join(pieces)
    return _U32.pack(len(body)) + body


def _encode_table_into(table, pieces, depth):
    if depth > MAX_DEPTH:
        raise ValueError(f"field tables nested deeper than {MAX_DEPTH}")
    for key, value in table.items():
        raw = key.encode("utf-8") if type(key) is str else bytes(key)
        if len(raw) > 255:
            raise ValueError(f"field name of {len(raw)} bytes (at most 255)")
        pieces.append(_U8.pack(len(raw)))
        pieces.append(raw)
        _encode_value_into(value, pieces, depth)


def _encode_value_into(value, pieces, depth):
    t = type(value)
    if t is str:
        raw = value.encode("utf-8")
        pieces.append(b"S" + _U32.pack(len(raw)))
        pieces.append(raw)
    elif t is bool:
        pieces.append(b"t\x01" if value else b"t\x00")
    elif isinstance(value, int):
        if -(1 << 31) <= value < (1 << 31):
            pieces.append(b"I" + _I32.pack(value))
        elif -(1 << 63) <= value < (1 << 63):
            pieces.append(b"l" + _I64.pack(value))
        else:
            raise ValueError(f"integer {value} does not fit in 64 bits")
    elif t is float:
        pieces.append(b"d" + _F64.pack(value))
    elif t is bytes or t is bytearray or t is memoryview:
        pieces.append(b"x" + _U32.pack(len(value)))
        pieces.append(bytes(value))
    elif value is None:
        pieces.append(b"V")
    elif isinstance(value, dict):
        sub = []
        _encode_table_into(value, sub, depth + 1)
        body = b"".join(sub)
        pieces.append(b"F" + _U32.pack(len(body)))
        pieces.append(body)
    elif isinstance(value, (list, tuple)):
        if depth > MAX_DEPTH:
            raise ValueError(f"field arrays nested deeper than {MAX_DEPTH}")
        sub = []
        for item in value:
            _encode_value_into(item, sub, depth + 1)
        body = b"".join(sub)
        pieces.append(b"A" + _U32.pack(len(body)))
        pieces.append(body)
    elif isinstance(value, decimal.Decimal):
        sign, digits, exponent = value.as_tuple()
        scale = -exponent if type(exponent) is int and exponent < 0 else 0
        unscaled = int(value.scaleb(scale))
        if sign or not 0 <= scale <= 255 or not 0 <= unscaled < (1 << 32):
            raise ValueError(f"decimal {value} does not fit AMQP's unsigned 32-bit decimal")
        pieces.append(b"D" + _DECIMAL.pack(scale, unscaled))
    elif isinstance(value, datetime.datetime):
        pieces.append(b"T" + _U64.pack(calendar.timegm(value.utctimetuple())))
    else:
        raise ValueError(f"a field value of type {t.__name__} cannot be sent in an AMQP table")
