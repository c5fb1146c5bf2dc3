"""A blocking minibroker client that speaks pika's API: `from clients import broker as pika`.

    connection = broker.BlockingConnection(broker.ConnectionParameters("127.0.0.1", 5673))
    channel = connection.channel()
    channel.queue_declare(queue="hello")
    channel.basic_publish(exchange="", routing_key="hello", body="Hello World!")

Modules follow pika's: `connection` (parameters and credentials), `blocking_connection`
(BlockingConnection, the I/O loop), `blocking_channel` (BlockingChannel, the AMQP methods),
`spec` (BasicProperties, method records, constants), `exceptions`, `exchange_type`, `frame`.
How the API maps onto the wire is in docs/clients-minibroker.md.
"""

from . import exceptions, frame, spec
from .blocking_channel import BlockingChannel, ReturnedMessage
from .blocking_connection import BlockingConnection
from .connection import ConnectionParameters, PlainCredentials, SSLOptions, URLParameters
from .exchange_type import ExchangeType
from .spec import BasicProperties, DeliveryMode

__all__ = [
    "BasicProperties", "BlockingChannel", "BlockingConnection", "ConnectionParameters", "DeliveryMode",
    "ExchangeType", "PlainCredentials", "ReturnedMessage", "SSLOptions", "URLParameters", "exceptions", "frame", "spec",
]
