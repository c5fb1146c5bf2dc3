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

    Every `bytes` or `bytearray` value (msgpack bin) of at least `min_blob` bytes inside `obj`
    (in dicts, lists and tuples) is one of the buffers, the very object, not a copy; the bytes around it are packed by
    `packer` (autoreset, as `new_packer` makes). A producer's request carries batches of up to
    a megabyte: packing them into a frame, then prefixing the length, copies each twice more.
    The concatenation is byte for byte what `encode_frame` gives (tests/protocol/test_framing.py
    checks it on generated values).
    """
    parts: list = []
    small: list = []   # packed pieces since the last large value

    def walk(o):
        cls = o.__class__
        if cls is bytes or cls is bytearray:
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




def _decode_frames(view, pos: int, end_of_data: int, max_frame: int, append) -> int:
    """Decode the whole frames in `view[pos:end_of_data]`, passing each object to `append`;
    returns where the first unfinished frame starts. Raises FrameTooLarge for a length over
    `max_frame`, and whatever msgpack raises for a body that is not one object."""
    while end_of_data - pos >= HEADER_SIZE:
        (size,) = _unpack_length(view, pos)
        if size > max_frame:
            raise FrameTooLarge(size, max_frame)
        end = pos + HEADER_SIZE + size
        if end > end_of_data:
            break
        # msgpack >= 1.0 defaults: str as str, map keys must be str or bytes.
        append(_unpackb(view[pos + HEADER_SIZE:end]))
        pos = end
    return pos


NOT_ONE_FRAME = object()


def decode_one_frame(data, max_frame: int):
    """The object of `data` when `data` holds exactly one whole frame of at most `max_frame`
    bytes (what most reads of a request-reply connection hold), else NOT_ONE_FRAME: then
    `FrameDecoder.feed` takes the bytes and raises, or keeps the tail, as always. Skips the
    decoder's bookkeeping (a list, a view, the leftover) on the common read."""
    if len(data) < HEADER_SIZE:
        return NOT_ONE_FRAME
    (size,) = _unpack_length(data, 0)
    if size != len(data) - HEADER_SIZE or size > max_frame:
        return NOT_ONE_FRAME
    try:
        return _unpackb(data[HEADER_SIZE:])
    except Exception:  # not msgpack: feed() says so with its own error
        return NOT_ONE_FRAME


def decode_whole_frames(data, max_frame: int):
    """(the objects of the whole frames `data` starts with, where the rest begins) for bytes
    that start a frame (nothing held before them); None when a length is over `max_frame` or a
    body is not msgpack: then `FrameDecoder.feed` takes `data` and raises its error, as
    always. What a client that reads into a fresh bytes object routes at once (a produce reply,
    two or three when the server is behind: `LogConnection.receive_replies`); only the rest,
    part of a frame, need go to a decoder."""
    frames = []
    try:
        pos = _decode_frames(data, 0, len(data), max_frame, frames.append)
    except Exception:  # FrameTooLarge, or not msgpack: feed() raises it, as for any read
        return None
    return frames, pos


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
            pos = _decode_frames(view, pos, end_of_data, max_frame, append)
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


class BufferedFrameDecoder:
    """A FrameDecoder that the caller receives into: `get_buffer()` gives a writable memoryview
    of free space in one buffer kept for the connection's life, the caller receives into it
    (`sock.recv_into`), and `buffer_updated(n)` returns the frames those `n` bytes completed,
    as asyncio's `BufferedProtocol` does.

    Why: a consumer replaying a log receives a fetch reply of about a MiB per partition many
    times a second. Receiving with `recv(size)` allocates a fresh object per read, and a
    growing bytearray per frame, and on this kind of machine memory the process has not touched
    lately costs a page fault per 4 KiB (allocations of a MiB are mmap'd and given back on
    free, so every read pays them again). One buffer, grown to the largest frame seen (never
    past `max_frame`), is faulted in once. A frame that does not fit where it starts is moved
    to the buffer's front; nothing decoded refers to the buffer (msgpack copies what it
    returns), so it is reused at once. `feed(data)` still works (it copies `data` in)."""

    __slots__ = ("max_frame", "_buf", "_view", "_start", "_end")

    INITIAL_SIZE = 1 << 20

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME):
        self.max_frame = max_frame
        self._buf = bytearray(self.INITIAL_SIZE)
        self._view = memoryview(self._buf)
        self._start = 0   # first byte not yet decoded
        self._end = 0     # end of the bytes received

    @property
    def buffered(self) -> int:
        """Bytes held for a frame not yet complete."""
        return self._end - self._start

    def discard(self) -> None:
        """Drop any partial frame (the connection is gone)."""
        self._start = self._end = 0

    def get_buffer(self) -> memoryview:
        """Free space to receive into: at least the rest of a frame whose length has arrived,
        and never empty. Drop the view before the next call (the buffer may be resized)."""
        start, end = self._start, self._end
        need = HEADER_SIZE
        if end - start >= HEADER_SIZE:
            (size,) = _unpack_length(self._view, start)
            if size > self.max_frame:
                raise FrameTooLarge(size, self.max_frame)
            need = HEADER_SIZE + size
        capacity = len(self._buf)
        if start + need > capacity or capacity - end < 4096:
            # Move the unfinished frame to the front; grow the buffer if it cannot hold it.
            held = end - start
            if held:
                self._view[:held] = self._view[start:end]
            self._start, self._end = 0, held
            if need > capacity:
                self._view.release()
                self._buf.extend(bytes(need - capacity))
                self._view = memoryview(self._buf)
            end = held
        return self._view[end:]

    def buffer_updated(self, nbytes: int) -> list:
        """Decode the frames that `nbytes` more bytes, received into `get_buffer()`, complete."""
        end = self._end + nbytes
        self._end = end
        frames = []
        try:
            pos = _decode_frames(self._view, self._start, end, self.max_frame, frames.append)
        except FrameTooLarge:
            raise
        except Exception as exc:  # msgpack raises several types; all mean "not msgpack"
            raise CorruptFrame(f"{type(exc).__name__}: {exc}") from None
        if pos == end:
            self._start = self._end = 0
        else:
            self._start = pos
        return frames

    def feed(self, data) -> list:
        frames = []
        data = memoryview(data).cast("B")
        while data:
            buf = self.get_buffer()
            n = min(len(buf), len(data))
            buf[:n] = data[:n]
            buf.release()
            data = data[n:]
            frames += self.buffer_updated(n)
        return frames
