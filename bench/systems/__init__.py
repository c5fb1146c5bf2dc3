"""The systems the bench knows, by name: our two brokers and the peers it compares them with.

Each name maps to an adapter class (bench/systems/base.py interface); adapter modules import
their client library only when used, so listing systems never needs any of them installed.
"""

import importlib
import importlib.util

ADAPTERS = {
    "minibroker": ("bench.systems.amqp_style", "MinibrokerAdapter"),
    "minilog": ("bench.systems.kafka_style", "MinilogAdapter"),
    "minilog-aio": ("bench.systems.aiokafka_style", "MinilogAioAdapter"),
    "rabbitmq": ("bench.systems.amqp_style", "RabbitMQAdapter"),
    "rabbitmq-pika": ("bench.systems.pika_style", "RabbitMQPikaAdapter"),
    "minibroker-pika": ("bench.systems.pika_style", "MinibrokerPikaAdapter"),
    "kafka": ("bench.systems.kafka_style", "KafkaAdapter"),
    "nats": ("bench.systems.nats_js", "NatsAdapter"),
    "redis": ("bench.systems.redis_streams", "RedisAdapter"),
}

OWN = ("minibroker", "minibroker-pika", "minilog", "minilog-aio")
OWN_MODULES = {"minibroker": "minibroker", "minibroker-pika": "minibroker", "minilog": "minilog",
               "minilog-aio": "minilog"}
PEERS = ("rabbitmq", "rabbitmq-pika", "kafka", "nats", "redis")

# The Python module each adapter needs; a missing one skips the system with one line.
CLIENT_MODULES = {"minibroker": "clients.aio_broker", "minilog": "clients.log",
                  "minilog-aio": "clients.aio_log", "minibroker-pika": "clients.broker",
                  "rabbitmq-pika": "pika",
                  "rabbitmq": "aio_pika", "kafka": "confluent_kafka", "nats": "nats",
                  "redis": "redis"}

DESCRIPTIONS = {
    "minibroker": "routing queue (this repo), via clients.aio_broker (aio-pika API)",
    "minilog": "log (this repo), via clients.log (confluent-kafka API)",
    "minilog-aio": "log (this repo), via clients.aio_log (aiokafka API)",
    "rabbitmq": "RabbitMQ, via aio-pika",
    "rabbitmq-pika": "RabbitMQ, via pika (blocking, no confirms)",
    "minibroker-pika": "routing queue (this repo), via clients.broker (pika API, blocking)",
    "kafka": "Kafka protocol (tansu, memory storage), via confluent-kafka",
    "nats": "NATS JetStream (file storage), via nats-py",
    "redis": "Redis Streams (no persistence), via redis-py asyncio",
}


def adapter_class(name: str):
    module, cls = ADAPTERS[name]
    return getattr(importlib.import_module(module), cls)


def make_adapter(name: str, endpoint: dict):
    return adapter_class(name)(endpoint)


def client_missing(name: str) -> str | None:
    """None when the system's client library imports, else a one-line reason."""
    # find_spec, not import: the runner forks its workers, and a parent that has loaded (and
    # perhaps started threads in) a client library should not be forked.
    module = CLIENT_MODULES[name]
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    return None if found else f"client library {module} is not installed"
