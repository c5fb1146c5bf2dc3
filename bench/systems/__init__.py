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
    # the real client libraries against our servers' AMQP and Kafka doors (same_client.py)
    "minibroker-amqp": ("bench.systems.same_client", "MinibrokerAioPikaAdapter"),
    "minibroker-amqp-pika": ("bench.systems.same_client", "MinibrokerRealPikaAdapter"),
    "minilog-kafka": ("bench.systems.same_client", "MinilogConfluentAdapter"),
    "minilog-kafka-aiokafka": ("bench.systems.same_client", "MinilogAioKafkaAdapter"),
    "kafka-aiokafka": ("bench.systems.same_client", "AioKafkaAdapter"),
}

OWN = ("minibroker", "minibroker-pika", "minilog", "minilog-aio",
       "minibroker-amqp", "minibroker-amqp-pika", "minilog-kafka", "minilog-kafka-aiokafka")
OWN_MODULES = {"minibroker": "minibroker", "minibroker-pika": "minibroker", "minilog": "minilog",
               "minilog-aio": "minilog", "minibroker-amqp": "minibroker",
               "minibroker-amqp-pika": "minibroker", "minilog-kafka": "minilog",
               "minilog-kafka-aiokafka": "minilog"}
# Which front door of our server a system's client talks to (the msgpack one if not named).
DOORS = {"minibroker-amqp": "amqp", "minibroker-amqp-pika": "amqp", "minilog-kafka": "kafka",
         "minilog-kafka-aiokafka": "kafka"}
PEERS = ("rabbitmq", "rabbitmq-pika", "kafka", "kafka-aiokafka", "nats", "redis")
# Pairs of (peer, ours) driven by the same real client library: a server-against-server row.
SAME_CLIENT_PAIRS = (("rabbitmq-pika", "minibroker-amqp-pika", "pika"),
                     ("rabbitmq", "minibroker-amqp", "aio-pika"),
                     ("kafka", "minilog-kafka", "confluent-kafka"),
                     ("kafka-aiokafka", "minilog-kafka-aiokafka", "aiokafka"))

# The Python module each adapter needs; a missing one skips the system with one line.
CLIENT_MODULES = {"minibroker": "clients.aio_broker", "minilog": "clients.log",
                  "minilog-aio": "clients.aio_log", "minibroker-pika": "clients.broker",
                  "rabbitmq-pika": "pika",
                  "rabbitmq": "aio_pika", "kafka": "confluent_kafka", "nats": "nats",
                  "redis": "redis", "minibroker-amqp": "aio_pika", "minibroker-amqp-pika": "pika",
                  "minilog-kafka": "confluent_kafka", "minilog-kafka-aiokafka": "aiokafka",
                  "kafka-aiokafka": "aiokafka"}

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
    "minibroker-amqp": "routing queue (this repo) on its AMQP door, via the real aio-pika",
    "minibroker-amqp-pika": "routing queue (this repo) on its AMQP door, via the real pika (blocking, no confirms)",
    "minilog-kafka": "log (this repo) on its Kafka door, via the real confluent-kafka",
    "minilog-kafka-aiokafka": "log (this repo) on its Kafka door, via the real aiokafka",
    "kafka-aiokafka": "Kafka protocol (tansu, memory storage), via the real aiokafka",
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
