"""pika's exception classes (same names, same hierarchy), and how our wire errors map onto them.

A wire error carries one of our codes (docs/PROTOCOL.md section 5); a pika program checks AMQP
reply codes (`exc.reply_code == 404`). `reply_code_for` is that mapping, and `channel_error`
builds the `ChannelClosedByBroker` a failed channel operation raises, with a reply text in
RabbitMQ's form: "NOT_FOUND - no queue 'x'".
"""


from clients.protocol.errors import ErrorCode

from . import spec


class AMQPError(Exception):
    def __repr__(self):
        return f"{self.__class__.__name__}: An unspecified AMQP error has occurred; {self.args}"


class AMQPConnectionError(AMQPError):
    def __repr__(self):
        if len(self.args) == 2:
            return f"{self.__class__.__name__}: ({self.args[0]}) {self.args[1]}"
        return f"{self.__class__.__name__}: {self.args}"


class ConnectionOpenAborted(AMQPConnectionError):
    pass


class StreamLostError(AMQPConnectionError):
    pass


class IncompatibleProtocolError(AMQPConnectionError):
    pass


class AuthenticationError(AMQPConnectionError):
    pass


class ProbableAuthenticationError(AMQPConnectionError):
    pass


class ProbableAccessDeniedError(AMQPConnectionError):
    pass


class NoFreeChannels(AMQPConnectionError):
    pass


class ConnectionWrongStateError(AMQPConnectionError):
    pass


class _ClosedWithReply:
    """What pika's ConnectionClosed and ChannelClosed share: a reply code and text as args."""

    def __init__(self, reply_code, reply_text):
        super().__init__(int(reply_code), str(reply_text))

    def __repr__(self):
        return f"{self.__class__.__name__}: ({self.reply_code}) {self.reply_text!r}"

    @property
    def reply_code(self):
        return self.args[0]

    @property
    def reply_text(self):
        return self.args[1]


class ConnectionClosed(_ClosedWithReply, AMQPConnectionError):
    pass


class ConnectionClosedByBroker(ConnectionClosed):
    pass


class ConnectionClosedByClient(ConnectionClosed):
    pass


class ConnectionBlockedTimeout(AMQPConnectionError):
    pass


class AMQPHeartbeatTimeout(AMQPConnectionError):
    pass


class AMQPChannelError(AMQPError):
    def __repr__(self):
        return f"{self.__class__.__name__}: {self.args!r}"


class ChannelWrongStateError(AMQPChannelError):
    pass


class ChannelClosed(_ClosedWithReply, AMQPChannelError):
    pass


class ChannelClosedByBroker(ChannelClosed):
    pass


class ChannelClosedByClient(ChannelClosed):
    pass


class DuplicateConsumerTag(AMQPChannelError):
    pass


class ConsumerCancelled(AMQPChannelError):
    pass


class UnroutableError(AMQPChannelError):
    """Mandatory messages the broker returned under publisher confirms."""

    def __init__(self, messages):
        super().__init__(f"{len(messages)} unroutable message(s) returned")
        self.messages = messages

    def __repr__(self):
        return f"{self.__class__.__name__}: {len(self.messages)} unroutable messages returned by broker"


class NackError(AMQPChannelError):
    """Messages the broker refused (nacked) under publisher confirms."""

    def __init__(self, messages):
        super().__init__(f"{len(messages)} message(s) NACKed")
        self.messages = messages

    def __repr__(self):
        return f"{self.__class__.__name__}: {len(self.messages)} unroutable messages returned by broker"


class InvalidChannelNumber(AMQPError):
    pass


class ProtocolSyntaxError(AMQPError):
    pass


class UnexpectedFrameError(ProtocolSyntaxError):
    pass


class ProtocolVersionMismatch(ProtocolSyntaxError):
    pass


class BodyTooLongError(AMQPError):
    pass


class InvalidFrameError(ProtocolSyntaxError):
    pass


class MethodNotImplemented(AMQPError):
    pass


class ChannelError(Exception):
    pass


class ReentrancyError(Exception):
    pass


class ShortStringTooLong(AMQPError):
    pass


class DuplicateGetOkCallback(ChannelError):
    pass


_REPLY_CODES = {
    ErrorCode.NOT_FOUND: spec.NOT_FOUND,
    ErrorCode.PRECONDITION_FAILED: spec.PRECONDITION_FAILED,
    ErrorCode.RESOURCE_LOCKED: spec.RESOURCE_LOCKED,
    ErrorCode.NOT_AUTHORIZED: spec.ACCESS_REFUSED,
    # RabbitMQ answers a bad argument (an x-argument of the wrong type...) with 406.
    ErrorCode.BAD_REQUEST: spec.PRECONDITION_FAILED,
    ErrorCode.ALREADY_EXISTS: spec.PRECONDITION_FAILED,
    ErrorCode.MESSAGE_TOO_LARGE: spec.PRECONDITION_FAILED,
    ErrorCode.UNKNOWN_OP: spec.NOT_IMPLEMENTED,
    ErrorCode.HANDSHAKE_REQUIRED: spec.COMMAND_INVALID,
    ErrorCode.FRAME_TOO_LARGE: spec.FRAME_ERROR,
    ErrorCode.CORRUPT_FRAME: spec.FRAME_ERROR,
    ErrorCode.STORAGE_ERROR: spec.INTERNAL_ERROR,
    ErrorCode.INTERNAL_ERROR: spec.INTERNAL_ERROR,
}


def reply_code_for(code: str) -> int:
    """The AMQP reply code for one of our wire error codes (541 for one we do not know)."""
    return _REPLY_CODES.get(code, spec.INTERNAL_ERROR)


def channel_error(code: str, message: str) -> ChannelClosedByBroker:
    return ChannelClosedByBroker(reply_code_for(code), f"{code} - {message}")

