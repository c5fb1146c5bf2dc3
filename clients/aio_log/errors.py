"""aiokafka-style exceptions (aiokafka.errors), built from the wire's error codes.

aiokafka raises one exception class per Kafka error; the ones a program catches most are
here, all subclasses of `KafkaError`, with the server's message kept in the text.
"""

from ..protocol.errors import ErrorCode


class KafkaError(RuntimeError):
    retriable = False
    invalid_metadata = False


class KafkaConnectionError(KafkaError):
    retriable = True


class KafkaTimeoutError(KafkaError):
    retriable = True


class IllegalStateError(KafkaError):
    pass


class IllegalOperation(KafkaError):
    pass


class ConsumerStoppedError(KafkaError):
    pass


class CommitFailedError(KafkaError):
    pass


class UnknownTopicOrPartitionError(KafkaError):
    invalid_metadata = True


class TopicAlreadyExistsError(KafkaError):
    pass


class OffsetOutOfRangeError(KafkaError):
    pass


class IllegalGenerationError(KafkaError):
    pass


class UnknownMemberIdError(KafkaError):
    pass


class RebalanceInProgressError(KafkaError):
    retriable = True


class MessageSizeTooLargeError(KafkaError):
    pass


class CorruptRecordException(KafkaError):
    pass


class KafkaStorageError(KafkaError):
    retriable = True


class InvalidRequestError(KafkaError):
    pass


_BY_CODE = {
    ErrorCode.NOT_FOUND: UnknownTopicOrPartitionError,
    ErrorCode.ALREADY_EXISTS: TopicAlreadyExistsError,
    ErrorCode.OFFSET_OUT_OF_RANGE: OffsetOutOfRangeError,
    ErrorCode.ILLEGAL_GENERATION: IllegalGenerationError,
    ErrorCode.UNKNOWN_MEMBER_ID: UnknownMemberIdError,
    ErrorCode.REBALANCE_IN_PROGRESS: RebalanceInProgressError,
    ErrorCode.MESSAGE_TOO_LARGE: MessageSizeTooLargeError,
    ErrorCode.FRAME_TOO_LARGE: MessageSizeTooLargeError,
    ErrorCode.CORRUPT_MESSAGE: CorruptRecordException,
    ErrorCode.STORAGE_ERROR: KafkaStorageError,
    ErrorCode.BAD_REQUEST: InvalidRequestError,
    "CONNECTION_CLOSED": KafkaConnectionError,
}


def from_wire(code: str, message: str) -> KafkaError:
    return _BY_CODE.get(code, KafkaError)(f"{code}: {message}")


def from_field(field) -> KafkaError | None:
    if field is None:
        return None
    return from_wire(field[0], field[1])
