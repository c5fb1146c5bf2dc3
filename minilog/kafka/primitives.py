"""The Kafka protocol's primitive types: reading them from a buffer and writing them to one.

Everything here is bytes in, values out (and back), with no sockets: `Reader` walks a buffer and
raises `KafkaDecodeError` naming what was cut short or out of range; `Writer` appends to a
bytearray and can splice in pieces it does not copy (file slices for a fetch reply). The
schema-driven codec (`minilog/kafka/schema.py`) is built on these two.

Integers are big-endian. Flexible versions (KIP-482) add unsigned varints for lengths
("compact" strings, bytes and arrays store length + 1, so 0 means null) and tagged fields.
"""

from __future__ import annotations

import struct
import uuid as _uuid

_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_U32 = struct.Struct(">I")
_F64 = struct.Struct(">d")

# Bounds on what a peer can make us allocate or walk: any one string, array or byte field.
MAX_ARRAY_LENGTH = 1_000_000
MAX_STRING_LENGTH = 0x7FFF
MAX_VARINT_BYTES = 5
MAX_TAGGED_FIELDS = 1000


class KafkaDecodeError(ValueError):
    """A request or response that does not parse: truncated, out of range or malformed."""


class Reader:
    """A cursor over one frame's bytes."""

    __slots__ = ("buf", "pos", "end")

    def __init__(self, buf, pos: int = 0, end: int | None = None):
        self.buf = memoryview(buf) if not isinstance(buf, memoryview) else buf
        self.pos = pos
        self.end = len(self.buf) if end is None else end

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def _take(self, n: int, what: str) -> int:
        pos = self.pos
        if n < 0 or pos + n > self.end:
            raise KafkaDecodeError(f"{what}: needs {n} bytes at byte {pos}, only {self.end - pos} left")
        self.pos = pos + n
        return pos

    def int8(self, what: str = "int8") -> int:
        return _I8.unpack_from(self.buf, self._take(1, what))[0]

    def int16(self, what: str = "int16") -> int:
        return _I16.unpack_from(self.buf, self._take(2, what))[0]

    def int32(self, what: str = "int32") -> int:
        return _I32.unpack_from(self.buf, self._take(4, what))[0]

    def int64(self, what: str = "int64") -> int:
        return _I64.unpack_from(self.buf, self._take(8, what))[0]

    def uint32(self, what: str = "uint32") -> int:
        return _U32.unpack_from(self.buf, self._take(4, what))[0]

    def float64(self, what: str = "float64") -> float:
        return _F64.unpack_from(self.buf, self._take(8, what))[0]

    def boolean(self, what: str = "bool") -> bool:
        b = self.buf[self._take(1, what)]
        if b > 1:
            raise KafkaDecodeError(f"{what}: a boolean must be 0 or 1, got {b}")
        return b == 1

    def uuid(self, what: str = "uuid") -> _uuid.UUID:
        pos = self._take(16, what)
        return _uuid.UUID(bytes=bytes(self.buf[pos:pos + 16]))

    def uvarint(self, what: str = "varint") -> int:
        value = shift = 0
        for i in range(MAX_VARINT_BYTES):
            b = self.buf[self._take(1, what)]
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
        raise KafkaDecodeError(f"{what}: an unsigned varint longer than {MAX_VARINT_BYTES} bytes")

    def raw(self, n: int, what: str) -> memoryview:
        pos = self._take(n, what)
        return self.buf[pos:pos + n]

    # ---- length-prefixed types: classic (int16/int32 length, -1 null) and compact ---------
    def _length(self, compact: bool, short: bool, what: str) -> int:
        """The length of the value that follows, -1 for null."""
        if compact:
            return self.uvarint(what) - 1
        return self.int16(what) if short else self.int32(what)

    def string(self, compact: bool, nullable: bool, what: str = "string") -> str | None:
        n = self._length(compact, True, what)
        if n < 0:
            if n == -1 and nullable:
                return None
            raise KafkaDecodeError(f"{what}: null or negative length {n} where a string is required")
        if n > MAX_STRING_LENGTH:
            raise KafkaDecodeError(f"{what}: string of {n} bytes exceeds {MAX_STRING_LENGTH}")
        try:
            return str(self.raw(n, what), "utf-8")
        except UnicodeDecodeError as exc:
            raise KafkaDecodeError(f"{what}: not UTF-8 ({exc.reason})") from None

    def bytes_(self, compact: bool, nullable: bool, what: str = "bytes") -> memoryview | None:
        n = self._length(compact, False, what)
        if n < 0:
            if n == -1 and nullable:
                return None
            raise KafkaDecodeError(f"{what}: null or negative length {n} where bytes are required")
        return self.raw(n, what)

    def array_length(self, compact: bool, nullable: bool, what: str = "array") -> int:
        """The element count of an array, -1 for a null one."""
        n = self._length(compact, False, what)
        if n < 0:
            if n == -1 and nullable:
                return -1
            raise KafkaDecodeError(f"{what}: null or negative array length {n} where an array is required")
        # Each element takes at least one byte: a count beyond what is left is a lie.
        if n > MAX_ARRAY_LENGTH or n > self.remaining:
            raise KafkaDecodeError(f"{what}: array of {n} elements in {self.remaining} remaining bytes")
        return n

    def skip_tagged_fields(self, what: str = "tagged fields") -> None:
        """Tagged fields we do not use: check their framing and step over them."""
        count = self.uvarint(what)
        if count > MAX_TAGGED_FIELDS:
            raise KafkaDecodeError(f"{what}: {count} tagged fields")
        last = -1
        for _ in range(count):
            tag = self.uvarint(what)
            if tag <= last:
                raise KafkaDecodeError(f"{what}: tags must strictly increase ({last} then {tag})")
            last = tag
            self._take(self.uvarint(what), what)


class Writer:
    """Appends encoded values; `pieces()` gives the result as bytes and spliced-in pieces."""

    __slots__ = ("buf", "_pieces", "_done")

    def __init__(self):
        self.buf = bytearray()
        self._pieces: list = []
        self._done = 0   # bytes already moved to _pieces

    def __len__(self) -> int:
        return self._done + len(self.buf)

    def int8(self, v: int) -> None:
        self.buf += _I8.pack(v)

    def int16(self, v: int) -> None:
        self.buf += _I16.pack(v)

    def int32(self, v: int) -> None:
        self.buf += _I32.pack(v)

    def int64(self, v: int) -> None:
        self.buf += _I64.pack(v)

    def uint32(self, v: int) -> None:
        self.buf += _U32.pack(v)

    def float64(self, v: float) -> None:
        self.buf += _F64.pack(v)

    def boolean(self, v: bool) -> None:
        self.buf.append(1 if v else 0)

    def uuid(self, v) -> None:
        self.buf += (v.bytes if isinstance(v, _uuid.UUID) else bytes(16) if v is None else bytes(v))

    def uvarint(self, v: int) -> None:
        while v >= 0x80:
            self.buf.append((v & 0x7F) | 0x80)
            v >>= 7
        self.buf.append(v)

    def _length(self, n: int, compact: bool, short: bool) -> None:
        if compact:
            self.uvarint(n + 1)
        elif short:
            self.int16(n)
        else:
            self.int32(n)

    def string(self, v: str | None, compact: bool) -> None:
        if v is None:
            self._length(-1, compact, True)
            return
        data = v.encode()
        self._length(len(data), compact, True)
        self.buf += data

    def bytes_(self, v, compact: bool) -> None:
        if v is None:
            self._length(-1, compact, False)
            return
        self._length(len(v), compact, False)
        self.buf += v

    def array_length(self, n: int, compact: bool) -> None:
        self._length(n, compact, False)

    def empty_tagged_fields(self) -> None:
        self.buf.append(0)

    def splice(self, piece, length: int) -> None:
        """Put `piece` (anything with a length the sender knows how to send) here, uncopied."""
        if self.buf:
            self._pieces.append(bytes(self.buf))
            self._done += len(self.buf)
            self.buf = bytearray()
        self._pieces.append(piece)
        self._done += length

    def pieces(self) -> list:
        """The encoded bytes in order: `bytes` and spliced pieces."""
        out = list(self._pieces)
        if self.buf:
            out.append(bytes(self.buf))
        return out
