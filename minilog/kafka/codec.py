"""Kafka requests and responses as bytes: frames, request headers, bodies, response headers.

Sans-IO, like h11: `KafkaFrameSplitter.feed(data)` returns the whole frames in `data` (a 4-byte
big-endian size, then that many bytes); `parse_request(frame)` reads the request header and
the body into a `KafkaRequest`; `encode_response(request, body)` gives the reply's pieces,
size prefix included. Nothing here knows sockets or what a request means: that is
`minilog/kafka/listener.py` (the connection) and `minilog/kafka/handlers.py` (the APIs).

Request header v1 (api key, version, correlation id, nullable client id) serves classic
versions, v2 (the same plus tagged fields) flexible ones. Response header v0 is the correlation
id, v1 adds tagged fields for flexible versions; ApiVersions always answers with v0 so a
client that does not yet know our versions can read it.

Errors: `KafkaDecodeError` (truncated or garbage) and its subclass `UnsupportedVersionError`.
After either the stream's next frame boundary is still known, but Kafka closes the connection
and clients expect that, so the caller does too — except for ApiVersions at a version we do not
know, which Kafka answers (v0 body, UNSUPPORTED_VERSION, our ranges) so the client can retry.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .errors import UNSUPPORTED_VERSION
from .messages import API_VERSIONS, APIS, Api
from .primitives import KafkaDecodeError, Reader, Writer
from .schema import compile_fields, decode, encode

__all__ = ["KafkaRequest", "KafkaFrameSplitter", "parse_request", "encode_request",
           "encode_response", "decode_response", "api_versions_body", "KafkaDecodeError",
           "UnsupportedVersionError", "FrameTooLargeError"]

_SIZE = struct.Struct(">i")
_HEADER = struct.Struct(">hhi")


class UnsupportedVersionError(KafkaDecodeError):
    """A request for an API or version we do not serve."""


class FrameTooLargeError(KafkaDecodeError):
    """A size prefix above the server's limit (or negative)."""


class KafkaFrameSplitter:
    """Turns a byte stream into whole frames (each a writable buffer, for in-place edits).

    Every byte is copied once, into the frame it belongs to: a frame that arrives whole in one
    read is sliced out of it; a larger one gets a buffer of its announced size as soon as its
    size prefix is in, and the reads that follow fill it (no growing buffer, no second copy;
    large produce requests are where the megabytes per second are won or lost). A reader may
    also receive straight into that buffer: `unfilled()` is the part still to come, `filled(n)`
    says `n` bytes of it arrived.

    A frame of `RECYCLE_MIN` bytes or more that its user is done with may be handed back
    (`recycle`): the next large frame is then received into the same memory, which the machine
    has touched recently (fresh memory costs page faults and zeroing per page), instead of a
    new buffer. One such buffer is kept, and only while large frames follow each other: a
    smaller frame drops it.
    """

    RECYCLE_MIN = 1 << 20

    __slots__ = ("max_frame", "_head", "_frame", "_filled", "_spare")

    def __init__(self, max_frame: int):
        self.max_frame = max_frame
        self._head = b""          # up to 3 bytes of a size prefix not yet complete
        self._frame = None        # the frame being filled: a bytearray, or a view of the spare
        self._filled = 0
        self._spare: bytearray | None = None

    @property
    def buffered(self) -> int:
        return len(self._head) + (self._filled if self._frame is not None else 0)

    def unfilled(self) -> memoryview | None:
        """The part of the frame being filled that has not arrived (None between frames)."""
        if self._frame is None:
            return None
        return memoryview(self._frame)[self._filled:]

    def filled(self, n: int) -> list:
        """`n` bytes were written at the start of `unfilled()`: the frame, if now whole."""
        self._filled += n
        if self._filled < len(self._frame):
            return []
        frame, self._frame = self._frame, None
        return [frame]

    def recycle(self, frame) -> None:
        """`frame` (from this splitter) is no longer referred to: its memory may be reused."""
        if len(frame) < self.RECYCLE_MIN:
            return
        buf = frame.obj if isinstance(frame, memoryview) else frame
        if self._spare is None or len(buf) > len(self._spare):
            self._spare = buf

    def _new_frame(self, size: int):
        spare = self._spare
        if size < self.RECYCLE_MIN:
            self._spare = None
            return bytearray(size)
        if spare is not None and len(spare) >= size:
            self._spare = None   # lent until recycled
            return memoryview(spare)[:size]
        # An eighth more, so that the next batches, a little larger or smaller, fit too.
        return memoryview(bytearray(size + (size >> 3)))[:size]

    def feed(self, data) -> list:
        frames = []
        view = memoryview(data)
        pos, end = 0, len(view)
        while pos < end:
            frame = self._frame
            if frame is not None:   # filling a frame whose size we know
                take = min(len(frame) - self._filled, end - pos)
                frame[self._filled:self._filled + take] = view[pos:pos + take]
                self._filled += take
                pos += take
                if self._filled == len(frame):
                    frames.append(frame)
                    self._frame = None
                continue
            if self._head or end - pos < 4:
                need = 4 - len(self._head)
                self._head += bytes(view[pos:pos + need])
                pos += min(need, end - pos)
                if len(self._head) < 4:
                    break
                (size,) = _SIZE.unpack(self._head)
                self._head = b""
            else:
                (size,) = _SIZE.unpack_from(view, pos)
                pos += 4
            if size < 0 or size > self.max_frame:
                raise FrameTooLargeError(f"frame size {size} is outside 0..{self.max_frame} (--max-frame)")
            if end - pos >= size and size < self.RECYCLE_MIN:
                frames.append(bytearray(view[pos:pos + size]))
                pos += size
                self._spare = None
            else:
                self._frame = self._new_frame(size)
                self._filled = 0
        return frames


@dataclass(slots=True)
class KafkaRequest:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    api: Api | None = None
    body: dict = field(default_factory=dict)

    @property
    def flexible(self) -> bool:
        return self.api is not None and self.api.is_flexible(self.api_version)


_compiled: dict = {}


def compiled(api: Api, version: int, response: bool) -> tuple:
    key = (api.key, version, response)
    c = _compiled.get(key)
    if c is None:
        c = _compiled[key] = compile_fields(api.response if response else api.request, version,
                                            api.is_flexible(version))
    return c


def parse_request(frame) -> KafkaRequest:
    """Header and body of one request frame (without its size prefix)."""
    r = Reader(frame)
    api_key = r.int16("request api key")
    version = r.int16("request api version")
    correlation_id = r.int32("request correlation id")
    client_id = r.string(False, True, "request client id")
    api = APIS.get(api_key)
    req = KafkaRequest(api_key, version, correlation_id, client_id, api)
    if api is None:
        raise UnsupportedVersionError(f"unknown API key {api_key} (correlation id {correlation_id})")
    if not api.min_version <= version <= api.max_version:
        if api is API_VERSIONS:
            return req   # answered with our ranges; the body is not read (it may be a newer layout)
        raise UnsupportedVersionError(f"{api.name} v{version} is not served; versions "
                                      f"{api.min_version}-{api.max_version} are")
    flexible = api.is_flexible(version)
    if flexible:
        r.skip_tagged_fields("request header tagged fields")
    try:
        # Bytes after the body are ignored, as Kafka ignores them: librdkafka's "all topics"
        # Metadata v9 request carries three.
        req.body = decode(frame, compiled(api, version, False), flexible, r.pos, exact=False)
    except KafkaDecodeError as exc:
        raise KafkaDecodeError(f"{api.name} v{version} request: {exc}") from None
    return req


def encode_request(api: Api, version: int, correlation_id: int, client_id: str | None, body: dict) -> bytes:
    """A whole request frame, size prefix included (for tests and the bench's probes)."""
    flexible = api.is_flexible(version)
    w = Writer()
    w.int16(api.key)
    w.int16(version)
    w.int32(correlation_id)
    w.string(client_id, False)
    if flexible:
        w.empty_tagged_fields()
    encode(compiled(api, version, False), body, flexible, w)
    return _SIZE.pack(len(w)) + b"".join(w.pieces())


def encode_response(req: KafkaRequest, body: dict, version: int | None = None) -> list:
    """The reply's pieces, size prefix first: bytes, and any spliced record slices."""
    api = req.api
    version = req.api_version if version is None else version
    flexible = api.is_flexible(version)
    w = Writer()
    w.int32(req.correlation_id)
    if flexible and api is not API_VERSIONS:
        w.empty_tagged_fields()
    encode(compiled(api, version, True), body, flexible, w)
    return [_SIZE.pack(len(w))] + w.pieces()


def decode_response(api: Api, version: int, frame) -> tuple[int, dict]:
    """(correlation id, body) of a response frame without its size prefix (tests, probes)."""
    r = Reader(frame)
    correlation_id = r.int32("response correlation id")
    flexible = api.is_flexible(version)
    if flexible and api is not API_VERSIONS:
        r.skip_tagged_fields("response header tagged fields")
    return correlation_id, decode(frame, compiled(api, version, True), flexible, r.pos)


def api_versions_body(error_code: int = 0) -> dict:
    """Our ranges, as ApiVersions reports them."""
    return {"error_code": error_code,
            "api_keys": [{"api_key": a.key, "min_version": a.min_version, "max_version": a.max_version}
                         for a in sorted(APIS.values(), key=lambda a: a.key)]}


def unsupported_api_versions_reply(req: KafkaRequest) -> list:
    """Kafka's answer to ApiVersions at an unknown version: a v0 body with our ranges."""
    return encode_response(req, api_versions_body(UNSUPPORTED_VERSION), version=0)
