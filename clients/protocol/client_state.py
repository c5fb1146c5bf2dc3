"""The client side of a connection as a state machine with no I/O.

`ClientConnectionState` numbers requests, encodes them, remembers which ids await an answer
and turns received bytes into events (Response, ErrorReply, Push). Reply matching lives here
and nowhere else (`expect`, `receive`): a reply goes to the handler registered for its id
(`handler(result, error)`, error a BrokerError or None), else into `replies` for a caller that
waits on the id; pushes and errors for id-0 requests go to the caller's two sinks. A result
map with a true `more` says more answers to that request follow (a fetch that asked for
several, docs/PROTOCOL.md): its handler stays registered for them. The
blocking connection (`clients/rpc.py`, and `clients/log/connection.py` on it) and the asyncio
one (`clients/aio_rpc.py`) are adapters that own the socket and feed bytes in, so the
protocol logic exists once and is tested without a network (tests/protocol).
"""

import itertools

import msgpack

from .framing import DEFAULT_MAX_FRAME, LENGTH, FrameDecoder, encode_frame_parts, new_packer
from .frames import REQUEST, RESPONSE, ErrorReply, Push, parse_server_frame
from .handshake import HELLO, hello_args


class ClientConnectionState:
    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME, keep_unclaimed: bool = True, decoder_class=FrameDecoder):
        self.handlers: dict = {}   # request id -> handler(result, error) for its reply
        self.replies: dict = {}    # request id -> Response / ErrorReply nobody registered for
        # A blocking caller waits on `replies`; an asyncio one registers a handler for every
        # request and drops replies that come after it gave up (a timeout).
        self.keep_unclaimed = keep_unclaimed
        self._ids = itertools.count(1)
        self._packer = new_packer()
        self._reused_packer = None      # encode_request_reused's, made on first use
        # FrameDecoder (fed bytes) or BufferedFrameDecoder (received into: `receive_into`).
        self.decoder = decoder_class(max_frame)
        self.max_frame = max_frame
        self.server_info: dict | None = None

    def next_id(self) -> int:
        return next(self._ids)

    def encode_request(self, op: str, args, want_reply: bool = True) -> tuple[int, bytes]:
        """Returns (request id, frame bytes). id 0 means "no reply unless it fails"."""
        rid = next(self._ids) if want_reply else 0
        body = self._packer.pack([REQUEST, rid, op, args])
        if len(body) > self.max_frame:
            from .errors import FrameTooLarge
            raise FrameTooLarge(len(body), self.max_frame)
        return rid, LENGTH.pack(len(body)) + body

    def encode_request_reused(self, op: str, args, want_reply: bool = True) -> tuple[int, bytes, memoryview]:
        """As `encode_request`, into one buffer kept for the connection's life: (request id, the
        4 length bytes, a view of the body in that buffer, valid until the next call). For
        large frames sent over and over (the pika-style client's publish batches): each would
        otherwise be two fresh objects of its size, the body and its length-prefixed copy, and
        a process touching fresh memory pays a page fault per 4 KiB of it."""
        packer = self._reused_packer
        if packer is None:
            packer = self._reused_packer = msgpack.Packer(use_bin_type=True, autoreset=False)
        packer.reset()
        rid = next(self._ids) if want_reply else 0
        packer.pack([REQUEST, rid, op, args])
        body = packer.getbuffer()
        if len(body) > self.max_frame:
            size = len(body)
            body.release()
            packer.reset()
            from .errors import FrameTooLarge
            raise FrameTooLarge(size, self.max_frame)
        return rid, LENGTH.pack(len(body)), body

    def encode_request_parts(self, op: str, args, want_reply: bool = True) -> tuple[int, list]:
        """As `encode_request`, with the frame as a list of buffers (`framing.encode_frame_parts`:
        large bytes values in `args`, such as a produce request's batches, are not copied)."""
        rid = next(self._ids) if want_reply else 0
        parts = encode_frame_parts([REQUEST, rid, op, args], self._packer)
        size = sum(map(len, parts)) - LENGTH.size
        if size > self.max_frame:
            from .errors import FrameTooLarge
            raise FrameTooLarge(size, self.max_frame)
        return rid, parts

    def hello(self, client_name: str, credentials=None) -> tuple[int, bytes]:
        return self.encode_request(HELLO, hello_args(client_name, credentials, self.max_frame))

    def accept_hello(self, result: dict, expect_server: str | None = None) -> None:
        """Take the server's hello reply; `expect_server` ("minibroker" or "minilog") refuses
        the other broker here, at the handshake, instead of at the first op it lacks."""
        if expect_server is not None and (not isinstance(result, dict) or result.get("server") != expect_server):
            from .errors import WrongServer
            raise WrongServer(expect_server, result.get("server") if isinstance(result, dict) else None)
        self.server_info = result
        # The server may accept less than we offered; never send more than it takes.
        self.max_frame = min(self.max_frame, int(result.get("max_frame", self.max_frame)))

    def decode(self, data) -> list:
        """The events `data` completes, in order (without routing them: see `receive`)."""
        return [parse_server_frame(obj) for obj in self.decoder.feed(data)]

    receive_data = decode

    def expect(self, rid: int, handler) -> None:
        """Send the reply to request `rid` to `handler(result, error)` when it comes."""
        self.handlers[rid] = handler

    def receive(self, data, on_push, on_async_error) -> None:
        """Parse `data` and route every event: a reply to its handler (or `replies`), a push
        to `on_push(push)`, an error for an id-0 request to `on_async_error(error_reply)`."""
        self._route(self.decoder.feed(data), on_push, on_async_error)

    def receive_into(self, nbytes: int, on_push, on_async_error) -> None:
        """As `receive`, for `nbytes` received into `decoder.get_buffer()` (a BufferedFrameDecoder)."""
        self._route(self.decoder.buffer_updated(nbytes), on_push, on_async_error)

    def _route(self, frames, on_push, on_async_error) -> None:
        """Parse each decoded frame (`parse_server_frame`) and route it (see `receive`)."""
        handlers = self.handlers
        for obj in frames:
            # A reply to a request with a handler (a consumer's fetch: once per record at the
            # end of a live log) goes straight to it, without an event object in between.
            if obj.__class__ is list and len(obj) == 3 and obj[0] == RESPONSE:
                handler = handlers.pop(obj[1], None)
                if handler is not None:
                    result = obj[2]
                    if result.__class__ is dict and result.get("more"):
                        handlers[obj[1]] = handler   # more answers to this request follow
                    handler(result, None)
                    continue
            event = parse_server_frame(obj)
            t = type(event)
            if t is Push:
                on_push(event)
                continue
            handler = handlers.pop(event.id, None)
            if handler is not None:
                if t is not ErrorReply and type(event.result) is dict and event.result.get("more"):
                    handlers[event.id] = handler
                if t is ErrorReply:
                    handler(None, event.exception())
                else:
                    handler(event.result, None)
            elif event.id == 0:
                on_async_error(event)
            elif self.keep_unclaimed:
                self.replies[event.id] = event

    # Frames the caller decoded itself (`LogConnection.receive_replies`: a read that was exactly
    # one whole frame) are routed as those the decoder completes: the same code, one call.
    route = _route

    def fail_all(self, error) -> None:
        """Run every registered handler with `error` (the connection is gone)."""
        handlers = list(self.handlers.values())
        self.handlers.clear()  # in place: adapters keep a reference to the dict
        for handler in handlers:
            handler(None, error)
