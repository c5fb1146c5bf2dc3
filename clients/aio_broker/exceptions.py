"""aio-pika's (aiormq's) exception names, and the mapping from our wire error codes.

A refused channel operation raises a `ChannelClosed` subclass chosen by the AMQP reply code
(404 `ChannelNotFoundEntity`, 405 `ChannelLockedResource`, 406 `ChannelPreconditionFailed`,
403 `ChannelAccessRefused`); the reply codes come from `clients.broker.exceptions`, so both
clients map our codes the same way.
"""

from clients.broker.exceptions import reply_code_for


class AMQPError(Exception):
    reason = "An unspecified AMQP error has occurred: %s"


class AMQPConnectionError(AMQPError):
    pass


class ConnectionClosed(AMQPConnectionError):
    def __init__(self, code=0, message="connection closed"):
        super().__init__(code, message)
        self.code = code
        self.message = message


class IncompatibleProtocolError(AMQPConnectionError):
    pass


class ProbableAuthenticationError(AMQPConnectionError):
    pass


class AuthenticationError(AMQPConnectionError):
    pass


class AMQPChannelError(AMQPError):
    pass


class ChannelInvalidStateError(AMQPChannelError):
    pass


class ChannelClosed(AMQPChannelError):
    def __init__(self, code=0, message="channel closed"):
        super().__init__(code, message)
        self.code = code
        self.message = message

    @property
    def reply_code(self):
        return self.code

    @property
    def reply_text(self):
        return self.message


class ChannelAccessRefused(ChannelClosed):
    pass


class ChannelNotFoundEntity(ChannelClosed):
    pass


class ChannelLockedResource(ChannelClosed):
    pass


class ChannelPreconditionFailed(ChannelClosed):
    pass


class DuplicateConsumerTag(ChannelClosed):
    pass


class DeliveryError(AMQPError):
    """A publish the broker returned (unroutable mandatory) or refused (nack) under confirms."""

    def __init__(self, message, frame):
        super().__init__(message, frame)
        self.message = message
        self.frame = frame


class PublishError(DeliveryError):
    pass


class QueueEmpty(AMQPError, LookupError):
    pass


class MessageProcessError(AMQPError):
    def __init__(self, error, msg):
        super().__init__(error, msg)
        self.message = msg


_BY_REPLY_CODE = {403: ChannelAccessRefused, 404: ChannelNotFoundEntity,
                  405: ChannelLockedResource, 406: ChannelPreconditionFailed}


def channel_error(code: str, message: str) -> ChannelClosed:
    reply_code = reply_code_for(code)
    return _BY_REPLY_CODE.get(reply_code, ChannelClosed)(reply_code, f"{code} - {message}")
