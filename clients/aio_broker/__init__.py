"""An asyncio minibroker client that speaks aio-pika's API: `from clients import aio_broker as aio_pika`.

    connection = await aio_broker.connect(host="127.0.0.1", port=5673)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue("hello")
        await channel.default_exchange.publish(aio_broker.Message(b"hi"), routing_key="hello")

Modules: `connection` (connect, Connection), `channel` (Channel: batching, confirms, delivery
dispatch), `entities` (Exchange, Queue, QueueIterator, ExchangeType), `message` (Message,
IncomingMessage, DeliveryMode), `exceptions`. Wire mapping: docs/clients-minibroker.md.
"""

from . import exceptions
from .channel import Channel
from .connection import Connection, RobustConnection, connect, connect_robust
from .entities import Exchange, ExchangeType, Queue, QueueIterator
from .message import DeliveryMode, IncomingMessage, Message

AbstractIncomingMessage = IncomingMessage

__all__ = [
    "AbstractIncomingMessage", "Channel", "Connection", "DeliveryMode", "Exchange", "ExchangeType",
    "IncomingMessage", "Message", "Queue", "QueueIterator", "RobustConnection", "connect", "connect_robust",
    "exceptions",
]
