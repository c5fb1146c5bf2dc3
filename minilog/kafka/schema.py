"""One generic encoder and decoder for Kafka messages, driven by field tables.

A message is a list of `F` fields, each with a type, the versions it exists in and the
versions in which it may be null, written in the notation of Kafka's message definitions
("0+", "3-7"). `Array(...)` holds a primitive type or a `Struct` of more fields.
`compile_fields(fields, version, flexible)` keeps the fields of one version, once, and
`decode`/`encode` walk the result: dicts with snake_case keys in, dicts out.

Flexible versions use compact lengths and end every struct with tagged fields. We read tagged
fields and drop them (none of the ones Kafka defines for the versions we serve changes what we
do) and write none, which every client accepts: a tagged field is optional by definition.

`records` fields decode to a memoryview of the frame (no copy). On encode a `records` value may
be bytes, or a list of pieces (bytes and objects with a `length`, such as
`minilog.storage.FileSlice`) that `Writer.splice` leaves uncopied for the sender.
"""

from __future__ import annotations

from .primitives import KafkaDecodeError, Reader, Writer

__all__ = ["F", "Array", "Struct", "compile_fields", "decode", "encode", "KafkaDecodeError"]

_PRIMITIVES = {"int8", "int16", "int32", "int64", "uint32", "float64", "bool", "string", "bytes",
               "records", "uuid"}
_ZERO = {"int8": 0, "int16": 0, "int32": 0, "int64": 0, "uint32": 0, "float64": 0.0, "bool": False,
         "string": "", "bytes": b"", "records": None, "uuid": None}


def _versions(spec: str) -> tuple[int, int]:
    """"3+" -> (3, 32767); "0-7" -> (0, 7); "2" -> (2, 2); "none" -> (1, 0) (never)."""
    if spec == "none":
        return 1, 0
    if spec.endswith("+"):
        return int(spec[:-1]), 0x7FFF
    lo, _, hi = spec.partition("-")
    return int(lo), int(hi or lo)


class Struct:
    __slots__ = ("fields",)

    def __init__(self, *fields: "F"):
        self.fields = fields


class Array:
    __slots__ = ("elem",)

    def __init__(self, elem):
        self.elem = elem   # a primitive type name or a Struct


class F:
    """One field: name, type (primitive name, `Array` or `Struct`), versions, nullable versions."""

    __slots__ = ("name", "type", "versions", "nullable", "default")

    def __init__(self, name: str, type_, versions: str = "0+", nullable: str = "none", default=None):
        if isinstance(type_, str) and type_ not in _PRIMITIVES:
            raise ValueError(f"unknown type {type_!r} for field {name}")
        self.name = name
        self.type = type_
        self.versions = _versions(versions)
        self.nullable = _versions(nullable)
        self.default = default


# A compiled field: (name, kind, nullable, sub, default) with kind a primitive name, "array"
# or "struct"; sub is the element kind or the compiled struct.
def compile_fields(fields, version: int, flexible: bool) -> tuple:
    out = []
    for f in fields:
        lo, hi = f.versions
        if not lo <= version <= hi:
            continue
        nlo, nhi = f.nullable
        nullable = nlo <= version <= nhi
        t = f.type
        if isinstance(t, Array):
            elem = t.elem
            sub = compile_fields(elem.fields, version, flexible) if isinstance(elem, Struct) else elem
            out.append((f.name, "array", nullable, sub, f.default))
        elif isinstance(t, Struct):
            out.append((f.name, "struct", nullable, compile_fields(t.fields, version, flexible), f.default))
        else:
            if f.default is not None:
                default = f.default
            elif nullable and t in ("string", "bytes"):
                default = None
            else:
                default = _ZERO[t]
            out.append((f.name, t, nullable, None, default))
    return tuple(out)


# ---- decoding ---------------------------------------------------------------------------
def _read_value(r: Reader, kind: str, nullable: bool, flexible: bool, what: str):
    if kind == "int32":
        return r.int32(what)
    if kind == "int16":
        return r.int16(what)
    if kind == "int64":
        return r.int64(what)
    if kind == "string":
        return r.string(flexible, nullable, what)
    if kind == "int8":
        return r.int8(what)
    if kind == "bool":
        return r.boolean(what)
    if kind in ("bytes", "records"):
        return r.bytes_(flexible, nullable or kind == "records", what)
    if kind == "uuid":
        return r.uuid(what)
    if kind == "uint32":
        return r.uint32(what)
    if kind == "float64":
        return r.float64(what)
    raise AssertionError(kind)


def decode_struct(r: Reader, compiled: tuple, flexible: bool, path: str = "") -> dict:
    out = {}
    for name, kind, nullable, sub, _ in compiled:
        what = path + name
        if kind == "array":
            n = r.array_length(flexible, nullable, what)
            if n < 0:
                out[name] = None
            elif isinstance(sub, tuple):
                out[name] = [decode_struct(r, sub, flexible, f"{what}[{i}].") for i in range(n)]
            else:
                out[name] = [_read_value(r, sub, False, flexible, what) for _ in range(n)]
        elif kind == "struct":
            out[name] = decode_struct(r, sub, flexible, what + ".")
        else:
            out[name] = _read_value(r, kind, nullable, flexible, what)
    if flexible:
        r.skip_tagged_fields(path + "tagged fields")
    return out


def decode(buf, compiled: tuple, flexible: bool, pos: int = 0, exact: bool = True) -> dict:
    """Decode one message body from `buf[pos:]`; with `exact`, trailing bytes are an error."""
    r = Reader(buf, pos)
    out = decode_struct(r, compiled, flexible)
    if exact and r.remaining:
        raise KafkaDecodeError(f"{r.remaining} unexpected bytes after the message")
    return out


# ---- encoding ---------------------------------------------------------------------------
def _write_value(w: Writer, kind: str, v, flexible: bool, name: str) -> None:
    if kind == "int32":
        w.int32(v)
    elif kind == "int16":
        w.int16(v)
    elif kind == "int64":
        w.int64(v)
    elif kind == "string":
        w.string(v, flexible)
    elif kind == "int8":
        w.int8(v)
    elif kind == "bool":
        w.boolean(v)
    elif kind == "bytes":
        w.bytes_(v, flexible)
    elif kind == "records":
        if v is None or isinstance(v, (bytes, bytearray, memoryview)):
            w.bytes_(v, flexible)
        else:   # pieces: bytes and slices, spliced uncopied
            total = sum(len(p) if isinstance(p, (bytes, bytearray, memoryview)) else p.length for p in v)
            w.array_length(total, flexible)   # same length prefix as bytes
            for p in v:
                if isinstance(p, (bytes, bytearray, memoryview)):
                    w.buf += p
                else:
                    w.splice(p, p.length)
    elif kind == "uuid":
        w.uuid(v)
    elif kind == "uint32":
        w.uint32(v)
    elif kind == "float64":
        w.float64(v)
    else:
        raise AssertionError(kind)


def encode_struct(w: Writer, compiled: tuple, value: dict, flexible: bool) -> None:
    get = value.get
    for name, kind, nullable, sub, default in compiled:
        v = get(name, default)
        if kind == "array":
            if v is None:
                if not nullable:
                    v = ()
                else:
                    w.array_length(-1, flexible)
                    continue
            w.array_length(len(v), flexible)
            if isinstance(sub, tuple):
                for item in v:
                    encode_struct(w, sub, item, flexible)
            else:
                for item in v:
                    _write_value(w, sub, item, flexible, name)
        elif kind == "struct":
            encode_struct(w, sub, v or {}, flexible)
        else:
            if v is None and not nullable and kind not in ("records", "uuid"):
                raise ValueError(f"field {name} may not be null in this version")
            _write_value(w, kind, v, flexible, name)
    if flexible:
        w.empty_tagged_fields()


def encode(compiled: tuple, value: dict, flexible: bool, w: Writer | None = None) -> Writer:
    w = w or Writer()
    encode_struct(w, compiled, value, flexible)
    return w
