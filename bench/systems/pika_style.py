"""Routing-queue adapters written once against pika's blocking API: RabbitMQ through pika and
minibroker through `clients.broker`, which mirrors it - the blocking comparison beside the
asyncio one in bench/systems/amqp_style.py.

pika's publisher confirms make every `basic_publish` wait for its own confirm (one round trip
per message), which no throughput-minded pika program uses; so these producers publish without
confirms, as pika programs usually do, and `flush` ends with a synchronous call on the same
channel, which the broker answers only after it has handled every earlier publish. The report
states "confirms: off" beside the figures. Same topology as the asyncio adapter.

Equal work on both servers: a message carries properties only when the case needs them
(persistent delivery), and consumers ack once per poll with `multiple` - what our pika-style
client does by itself with per-message acks - so both servers see the same ack frames.
"""

import importlib

from .amqp_style import PREFETCH, AioPikaStyleAdapter, _queue_names
from .base import Consumer, Producer


class PikaProducer(Producer):
    def __init__(self, conn, channel, props, exchange, case, prefix):
        self.conn, self.ch, self.props, self.exchange = conn, channel, props, exchange
        self.case, self.prefix = case, prefix

    async def send_batch(self, items):
        publish, ex, props = self.ch.basic_publish, self.exchange, self.props
        shape, prefix = self.case.shape, self.prefix
        for lane, _key, body in items:
            rk = f"{prefix}.q" if shape == "work" else "" if shape == "fanout" else str(lane)
            publish(ex, rk, body, props)

    async def flush(self):
        # A synchronous method after the publishes: its reply means they were all handled.
        self.ch.queue_declare(_queue_names(self.case, self.prefix, self.case.groups[0], 0)[0],
                              passive=True)

    async def close(self):
        self.conn.close()


class PikaConsumer(Consumer):
    def __init__(self, conn, channel, ack_each):
        self.conn, self.ch, self.ack_each = conn, channel, ack_each
        self.buffer: list[bytes] = []
        self.last_tag = 0

    def on_message(self, ch, method, properties, body):
        self.buffer.append(body)
        self.last_tag = method.delivery_tag

    async def poll(self, timeout):
        if not self.buffer:
            self.conn.process_data_events(time_limit=timeout)
        out, self.buffer = self.buffer, []
        if out and self.ack_each:
            self.ch.basic_ack(self.last_tag, multiple=True)
        return out

    async def close(self):
        self.conn.close()


class PikaStyleAdapter(AioPikaStyleAdapter):
    module_name = "pika"

    def _mod(self):
        return importlib.import_module(self.module_name)

    def _blocking(self):
        mod = self._mod()
        ep = self.endpoint
        return mod.BlockingConnection(mod.ConnectionParameters(host=ep["host"], port=ep["port"]))

    def settings(self, case):
        s = super().settings(case)
        s["publisher_confirms"] = "off (blocking publish; flush ends with a synchronous call)"
        s["ack"] = "manual, multiple=True once per poll (same ack frames on both servers)"
        s["properties"] = "delivery_mode=2 when persistent, none otherwise"
        return s

    async def setup(self, case, prefix):
        conn = self._blocking()
        try:
            ch = conn.channel()
            durable = case.persistent
            if case.shape == "work":
                ch.queue_declare(f"{prefix}.q", durable=durable)
                return
            kind = "fanout" if case.shape == "fanout" else "direct"
            ch.exchange_declare(f"{prefix}.x", exchange_type=kind, durable=durable)
            if case.shape == "fanout":
                for group in case.groups:
                    ch.queue_declare(f"{prefix}.{group}", durable=durable)
                    ch.queue_bind(f"{prefix}.{group}", f"{prefix}.x", routing_key="")
            else:
                for lane in range(case.lanes):
                    ch.queue_declare(f"{prefix}.q{lane}", durable=durable)
                    ch.queue_bind(f"{prefix}.q{lane}", f"{prefix}.x", routing_key=str(lane))
        finally:
            conn.close()

    async def teardown(self, case, prefix):
        conn = self._blocking()
        try:
            ch = conn.channel()
            names = {n for g in case.groups for i in range(case.consumers)
                     for n in _queue_names(case, prefix, g, i)}
            for name in sorted(names):
                ch.queue_delete(name)
            if case.shape != "work":
                ch.exchange_delete(f"{prefix}.x")
        finally:
            conn.close()

    async def open_producer(self, case, prefix, index):
        mod = self._mod()
        conn = self._blocking()
        ch = conn.channel()
        props = mod.BasicProperties(delivery_mode=2) if case.persistent else None
        exchange = "" if case.shape == "work" else f"{prefix}.x"
        return PikaProducer(conn, ch, props, exchange, case, prefix)

    async def open_consumer(self, case, prefix, group, index):
        conn = self._blocking()
        ch = conn.channel()
        ch.basic_qos(prefetch_count=PREFETCH)
        consumer = PikaConsumer(conn, ch, case.ack_each)
        for name in _queue_names(case, prefix, group, index):
            ch.basic_consume(name, consumer.on_message, auto_ack=not case.ack_each)
        return consumer


class RabbitMQPikaAdapter(PikaStyleAdapter):
    name = "rabbitmq-pika"
    client = "pika"

    @classmethod
    def client_version(cls):
        from importlib.metadata import version
        return f"pika {version('pika')}"

    def settings(self, case):
        s = super().settings(case)
        if case.persistent:
            s["durability"] += " (no confirms, so nothing waits for the fsync)"
        return s


class MinibrokerPikaAdapter(PikaStyleAdapter):
    name = "minibroker-pika"
    client = "clients.broker"
    module_name = "clients.broker"

    @classmethod
    def client_version(cls):
        return "clients.broker (this repo, pika API)"

    def settings(self, case):
        s = super().settings(case)
        if case.persistent:
            s["durability"] += " (no confirms, so nothing waits for the fsync)"
        return s
