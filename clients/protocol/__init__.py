"""The wire protocol shared by minibroker, minilog and their clients (no I/O in here).

- `framing`: length-prefixed msgpack frames (`FrameDecoder`, `encode_frame`)
- `frames`: the request / response / error / push envelope
- `handshake`: the `hello` exchange and protocol versions
- `errors`: stable error codes and `BrokerError`
- `client_state`: the client side of a connection as a state machine
"""

from .client_state import ClientConnectionState
from .errors import BrokerError, CorruptFrame, ErrorCode, FrameTooLarge, ProtocolViolation
from .frames import ERROR, PUSH, REQUEST, RESPONSE, ErrorReply, Push, Request, Response
from .framing import DEFAULT_MAX_FRAME, FrameDecoder, encode_frame, new_packer
from .handshake import PROTOCOL_VERSION

__all__ = [
    "BrokerError", "ClientConnectionState", "CorruptFrame", "DEFAULT_MAX_FRAME", "ERROR",
    "ErrorCode", "ErrorReply", "FrameDecoder", "FrameTooLarge", "PROTOCOL_VERSION", "PUSH",
    "ProtocolViolation", "Push", "REQUEST", "RESPONSE", "Request", "Response", "encode_frame",
    "new_packer",
]
