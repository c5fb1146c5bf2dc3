"""The real client libraries against our servers' AMQP and Kafka front doors.

With these, a row of the report compares *servers* through one and the same client: the real
pika and aio-pika against RabbitMQ and against minibroker's AMQP door (`--amqp-port`), the real
confluent-kafka and aiokafka against tansu and against minilog's Kafka door (`--kafka-port`).
The workload code is the peers' own adapters unchanged; only the endpoint and the durability
words differ. Rows through our own clients (`minibroker`, `minilog`...) stay beside them: they
say what each whole stack delivers to a Python program.
"""

from .aiokafka_style import MinilogAioAdapter
from .amqp_style import RabbitMQAdapter
from .kafka_style import KafkaAdapter
from .pika_style import RabbitMQPikaAdapter

MINIBROKER_DURABILITY = "durable queue, persistent messages (--fsync always: confirmed after fsync)"
MINILOG_DURABILITY = "acks=1: appended to the page cache (flush.messages default: never fsynced per batch)"


class MinibrokerAioPikaAdapter(RabbitMQAdapter):
    name = "minibroker-amqp"

    def settings(self, case):
        s = super().settings(case)
        if case.persistent:
            s["durability"] = MINIBROKER_DURABILITY
        return s


class MinibrokerRealPikaAdapter(RabbitMQPikaAdapter):
    name = "minibroker-amqp-pika"


class MinilogConfluentAdapter(KafkaAdapter):
    name = "minilog-kafka"

    def settings(self, case):
        return dict(super().settings(case), durability=MINILOG_DURABILITY)


class AioKafkaAdapter(MinilogAioAdapter):
    """The real aiokafka; topics made with confluent-kafka's AdminClient over the same door."""

    name = "kafka-aiokafka"
    client = "aiokafka"
    module_name = "confluent_kafka"
    admin_module_name = "confluent_kafka.admin"
    aio_module_name = "aiokafka"

    @classmethod
    def client_version(cls):
        from importlib.metadata import version
        return f"aiokafka {version('aiokafka')}"

    def settings(self, case):
        s = super().settings(case)
        s["durability"] = "tansu memory storage: nothing is durable"
        return s


class MinilogAioKafkaAdapter(AioKafkaAdapter):
    name = "minilog-kafka-aiokafka"

    def settings(self, case):
        return dict(super().settings(case), durability=MINILOG_DURABILITY)
