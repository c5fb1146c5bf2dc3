"""Error codes of the wire protocol and the exceptions that carry them.

Every error that crosses the wire is an ERROR frame with one of the stable codes below
and a message a person can act on. Both the servers and the clients raise `BrokerError`
(or a subclass) so that one exception type means "the other side said no".
The codes are documented in docs/PROTOCOL.md; keep the two in step.
"""


class ErrorCode:
    """Stable error codes (strings on the wire, so a log line reads on its own)."""

    BAD_REQUEST = "BAD_REQUEST"                  # malformed envelope or argument
    UNKNOWN_OP = "UNKNOWN_OP"                    # the server has no such op
    UNSUPPORTED_VERSION = "UNSUPPORTED_VERSION"  # handshake asked for a protocol we do not speak
    HANDSHAKE_REQUIRED = "HANDSHAKE_REQUIRED"    # a request came before `hello`
    NOT_AUTHORIZED = "NOT_AUTHORIZED"            # bad credentials, or an op the user may not do
    NOT_FOUND = "NOT_FOUND"                      # missing queue, exchange, topic, group...
    PRECONDITION_FAILED = "PRECONDITION_FAILED"  # redeclare with other arguments, unknown tag...
    RESOURCE_LOCKED = "RESOURCE_LOCKED"          # another connection's exclusive queue
    FRAME_TOO_LARGE = "FRAME_TOO_LARGE"          # frame longer than the negotiated maximum
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"      # a message or batch over the configured limit
    CORRUPT_FRAME = "CORRUPT_FRAME"              # bytes that are not msgpack
    CORRUPT_MESSAGE = "CORRUPT_MESSAGE"          # a record batch whose checksum is wrong
    OFFSET_OUT_OF_RANGE = "OFFSET_OUT_OF_RANGE"  # a read below the log start or past its end
    ILLEGAL_GENERATION = "ILLEGAL_GENERATION"    # a stale consumer-group generation
    UNKNOWN_MEMBER_ID = "UNKNOWN_MEMBER_ID"      # a consumer-group member the coordinator forgot
    REBALANCE_IN_PROGRESS = "REBALANCE_IN_PROGRESS"
    ALREADY_EXISTS = "ALREADY_EXISTS"            # create of something that exists
    STORAGE_ERROR = "STORAGE_ERROR"              # disk full, I/O error: nothing was written
    INTERNAL_ERROR = "INTERNAL_ERROR"            # a bug on the server; the connection stays up
    TIMEOUT = "TIMEOUT"                          # no hello in time, or missed heartbeats: closed
    # Idempotent produce and Kafka batches (the names are Kafka's, so its front door maps them as they are).
    INVALID_PRODUCER_EPOCH = "INVALID_PRODUCER_EPOCH"              # a fenced producer: a newer epoch exists
    OUT_OF_ORDER_SEQUENCE_NUMBER = "OUT_OF_ORDER_SEQUENCE_NUMBER"  # a batch's sequence does not follow the last
    UNSUPPORTED_COMPRESSION_TYPE = "UNSUPPORTED_COMPRESSION_TYPE"  # a codec this server has no package for
    INVALID_RECORD = "INVALID_RECORD"                              # a batch this broker does not accept
    NON_EMPTY_GROUP = "NON_EMPTY_GROUP"                            # delete of a consumer group with members

    ALL = frozenset(
        v for k, v in vars().items() if k.isupper() and isinstance(v, str)
    )


class BrokerError(Exception):
    """An error with a stable wire code. Raised by servers, received by clients."""

    channel = None  # for an id-0 error received by a client: the channel the frame names

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class WrongServer(BrokerError):
    """The handshake answered, but from the other broker (a minibroker client at a minilog port,
    or the reverse). Client-side only: the server never sends this code."""

    def __init__(self, expected: str, found):
        super().__init__(
            "WRONG_SERVER",
            f"this port is served by {found!r}, not {expected!r}; check the host and port",
        )
        self.expected = expected
        self.found = found


class ProtocolViolation(BrokerError):
    """The byte stream itself is broken: the connection that sent it must be closed."""


class FrameTooLarge(ProtocolViolation):
    def __init__(self, size: int, limit: int):
        super().__init__(
            ErrorCode.FRAME_TOO_LARGE,
            f"frame of {size} bytes is over the limit of {limit} bytes "
            f"(negotiated in the handshake as max_frame)",
        )
        self.size = size
        self.limit = limit


class CorruptFrame(ProtocolViolation):
    def __init__(self, detail: str):
        super().__init__(ErrorCode.CORRUPT_FRAME, f"frame body is not valid msgpack: {detail}")
