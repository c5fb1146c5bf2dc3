"""The client side of a connection as a state machine with no I/O.

`ClientConnectionState` numbers requests, encodes them, remembers which ids await an answer
and turns received bytes into events (Response, ErrorReply, Push). The blocking client and
the asyncio client both wrap it, each with its own socket handling, so the protocol logic
exists once and can be tested without a network.
"""

import itertools

from .framing import DEFAULT_MAX_FRAME, FrameDecoder, new_packer, LENGTH
from .frames import REQUEST, parse_server_frame
from .handshake import HELLO, hello_args


class ClientConnectionState:
    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME):
        self._ids = itertools.count(1)
        self._packer = new_packer()
        self.decoder = FrameDecoder(max_frame)
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

    def receive_data(self, data) -> list:
        return [parse_server_frame(obj) for obj in self.decoder.feed(data)]
