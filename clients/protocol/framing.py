"""Length-prefixed msgpack framing, with no I/O (sans-IO, in the manner of h11).

A frame on the wire is a 4-byte big-endian unsigned length N followed by N bytes that hold
exactly one msgpack object. `FrameDecoder` takes bytes in whatever pieces the network hands
over and gives back whole decoded objects; `encode_frame` does the reverse (and
`encode_frame_parts` too, leaving large bytes values uncopied). Neither knows
what the objects mean: that is `frames.py`.

Speed matters here, since every message crosses this code twice: the decoder parses straight
out of the bytes it was given when it holds no leftover, and only keeps the unfinished tail.
"""

from struct import Struct

import msgpack

from .errors import CorruptFrame, FrameTooLarge

DEFAULT_MAX_FRAME = 16 * 1024 * 1024
LENGTH = Struct(">I")
HEADER_SIZE = LENGTH.size
_unpack_length = LENGTH.unpack_from
_unpackb = msgpack.unpackb


def encode_frame(obj, packer=None) -> bytes:
    """Encode one object as one frame. Pass a reused `msgpack.Packer` on hot paths."""
    body = packer.pack(obj) if packer is not None else msgpack.packb(obj, use_bin_type=True)
    return LENGTH.pack(len(body)) + body


def new_packer() -> msgpack.Packer:
    """A packer with the settings the protocol needs: str as str, bytes as bin."""
    return msgpack.Packer(use_bin_type=True, autoreset=True)


# bytes values at least this long go into encode_frame_parts' output as they are, not copied.
LARGE_BLOB = 16 * 1024


def _bin_header(n: int) -> bytes:
    """The msgpack bin header of an n-byte value (what the packer writes before its bytes)."""
    if n < 0x100:
        return bytes((0xC4, n))
    if n < 0x10000:
        return b"\xc5" + n.to_bytes(2, "big")
    return b"\xc6" + n.to_bytes(4, "big")


def encode_frame_parts(obj, packer, min_blob: int = LARGE_BLOB) -> list:
    """The frame `encode_frame(obj)` makes, as a list of buffers to write one after another.

    Every `bytes` value of at least `min_blob` bytes inside `obj` (in dicts, lists and tuples)
    is one of the buffers, the very object, not a copy; the bytes around it are packed by
    `packer` (autoreset, as `new_packer` makes). A producer's request carries batches of up to
    a megabyte: packing them into a frame, then prefixing the length, copies each twice more.
    The concatenation is byte for byte what `encode_frame` gives (tests/protocol/test_framing.py
    checks it on generated values).
    """
    parts: list = []
    small: list = []   # packed pieces since the last large value

    def walk(o):
        cls = o.__class__
        if cls is bytes:
            if len(o) >= min_blob:
                small.append(_bin_header(len(o)))
                parts.append(b"".join(small))
                small.clear()
                parts.append(o)
                return
        elif cls is dict:
            small.append(packer.pack_map_header(len(o)))
            for k, v in o.items():
                walk(k)
                walk(v)
            return
        elif cls is list or cls is tuple:
            small.append(packer.pack_array_header(len(o)))
            for v in o:
                walk(v)
            return
        small.append(packer.pack(o))

    walk(obj)
    if small:
        parts.append(b"".join(small))
    size = sum(map(len, parts))
    parts[0] = LENGTH.pack(size) + parts[0]
    return parts


def frame_header(body_length: int) -> bytes:
    """The 4 length bytes, for a sender that writes the body itself (for example with sendfile)."""
    return LENGTH.pack(body_length)




class FrameDecoder:
    """Turns a byte stream into decoded frames.

    `feed(data)` returns the list of objects completed by `data` (often empty, often many).
    It raises `FrameTooLarge` as soon as a length prefix over `max_frame` is seen, before the
    body arrives, and `CorruptFrame` for a body that is not one msgpack object. After either,
    the stream has no trustworthy frame boundary left, so the caller closes the connection.
    """

    __slots__ = ("max_frame", "_buf")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME):
        self.max_frame = max_frame
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes held for a frame not yet complete."""
        return len(self._buf)

    def discard(self) -> None:
        """Drop any partial frame (the connection is gone): its memory goes back at once."""
        self._buf = bytearray()

    def feed(self, data) -> list:
        if self._buf:
            self._buf += data
            source = self._buf
        else:
            source = data
        frames = []
        end_of_data = len(source)
        pos = 0
        max_frame = self.max_frame
        append = frames.append
        view = memoryview(source)
        try:
            while end_of_data - pos >= HEADER_SIZE:
                (size,) = _unpack_length(source, pos)
                if size > max_frame:
                    raise FrameTooLarge(size, max_frame)
                end = pos + HEADER_SIZE + size
                if end > end_of_data:
                    break
                # msgpack >= 1.0 defaults: str as str, map keys must be str or bytes.
                append(_unpackb(view[pos + HEADER_SIZE:end]))
                pos = end
            if source is not self._buf and pos < end_of_data:
                # Keep the unfinished tail: one copy, straight from the view (a slice of
                # `source` would copy it once more first; a large fetch reply's next frame
                # often starts in the read that ends this one).
                self._buf += view[pos:]
        except FrameTooLarge:
            raise
        except Exception as exc:  # msgpack raises several types; all mean "not msgpack"
            raise CorruptFrame(f"{type(exc).__name__}: {exc}") from None
        finally:
            view.release()
        if source is self._buf:
            del self._buf[:pos]
        return frames
