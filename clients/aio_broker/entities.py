"""aio-pika's `Exchange`, `Queue` and `QueueIterator`: names bound to a channel.

They hold no state of their own beyond their declaration; every operation is a request on
their channel (`Channel._call`), and publishing goes through the channel's batching
(`Channel._publish`).
"""

import asyncio
import collections
import enum

from . import exceptions


class ExchangeType(str, enum.Enum):
    FANOUT = "fanout"
    DIRECT = "direct"
    TOPIC = "topic"
    HEADERS = "headers"
    X_DELAYED_MESSAGE = "x-delayed-message"
    X_CONSISTENT_HASH = "x-consistent-hash"
    X_MODULUS_HASH = "x-modulus-hash"


def _name(entity) -> str:
    return entity if isinstance(entity, str) else entity.name


class Exchange:
    def __init__(self, channel, name: str, type=ExchangeType.DIRECT, *, durable=False, auto_delete=False,
                 internal=False, passive=False, arguments=None):
        self.channel = channel
        self.name = name
        self._type = type.value if isinstance(type, ExchangeType) else type
        self.durable = durable
        self.auto_delete = auto_delete
        self.internal = internal
        self.arguments = arguments

    async def publish(self, message, routing_key: str, *, mandatory: bool = True, immediate: bool = False,
                      timeout=None):
        """Publish; with publisher confirms, wait for the broker's confirm and return it."""
        if self.internal:
            raise ValueError(f"cannot publish to internal exchange {self.name!r}")
        fut = self.channel._publish(self.name, routing_key, message, mandatory)
        if fut is None:
            rpc = self.channel.connection._rpc
            if not rpc._can_write.is_set():
                await rpc.drain()  # the socket's buffer is full: wait, as aio-pika's writer does
            return None
        if timeout is None:
            return await fut
        return await asyncio.wait_for(fut, timeout)

    async def bind(self, exchange, routing_key: str = "", *, arguments=None, timeout=None):
        return await self.channel._call("exchange_bind", {"destination": self.name, "source": _name(exchange),
                                                          "routing_key": routing_key, "arguments": arguments or {}})

    async def unbind(self, exchange, routing_key: str = "", arguments=None, timeout=None):
        return await self.channel._call("exchange_unbind", {"destination": self.name, "source": _name(exchange),
                                                            "routing_key": routing_key, "arguments": arguments or {}})

    async def delete(self, if_unused: bool = False, timeout=None):
        return await self.channel.exchange_delete(self.name, if_unused=if_unused)

    def __str__(self):
        return self.name

    def __repr__(self):
        return f"<Exchange({self.name}): type={self._type!r}>"


class DeclarationResult:
    def __init__(self, result):
        result = result or {}
        self.message_count = result.get("message_count", 0)
        self.consumer_count = result.get("consumer_count", 0)


class Queue:
    def __init__(self, channel, name, durable=False, exclusive=False, auto_delete=False, arguments=None,
                 passive=False, declaration_result=None):
        self.channel = channel
        self.name = name
        self.durable = durable
        self.exclusive = exclusive
        self.auto_delete = auto_delete
        self.arguments = arguments
        self.declaration_result = DeclarationResult(declaration_result)
        self.server_named = False

    async def declare(self, timeout=None):
        queue = await self.channel.declare_queue(self.name, durable=self.durable, exclusive=self.exclusive,
                                                 auto_delete=self.auto_delete, arguments=self.arguments)
        self.declaration_result = queue.declaration_result
        return self.declaration_result

    async def bind(self, exchange, routing_key=None, *, arguments=None, timeout=None):
        if routing_key is None:
            routing_key = self.name
        result = await self.channel._call("queue_bind", {"queue": self.name, "exchange": _name(exchange),
                                                         "routing_key": routing_key, "arguments": arguments or {}})
        if self.channel.connection.robust:
            self.channel._bindings.append((self, _name(exchange), routing_key, arguments))
        return result

    async def unbind(self, exchange, routing_key=None, arguments=None, timeout=None):
        if routing_key is None:
            routing_key = self.name
        self.channel._bindings = [b for b in self.channel._bindings
                                  if (b[0].name, b[1], b[2]) != (self.name, _name(exchange), routing_key)]
        return await self.channel._call("queue_unbind", {"queue": self.name, "exchange": _name(exchange),
                                                         "routing_key": routing_key, "arguments": arguments or {}})

    async def consume(self, callback, no_ack: bool = False, exclusive: bool = False, arguments=None,
                      consumer_tag=None, timeout=None) -> str:
        """Start a consumer; `callback(message)` (sync or async) runs for each delivery. Returns its tag."""
        return await self.channel._consume(self, callback, no_ack, exclusive, arguments, consumer_tag)

    async def cancel(self, consumer_tag: str, timeout=None, nowait: bool = False):
        await self.channel._cancel(consumer_tag)

    async def get(self, *, no_ack: bool = False, fail: bool = True, timeout=5):
        message = await self.channel.get(self.name, no_ack=no_ack)
        if message is None and fail:
            raise exceptions.QueueEmpty()
        return message

    async def purge(self, no_wait: bool = False, timeout=None):
        result = await self.channel._call("queue_purge", {"queue": self.name})
        return _PurgeOk((result or {}).get("message_count", 0))

    async def delete(self, *, if_unused: bool = True, if_empty: bool = True, timeout=None):
        result = await self.channel.queue_delete(self.name, if_unused=if_unused, if_empty=if_empty)
        return _DeleteOk((result or {}).get("message_count", 0))

    def iterator(self, **kwargs) -> "QueueIterator":
        return QueueIterator(self, **kwargs)

    def __aiter__(self):
        return self.iterator()

    def __str__(self):
        return self.name

    def __repr__(self):
        return f"<Queue({self.name}): auto_delete={self.auto_delete}, durable={self.durable}, exclusive={self.exclusive}>"


class _PurgeOk:
    def __init__(self, message_count):
        self.message_count = message_count


class _DeleteOk:
    def __init__(self, message_count):
        self.message_count = message_count


class QueueIterator:
    """`async with queue.iterator() as it: async for message in it` (aio-pika's QueueIterator).

    The consumer callback appends to a deque and wakes the one waiting reader; `__anext__`
    hands out what is already there without suspending, so a batch of deliveries is iterated
    at the cost of a deque pop each. Leaving the `async with` cancels the consumer and
    requeues (nacks) the messages it holds but has not handed out.
    """

    def __init__(self, queue: Queue, timeout=None, **consume_kwargs):
        self.queue = queue
        self._timeout = timeout
        self._consume_kwargs = consume_kwargs
        self._messages = collections.deque()
        self._waiter = None
        self._consumer_tag = None
        self._closed = False

    @property
    def consumer_tag(self):
        return self._consumer_tag

    def _on_message(self, message):
        self._messages.append(message)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def consume(self):
        self._consumer_tag = await self.queue.consume(self._on_message, **self._consume_kwargs)
        self.queue.channel.close_callbacks.append(self._on_channel_closed)

    def _on_channel_closed(self, channel, exc):
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc if isinstance(exc, BaseException) else exceptions.ChannelInvalidStateError(str(exc)))

    async def close(self):
        if self._closed:
            return
        self._closed = True
        channel = self.queue.channel
        if self._on_channel_closed in channel.close_callbacks:
            channel.close_callbacks.remove(self._on_channel_closed)
        if self._consumer_tag is not None and not channel.is_closed:
            await self.queue.cancel(self._consumer_tag)
        pending, self._messages = self._messages, collections.deque()
        for message in pending:
            if not message.no_ack and not message.processed and not channel.is_closed:
                await message.nack(requeue=True)

    async def __aenter__(self):
        if self._consumer_tag is None:
            await self.consume()
        return self

    async def __aexit__(self, exc_type, exc, tb):
        await self.close()

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self._consumer_tag is None and not self._closed:
            await self.consume()
        messages = self._messages
        if messages:
            return messages.popleft()
        if self._closed:
            raise StopAsyncIteration
        while not messages:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                if self._timeout is None:
                    await self._waiter
                else:
                    await asyncio.wait_for(self._waiter, self._timeout)
            finally:
                self._waiter = None
            if self._closed and not messages:
                raise StopAsyncIteration
        return messages.popleft()
