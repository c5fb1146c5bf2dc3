"""KafkaError and KafkaException as confluent-kafka defines them, and the map from wire codes.

confluent-kafka reports every failure as a `KafkaError` (an integer code with a name and a
human-readable reason), raised wrapped in `KafkaException` or handed to callbacks and
`Message.error()`. Our server speaks string codes (docs/PROTOCOL.md, section 5); this module
turns them into the Kafka code a confluent-kafka program already tests for, keeping the
server's message as the reason. It leaves deciding *when* an error happens to the clients.
"""

from ..protocol.errors import BrokerError, ErrorCode


class KafkaError:
    """An error code with a reason, comparable to its integer code (as in confluent-kafka)."""

    # librdkafka's local (negative) and Kafka's protocol (positive) codes, same numbers.
    _BAD_MSG = -199
    _FAIL = -196
    _TRANSPORT = -195
    _DESTROY = -197
    _MSG_TIMED_OUT = -192
    _PARTITION_EOF = -191
    _UNKNOWN_PARTITION = -190
    _UNKNOWN_TOPIC = -188
    _ALL_BROKERS_DOWN = -187
    _INVALID_ARG = -186
    _TIMED_OUT = -185
    _QUEUE_FULL = -184
    _STATE = -172
    _NO_OFFSET = -168
    _PURGE_QUEUE = -152
    _PURGE_INFLIGHT = -151
    _MAX_POLL_EXCEEDED = -147
    _ASSIGNMENT_LOST = -142
    _AUTO_OFFSET_RESET = -140
    UNKNOWN = -1
    NO_ERROR = 0
    OFFSET_OUT_OF_RANGE = 1
    CORRUPT_MESSAGE = 2
    UNKNOWN_TOPIC_OR_PART = 3
    MSG_SIZE_TOO_LARGE = 10
    REQUEST_TIMED_OUT = 7
    COORDINATOR_NOT_AVAILABLE = 15
    INVALID_TOPIC_EXCEPTION = 17
    ILLEGAL_GENERATION = 22
    UNKNOWN_MEMBER_ID = 25
    REBALANCE_IN_PROGRESS = 27
    TOPIC_AUTHORIZATION_FAILED = 29
    GROUP_AUTHORIZATION_FAILED = 30
    CLUSTER_AUTHORIZATION_FAILED = 31
    TOPIC_ALREADY_EXISTS = 36
    INVALID_PARTITIONS = 37
    INVALID_CONFIG = 40
    INVALID_REQUEST = 42
    GROUP_ID_NOT_FOUND = 69
    KAFKA_STORAGE_ERROR = 56

    __slots__ = ("_code", "_reason", "_fatal", "_retriable", "_txn_requires_abort")

    def __init__(self, error, reason=None, fatal=False, retriable=False, txn_requires_abort=False):
        self._code = int(error)
        self._reason = reason
        self._fatal = fatal
        self._retriable = retriable
        self._txn_requires_abort = txn_requires_abort

    def code(self) -> int:
        return self._code

    def name(self) -> str:
        return _NAMES.get(self._code, f"ERR_{self._code}")

    def str(self) -> str:
        return self._reason if self._reason else _DEFAULT_REASONS.get(self._code, self.name())

    def fatal(self) -> bool:
        return self._fatal

    def retriable(self) -> bool:
        return self._retriable

    def txn_requires_abort(self) -> bool:
        return self._txn_requires_abort

    def __eq__(self, other):
        if isinstance(other, KafkaError):
            return self._code == other._code
        if isinstance(other, int):
            return self._code == other
        return NotImplemented

    def __hash__(self):
        return hash(self._code)

    def __str__(self):
        return self.str()

    def __repr__(self):
        return f"KafkaError{{code={self.name()},val={self._code},str=\"{self.str()}\"}}"

    def __bool__(self):
        return True


_NAMES = {v: k for k, v in vars(KafkaError).items() if k.isupper() or k.startswith("_") and k[1:2].isupper()}
_DEFAULT_REASONS = {
    KafkaError._PARTITION_EOF: "Broker: No more messages",
    KafkaError._MSG_TIMED_OUT: "Local: Message timed out",
    KafkaError._TRANSPORT: "Local: Broker transport failure",
    KafkaError._TIMED_OUT: "Local: Timed out",
}


class KafkaException(Exception):
    """Raised by the clients; `args[0]` is the KafkaError (as in confluent-kafka)."""

    def __init__(self, kafka_error, *args, **kwargs):
        if not isinstance(kafka_error, KafkaError):
            kafka_error = KafkaError(kafka_error, *args, **kwargs)
        super().__init__(kafka_error)

    def __str__(self):
        return str(self.args[0])


# Wire code -> Kafka code. NOT_FOUND depends on the thing missing; callers that know it is a
# group pass `missing_group=True`.
_WIRE_TO_KAFKA = {
    ErrorCode.NOT_FOUND: KafkaError.UNKNOWN_TOPIC_OR_PART,
    ErrorCode.ALREADY_EXISTS: KafkaError.TOPIC_ALREADY_EXISTS,
    ErrorCode.OFFSET_OUT_OF_RANGE: KafkaError.OFFSET_OUT_OF_RANGE,
    ErrorCode.ILLEGAL_GENERATION: KafkaError.ILLEGAL_GENERATION,
    ErrorCode.UNKNOWN_MEMBER_ID: KafkaError.UNKNOWN_MEMBER_ID,
    ErrorCode.REBALANCE_IN_PROGRESS: KafkaError.REBALANCE_IN_PROGRESS,
    ErrorCode.MESSAGE_TOO_LARGE: KafkaError.MSG_SIZE_TOO_LARGE,
    ErrorCode.FRAME_TOO_LARGE: KafkaError.MSG_SIZE_TOO_LARGE,
    ErrorCode.CORRUPT_MESSAGE: KafkaError.CORRUPT_MESSAGE,
    ErrorCode.STORAGE_ERROR: KafkaError.KAFKA_STORAGE_ERROR,
    ErrorCode.BAD_REQUEST: KafkaError.INVALID_REQUEST,
    ErrorCode.PRECONDITION_FAILED: KafkaError.INVALID_CONFIG,
    ErrorCode.NOT_AUTHORIZED: KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    ErrorCode.INTERNAL_ERROR: KafkaError.UNKNOWN,
    "CONNECTION_CLOSED": KafkaError._TRANSPORT,
}
_RETRIABLE = {KafkaError._TRANSPORT, KafkaError.REBALANCE_IN_PROGRESS, KafkaError.KAFKA_STORAGE_ERROR}


def error_from_wire(code: str, message: str) -> KafkaError:
    """The KafkaError for a wire error `[code, message]` (the reason keeps the wire code)."""
    kcode = _WIRE_TO_KAFKA.get(code, KafkaError.UNKNOWN)
    if code == ErrorCode.NOT_AUTHORIZED:
        # minilog/acl.py words every denial "user U may not OP topic|group NAME".
        if " group " in message:
            kcode = KafkaError.GROUP_AUTHORIZATION_FAILED
        elif " topic " in message:
            kcode = KafkaError.TOPIC_AUTHORIZATION_FAILED
    return KafkaError(kcode, f"{code}: {message}", retriable=kcode in _RETRIABLE)


def error_from_field(field) -> KafkaError | None:
    """An error field inside a result (nil or [code, message]) as a KafkaError or None."""
    if field is None:
        return None
    if isinstance(field, (list, tuple)) and len(field) >= 2:
        return error_from_wire(field[0], field[1])
    return KafkaError(KafkaError.UNKNOWN, f"unexpected error field {field!r:.100}")


def exception_from(exc: BrokerError) -> KafkaException:
    return KafkaException(error_from_wire(exc.code, exc.message))


class ConfigError(KafkaException, ValueError):
    """A bad configuration value: a KafkaException (_INVALID_ARG) as confluent-kafka raises,
    and a ValueError, so either `except` catches it."""

    def __init__(self, message: str):
        super().__init__(KafkaError(KafkaError._INVALID_ARG, message))
