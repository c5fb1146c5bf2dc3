"""Log adapter written against the aiokafka API: minilog through `clients.aio_log`, which
mirrors it (and real aiokafka against a Kafka broker would take the same code).

Same mapping as the confluent-style adapter (bench/systems/kafka_style.py): a fresh topic per
case, explicit partitions, consumers assigned their partitions and committing after every
batch. This one exists so that our two brokers can also be compared through asyncio clients
on both sides (minibroker is measured through its aio-pika style client).
"""

import importlib

from .base import Consumer, Lanes, Producer
from .kafka_style import CONSUME_BATCH, FETCH_WAIT_MS, LINGER_MS, MinilogAdapter

# aiokafka's default batch (16 KiB) holds one 16 or 64 KiB record, and a producer waits for
# each full batch to be sent before the next: 75-150 records/s at those sizes against either
# server; a producer of large records raises it. 512 KiB, not librdkafka's 1,000,000: our
# clients.aio_log closes a batch once it *reaches* the size, one record over, and a 64 KiB
# record past 1,000,000 exceeds the topic's 1 MiB max.message.bytes (MESSAGE_TOO_LARGE).
MAX_BATCH_BYTES = 512 * 1024


class AioKafkaProducer(Producer):
    def __init__(self, producer, topic):
        self.p, self.topic = producer, topic

    async def send_batch(self, items):
        send, topic = self.p.send, self.topic
        for lane, _key, body in items:
            await send(topic, body, partition=lane)

    async def flush(self):
        await self.p.flush()

    async def close(self):
        await self.p.stop()


class AioKafkaConsumer(Consumer):
    def __init__(self, consumer, commit_each):
        self.c, self.commit_each = consumer, commit_each

    async def poll(self, timeout):
        batches = await self.c.getmany(timeout_ms=int(timeout * 1000), max_records=CONSUME_BATCH)
        out = [r.value for records in batches.values() for r in records]
        if self.commit_each and out:
            await self.c.commit()
        return out

    async def close(self):
        await self.c.stop()


class MinilogAioAdapter(MinilogAdapter):
    """minilog through clients.aio_log; topics are managed with the blocking AdminClient."""

    name = "minilog-aio"
    client = "clients.aio_log"
    aio_module_name = "clients.aio_log"

    @classmethod
    def client_version(cls):
        return "clients.aio_log (this repo, aiokafka API)"

    def settings(self, case):
        s = super().settings(case)
        s["commit"] = "await commit() after every getmany"
        s.pop("consume", None)
        s["consume"] = f"getmany(max_records={CONSUME_BATCH})"
        s["max_batch_size"] = MAX_BATCH_BYTES
        return s

    async def open_producer(self, case, prefix, index):
        mod = importlib.import_module(self.aio_module_name)
        p = mod.AIOKafkaProducer(bootstrap_servers=self.endpoint["bootstrap"], acks=1,
                                 linger_ms=LINGER_MS, max_batch_size=MAX_BATCH_BYTES)
        await p.start()
        return AioKafkaProducer(p, prefix)

    async def open_consumer(self, case, prefix, group, index):
        mod = importlib.import_module(self.aio_module_name)
        c = mod.AIOKafkaConsumer(bootstrap_servers=self.endpoint["bootstrap"],
                                 group_id=f"{prefix}-{group}", enable_auto_commit=False,
                                 auto_offset_reset="earliest", fetch_max_wait_ms=FETCH_WAIT_MS)
        await c.start()
        parts = [mod.TopicPartition(prefix, p)
                 for p in Lanes.for_consumer(case.lanes, case.consumers, index)]
        c.assign(parts)
        await c.seek_to_beginning(*parts)
        return AioKafkaConsumer(c, case.ack_each)
