"""brokertest: real minibroker and minilog servers for your own test suite, no Docker.

Installing this project installs a pytest plugin (brokertest/plugin.py, entry point `pytest11`)
whose fixtures start a server on free ports in a temporary directory and stop it after the
test: `minibroker` (AMQP 0-9-1 for pika, aio-pika, kombu, Celery: `.amqp_url`), `minilog` (the
Kafka protocol for confluent-kafka, aiokafka, kafka-python: `.kafka_bootstrap`), and the
factories `minibroker_factory` / `minilog_factory` for more servers, server options, or a
subprocess you can kill. The same classes serve scripts outside pytest
(brokertest/servers.py: `ServerThread`, `ServerProcess`).
"""

from .servers import ServerProcess, ServerThread
from .waiting import async_wait_until, wait_until

__all__ = ["ServerProcess", "ServerThread", "async_wait_until", "wait_until"]
