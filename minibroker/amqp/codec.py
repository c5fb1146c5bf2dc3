"""AMQP 0-9-1 framing with no I/O: bytes in, commands out; commands in, bytes out.

A frame is type (octet), channel (short), payload size (long), payload, frame-end 0xCE. A
*command* is a method frame, plus for content methods (basic.publish, deliver, get-ok, return)
a content header frame and body frames up to the size the header announced.

`CommandReader.feed(data)` takes bytes as the network hands them over and returns the list of
whole commands they complete, each `(channel, method_args, properties, body)` (properties and
body are None for methods without content). It parses a whole read in one pass with
precompiled structs and keeps only the unfinished tail. Frames of different channels may
interleave, as the spec allows; a channel's content frames must follow its method.

Errors (the documented codes, docs/amqp.md):
- a wrong protocol header raises `BadProtocolHeader` (answer `PROTOCOL_HEADER`, then close);
- a broken stream raises `AMQPFrameError`: 501 FRAME_ERROR (bad frame end, oversized frame,
  unknown frame type, heartbeat off channel 0, body longer than announced), 502 SYNTAX_ERROR
  (malformed arguments or properties), 503 COMMAND_INVALID (unknown class or method), 505
  UNEXPECTED_FRAME (content frames out of order). The connection closes with that code.
- a message over `max_body` is not a broken stream: the command is `(channel, AMQPError(406),
  None, None)`; its remaining body frames are skipped and the caller closes the channel.
- bodies announced and not yet complete, summed over the connection's channels, are bounded
  (`max_in_flight`, 2 × max_body): beyond it, 506 RESOURCE_ERROR closes the connection, so one
  client cannot make the server hold a half-sent body on each of its 2047 channels.
"""

from struct import Struct

from .properties import HEADER, PropertiesError, decode_properties, encode_header, encode_properties
from .spec import (
    COMMAND_INVALID, FRAME_BODY, FRAME_END, FRAME_ERROR, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD,
    METHODS, PRECONDITION_FAILED, PROTOCOL_HEADER, RESOURCE_ERROR, SYNTAX_ERROR, UNEXPECTED_FRAME, AMQPError,
    AMQPFrameError,
)

FRAME = Struct(">BHI")
_CLASS_METHOD = Struct(">HH")
PUBLISH = METHODS[(60, 40)]
PUBLISH_CACHE_SIZE = 256
PROPERTIES_CACHE_SIZE = 256
PROPERTIES_CACHE_MAX_BYTES = 512      # unique ids, timestamps: most such headers are not worth keeping
HEARTBEAT_FRAME = FRAME.pack(FRAME_HEARTBEAT, 0, 0) + b"\xce"
_END = b"\xce"
_pack_frame = FRAME.pack


class BadProtocolHeader(Exception):
    """The peer did not open with AMQP 0-9-1's header."""


class _Content:
    """A content command being assembled on one channel."""

    __slots__ = ("method", "properties", "size", "chunks", "received", "refused")

    def __init__(self, method):
        self.method = method
        self.properties = None
        self.size = -1              # -1 until the header frame arrives
        self.chunks = []
        self.received = 0
        self.refused = False        # over max_body: skip its body frames


class CommandReader:
    """Sans-IO reader of a client's byte stream (the server side of a connection)."""

    def __init__(self, frame_max: int, max_body: int, greeted: bool = False):
        self.frame_max = frame_max      # largest whole frame accepted, header and end included
        self.max_body = max_body
        self._greeted = greeted         # True to read a server's stream (no protocol header)
        self._tail = b""
        self._content: dict[int, _Content] = {}
        self._publish_cache: dict = {}
        self._properties_cache: dict = {}
        self.max_in_flight = 2 * max_body
        self._in_flight = 0             # announced body bytes of the contents being assembled

    @property
    def buffered(self) -> int:
        return len(self._tail)

    def feed(self, data) -> list:
        if self._tail:
            data = self._tail + data
            self._tail = b""
        pos = 0
        if not self._greeted:
            if len(data) < 8:
                if data != PROTOCOL_HEADER[:len(data)]:
                    raise BadProtocolHeader(bytes(data))
                self._tail = bytes(data)
                return []
            if data[:8] != PROTOCOL_HEADER:
                raise BadProtocolHeader(bytes(data[:8]))
            self._greeted = True
            pos = 8
        out = []
        append = out.append
        n = len(data)
        max_payload = self.frame_max - 8
        content = self._content
        publish_cache = self._publish_cache
        unpack_frame = FRAME.unpack_from
        while n - pos >= 7:
            ftype, ch, size = unpack_frame(data, pos)
            if size > max_payload:
                raise AMQPFrameError(FRAME_ERROR, f"frame of {size + 8} bytes is over the negotiated "
                                                  f"frame_max of {self.frame_max} bytes")
            start = pos + 7
            end = start + size
            if end >= n:
                break
            if data[end] != FRAME_END:
                raise AMQPFrameError(FRAME_ERROR, f"frame end marker 0x{data[end]:02x} is not 0xce "
                                                  f"(frame type {ftype}, channel {ch}, {size} bytes)")
            pos = end + 1
            if ftype == FRAME_METHOD:
                if content and ch in content:
                    raise AMQPFrameError(UNEXPECTED_FRAME, f"method frame on channel {ch} while its "
                                                           f"content header or body was expected")
                if size < 4:
                    raise AMQPFrameError(SYNTAX_ERROR, "method frame shorter than its class and method ids")
                cid, mid = _CLASS_METHOD.unpack_from(data, start)
                if cid == 60 and mid == 40:
                    # basic.publish: a stream repeats the same few exchange/routing-key pairs, so
                    # the decoded arguments are kept by their bytes.
                    raw = data[start:end]
                    args = publish_cache.get(raw)
                    if args is None:
                        args = PUBLISH.decode(data, start + 4, end)
                        if len(publish_cache) >= PUBLISH_CACHE_SIZE:
                            publish_cache.clear()
                        publish_cache[raw] = args
                    # Fast path: its header and single body frame are already in this read.
                    if n - pos >= 22 and data[pos] == FRAME_HEADER:
                        _, hch, hsize = unpack_frame(data, pos)
                        hend = pos + 7 + hsize
                        if hch == ch and 14 <= hsize <= max_payload and hend < n and data[hend] == FRAME_END:
                            hcid, _, body_size, flags = HEADER.unpack_from(data, pos + 7)
                            if hcid == 60 and body_size <= self.max_body:
                                props = self._properties(data, pos + 19, hend, flags, ch) if flags else None
                                if body_size == 0:
                                    append((ch, args, props, b""))
                                    pos = hend + 1
                                    continue
                                bpos = hend + 1
                                if n - bpos >= 7 and data[bpos] == FRAME_BODY:
                                    _, bch, bsize = unpack_frame(data, bpos)
                                    bend = bpos + 7 + bsize
                                    if bch == ch and bsize == body_size and bend < n and data[bend] == FRAME_END:
                                        append((ch, args, props, data[bpos + 7:bend]))
                                        pos = bend + 1
                                        continue
                    content[ch] = _Content(args)
                    continue
                spec = METHODS.get((cid, mid))
                if spec is None:
                    raise AMQPFrameError(COMMAND_INVALID, f"unknown method class {cid} method {mid}", cid, mid)
                args = spec.decode(data, start + 4, end)
                if spec.content:
                    content[ch] = _Content(args)
                else:
                    append((ch, args, None, None))
            elif ftype == FRAME_BODY:
                c = content.get(ch)
                if c is None or c.size < 0:
                    raise AMQPFrameError(UNEXPECTED_FRAME, f"content body frame on channel {ch} "
                                                           f"without a content method and header before it")
                c.received += size
                if c.received > c.size:
                    raise AMQPFrameError(FRAME_ERROR, f"content body on channel {ch} is longer than the "
                                                      f"{c.size} bytes its header announced")
                if not c.refused:
                    c.chunks.append(data[start:end])
                if c.received == c.size:
                    del content[ch]
                    if not c.refused:
                        self._in_flight -= c.size
                    if not c.refused:
                        chunks = c.chunks
                        append((ch, c.method, c.properties, chunks[0] if len(chunks) == 1 else b"".join(chunks)))
            elif ftype == FRAME_HEADER:
                c = content.get(ch)
                if c is None or c.size >= 0:
                    raise AMQPFrameError(UNEXPECTED_FRAME, f"content header frame on channel {ch} "
                                                           f"without a content method before it")
                if size < 14:
                    raise AMQPFrameError(SYNTAX_ERROR, "content header frame shorter than 14 bytes")
                cid, _weight, body_size, flags = HEADER.unpack_from(data, start)
                if cid != c.method.spec.class_id:
                    raise AMQPFrameError(UNEXPECTED_FRAME, f"content header of class {cid} after "
                                                           f"{c.method.spec.name}")
                c.properties = self._properties(data, start + 12, end, flags, ch) if flags else None
                c.size = body_size
                if body_size > self.max_body:
                    c.refused = True
                    append((ch, AMQPError(PRECONDITION_FAILED, f"message size {body_size} is larger than "
                                                               f"configured max size {self.max_body}",
                                          60, 40), None, None))
                if body_size == 0:
                    del content[ch]
                    if not c.refused:
                        append((ch, c.method, c.properties, b""))
                elif not c.refused:
                    self._in_flight += body_size
                    if self._in_flight > self.max_in_flight:
                        raise AMQPFrameError(RESOURCE_ERROR, f"unfinished message bodies on this connection add up to "
                                                             f"{self._in_flight} bytes, over the limit of "
                                                             f"{self.max_in_flight}")
            elif ftype == FRAME_HEARTBEAT:
                if ch != 0:
                    raise AMQPFrameError(FRAME_ERROR, f"heartbeat frame on channel {ch} (must be 0)")
            else:
                raise AMQPFrameError(FRAME_ERROR, f"unknown frame type {ftype}")
        if pos < n:
            self._tail = data[pos:]
        return out

    def _properties(self, data, start: int, end: int, flags: int, ch: int):
        """The properties of a content header whose flags word starts at `start`.

        Publishers repeat the same few property sets (aio-pika sends the same four with every
        message), so decoded ones are kept by their bytes and shared: the core never changes a
        message's properties in place (it copies them, e.g. for x-death)."""
        raw = data[start:end]
        props = self._properties_cache.get(raw)
        if props is None:
            try:
                props = decode_properties(data, start + 2, end, flags)
            except PropertiesError as exc:
                raise AMQPFrameError(SYNTAX_ERROR, f"content header on channel {ch}: {exc}") from None
            if len(raw) <= PROPERTIES_CACHE_MAX_BYTES:
                cache = self._properties_cache
                if len(cache) >= PROPERTIES_CACHE_SIZE:
                    cache.clear()
                cache[raw] = props
        return props

    def drop_channel(self, ch: int) -> None:
        """Forget a half-received content on a channel that is being closed."""
        c = self._content.pop(ch, None)
        if c is not None and c.size > 0 and not c.refused:
            self._in_flight -= c.size


# ---- writing ------------------------------------------------------------------------------------
def frame_method(channel: int, args) -> bytes:
    """One method frame for a method's argument tuple (e.g. `spec.m.QueueDeclareOk(...)`)."""
    payload = args.spec.encode(args)
    return _pack_frame(FRAME_METHOD, channel, len(payload)) + payload + _END


def frame_content(channel: int, args, properties, body: bytes, frame_max: int) -> list:
    """Method, header and body frames of a content command, the body split to fit frame_max."""
    out = [frame_method(channel, args), frame_header(channel, len(body), properties)]
    out.extend(frame_body(channel, body, frame_max))
    return out


def frame_header(channel: int, body_size: int, properties) -> bytes:
    payload = encode_header(body_size, properties)
    return _pack_frame(FRAME_HEADER, channel, len(payload)) + payload + _END


def frame_body(channel: int, body: bytes, frame_max: int) -> list:
    if not body:
        return []
    limit = frame_max - 8
    if len(body) <= limit:
        return [_pack_frame(FRAME_BODY, channel, len(body)) + body + _END]
    view = memoryview(body)
    return [_pack_frame(FRAME_BODY, channel, len(view[i:i + limit])) + bytes(view[i:i + limit]) + _END
            for i in range(0, len(body), limit)]


def frame_raw(frame_type: int, channel: int, payload: bytes) -> bytes:
    return _pack_frame(frame_type, channel, len(payload)) + payload + _END


__all__ = ["CommandReader", "BadProtocolHeader", "frame_method", "frame_content", "frame_header",
           "frame_body", "frame_raw", "HEARTBEAT_FRAME", "encode_properties"]
