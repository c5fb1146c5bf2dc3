"""aio-pika's messages: `Message` to publish, `IncomingMessage` as delivered, `DeliveryMode`.

Properties travel as the wire's property map (pika's names, docs/PROTOCOL.md section 8);
`Message.properties_map` builds it once per message. An `IncomingMessage` keeps the map it
arrived with and reads fields from it, so a delivery costs one small object. Settling
(`ack`/`nack`/`reject`) queues an id-0 request on the channel; requests queued in one loop
turn leave in one write.
"""

import contextlib
import datetime
import enum
import time


class DeliveryMode(enum.IntEnum):
    NOT_PERSISTENT = 1
    PERSISTENT = 2


def _expiration_ms(value):
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, datetime.timedelta):
        return str(int(value.total_seconds() * 1000))
    if isinstance(value, datetime.datetime):
        return str(max(0, int((value.timestamp() - time.time()) * 1000)))
    return str(int(float(value) * 1000))  # aio-pika takes seconds


def _timestamp(value):
    if value is None or isinstance(value, int):
        return value
    if isinstance(value, datetime.datetime):
        return int(value.timestamp())
    if isinstance(value, datetime.timedelta):
        return int(time.time() + value.total_seconds())
    return int(value)


class Message:
    __slots__ = ("body", "headers", "content_type", "content_encoding", "delivery_mode", "priority",
                 "correlation_id", "reply_to", "expiration", "message_id", "timestamp", "type", "user_id",
                 "app_id")

    def __init__(self, body: bytes, *, headers=None, content_type=None, content_encoding=None,
                 delivery_mode=None, priority=None, correlation_id=None, reply_to=None, expiration=None,
                 message_id=None, timestamp=None, type=None, user_id=None, app_id=None):
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.body = body
        self.headers = headers if headers is not None else {}
        self.content_type = content_type
        self.content_encoding = content_encoding
        self.delivery_mode = int(delivery_mode) if delivery_mode is not None else None
        self.priority = priority
        self.correlation_id = correlation_id
        self.reply_to = reply_to
        self.expiration = expiration
        self.message_id = message_id
        self.timestamp = timestamp
        self.type = type
        self.user_id = user_id
        self.app_id = app_id

    @property
    def body_size(self) -> int:
        return len(self.body)

    def properties_map(self):
        """The wire's property map: only the fields that are set (None when none are)."""
        props = {}
        if self.content_type is not None:
            props["content_type"] = self.content_type
        if self.content_encoding is not None:
            props["content_encoding"] = self.content_encoding
        if self.delivery_mode is not None:
            props["delivery_mode"] = self.delivery_mode
        if self.priority is not None:
            props["priority"] = self.priority
        if self.correlation_id is not None:
            props["correlation_id"] = self.correlation_id
        if self.reply_to is not None:
            props["reply_to"] = self.reply_to
        if self.message_id is not None:
            props["message_id"] = self.message_id
        if self.type is not None:
            props["type"] = self.type
        if self.user_id is not None:
            props["user_id"] = self.user_id
        if self.app_id is not None:
            props["app_id"] = self.app_id
        if self.headers:
            props["headers"] = self.headers
        if self.expiration is not None:
            props["expiration"] = _expiration_ms(self.expiration)
        if self.timestamp is not None:
            props["timestamp"] = _timestamp(self.timestamp)
        return props or None

    def __repr__(self):
        return f"Message:{{body={self.body[:64]!r}, headers={self.headers!r}}}"


class MessageProcessError(Exception):
    pass


class IncomingMessage:
    """A delivered message (from a consumer or `queue.get`); settle it once with ack/nack/reject."""

    __slots__ = ("channel", "body", "delivery_tag", "redelivered", "exchange", "routing_key",
                 "consumer_tag", "message_count", "no_ack", "_props", "_processed")

    def __init__(self, channel, body, delivery_tag, redelivered, exchange, routing_key, props,
                 consumer_tag=None, message_count=None, no_ack=False):
        self.channel = channel
        self.body = body
        self.delivery_tag = delivery_tag
        self.redelivered = redelivered
        self.exchange = exchange
        self.routing_key = routing_key
        self._props = props or {}
        self.consumer_tag = consumer_tag
        self.message_count = message_count
        self.no_ack = no_ack
        self._processed = no_ack

    # properties, read from the wire map
    headers = property(lambda self: self._props.get("headers") or {})
    content_type = property(lambda self: self._props.get("content_type"))
    content_encoding = property(lambda self: self._props.get("content_encoding"))
    delivery_mode = property(lambda self: self._props.get("delivery_mode"))
    priority = property(lambda self: self._props.get("priority"))
    correlation_id = property(lambda self: self._props.get("correlation_id"))
    reply_to = property(lambda self: self._props.get("reply_to"))
    expiration = property(lambda self: self._props.get("expiration"))
    message_id = property(lambda self: self._props.get("message_id"))
    timestamp = property(lambda self: self._props.get("timestamp"))
    type = property(lambda self: self._props.get("type"))
    user_id = property(lambda self: self._props.get("user_id"))
    app_id = property(lambda self: self._props.get("app_id"))

    @property
    def body_size(self) -> int:
        return len(self.body)

    @property
    def processed(self) -> bool:
        return self._processed

    @property
    def locked(self) -> bool:
        return self._processed

    def _settle(self, op, args):
        if self.no_ack:
            raise TypeError('Can\'t ack/nack/reject a message consumed with "no_ack=True"')
        if self._processed:
            raise MessageProcessError("Message already processed")
        self._processed = True
        self.channel._settle(op, args)

    async def ack(self, multiple: bool = False) -> None:
        self._settle("ack", {"delivery_tag": self.delivery_tag, "multiple": multiple})

    async def nack(self, multiple: bool = False, requeue: bool = True) -> None:
        self._settle("nack", {"delivery_tag": self.delivery_tag, "multiple": multiple, "requeue": requeue})

    async def reject(self, requeue: bool = False) -> None:
        self._settle("reject", {"delivery_tag": self.delivery_tag, "requeue": requeue})

    @contextlib.asynccontextmanager
    async def process(self, requeue=False, reject_on_redelivered=False, ignore_processed=False):
        """Ack when the block succeeds; reject (requeue if asked) when it raises."""
        try:
            yield self
            if not ignore_processed and not self._processed:
                await self.ack()
        except BaseException:
            if not ignore_processed and not self._processed:
                if reject_on_redelivered and self.redelivered:
                    await self.reject(requeue=False)
                else:
                    await self.reject(requeue=requeue)
            raise

    def info(self) -> dict:
        info = dict(self._props)
        info.update(body_size=len(self.body), delivery_tag=self.delivery_tag, redelivered=self.redelivered,
                    exchange=self.exchange, routing_key=self.routing_key, consumer_tag=self.consumer_tag,
                    message_count=self.message_count)
        return info

    def __repr__(self):
        return f"IncomingMessage:{{delivery_tag={self.delivery_tag}, routing_key={self.routing_key!r}, body={self.body[:64]!r}}}"
