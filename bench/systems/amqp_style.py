"""Routing-queue adapters written once against the aio-pika API: RabbitMQ through aio-pika and
minibroker through `clients.aio_broker`, which mirrors it.

Topology per case shape (see bench/workloads.py): `work` is one queue with competing consumers
(default exchange), `fanout` a fanout exchange with one queue per group, `keyed` a direct
exchange with one queue per lane and routing key = lane number - consistent routing by key, so
each driver's updates stay in one queue, in order.

Publishing uses publisher confirms with a window of outstanding publishes (`CONFIRM_WINDOW`);
consumers use prefetch `PREFETCH` and ack each message, as the workloads ask.
"""

import asyncio
import importlib

from .base import Consumer, Lanes, Producer, SystemAdapter, Unsupported

CONFIRM_WINDOW = 1000
PREFETCH = 1000


def _queue_names(case, prefix: str, group: str, index: int) -> list[str]:
    if case.shape == "work":
        return [f"{prefix}.q"]
    if case.shape == "fanout":
        return [f"{prefix}.{group}"]
    return [f"{prefix}.q{lane}" for lane in Lanes.for_consumer(case.lanes, case.consumers, index)]


class AioPikaProducer(Producer):
    def __init__(self, mod, conn, channel, exchange, case, prefix):
        self.mod, self.conn, self.channel, self.exchange = mod, conn, channel, exchange
        self.case, self.prefix = case, prefix
        self.pending: set = set()
        self.mode = (mod.DeliveryMode.PERSISTENT if case.persistent
                     else mod.DeliveryMode.NOT_PERSISTENT)

    def _routing_key(self, lane: int) -> str:
        if self.case.shape == "work":
            return f"{self.prefix}.q"
        if self.case.shape == "fanout":
            return ""
        return str(lane)

    async def send_batch(self, items):
        Message = self.mod.Message
        for lane, _key, body in items:
            msg = Message(body, delivery_mode=self.mode)
            self.pending.add(asyncio.ensure_future(
                self.exchange.publish(msg, routing_key=self._routing_key(lane))))
            if len(self.pending) >= CONFIRM_WINDOW:
                done, self.pending = await asyncio.wait(
                    self.pending, return_when=asyncio.FIRST_COMPLETED)
                for d in done:
                    d.result()

    async def flush(self):
        if self.pending:
            await asyncio.wait_for(asyncio.gather(*self.pending), 120)
            self.pending = set()

    async def close(self):
        await self.conn.close()


class AioPikaConsumer(Consumer):
    def __init__(self, conn, ack_each: bool):
        self.conn = conn
        self.ack_each = ack_each
        self.buffer: list[bytes] = []
        self.arrived = asyncio.Event()

    async def on_message(self, message):
        self.buffer.append(message.body)
        if self.ack_each:
            await message.ack()
        self.arrived.set()

    async def poll(self, timeout):
        if not self.buffer:
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), timeout)
            except asyncio.TimeoutError:
                return []
        out, self.buffer = self.buffer, []
        return out

    async def close(self):
        await self.conn.close()


class AioPikaStyleAdapter(SystemAdapter):
    paradigm = "queue"
    module_name = "aio_pika"

    def _mod(self):
        return importlib.import_module(self.module_name)

    async def _connect(self):
        return await self._mod().connect(self.endpoint["url"])

    def check(self, case):
        if case.replay:
            raise Unsupported("a queue cannot replay: a message is deleted once acked, so a new "
                              "consumer has no history to read")

    def settings(self, case):
        return {"durability": ("durable queue, persistent messages" if case.persistent
                               else "transient messages"),
                "publisher_confirms": f"on, window {CONFIRM_WINDOW}",
                "prefetch": PREFETCH, "ack": "manual, every message"}

    async def _exchange(self, mod, channel, case, prefix):
        if case.shape == "work":
            return channel.default_exchange
        kind = mod.ExchangeType.FANOUT if case.shape == "fanout" else mod.ExchangeType.DIRECT
        return await channel.declare_exchange(f"{prefix}.x", kind, durable=case.persistent)

    async def setup(self, case, prefix):
        mod = self._mod()
        conn = await self._connect()
        try:
            channel = await conn.channel()
            exchange = await self._exchange(mod, channel, case, prefix)
            if case.shape == "work":
                await channel.declare_queue(f"{prefix}.q", durable=case.persistent)
            elif case.shape == "fanout":
                for group in case.groups:
                    q = await channel.declare_queue(f"{prefix}.{group}", durable=case.persistent)
                    await q.bind(exchange, routing_key="")
            else:
                for lane in range(case.lanes):
                    q = await channel.declare_queue(f"{prefix}.q{lane}", durable=case.persistent)
                    await q.bind(exchange, routing_key=str(lane))
        finally:
            await conn.close()

    async def teardown(self, case, prefix):
        conn = await self._connect()
        try:
            channel = await conn.channel()
            names = {n for g in case.groups for i in range(case.consumers)
                     for n in _queue_names(case, prefix, g, i)}
            for name in sorted(names):
                await channel.queue_delete(name)
            if case.shape != "work":
                await channel.exchange_delete(f"{prefix}.x")
        finally:
            await conn.close()

    async def open_producer(self, case, prefix, index):
        mod = self._mod()
        conn = await self._connect()
        channel = await conn.channel(publisher_confirms=True)
        exchange = await self._exchange(mod, channel, case, prefix)
        return AioPikaProducer(mod, conn, channel, exchange, case, prefix)

    async def open_consumer(self, case, prefix, group, index):
        conn = await self._connect()
        channel = await conn.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        consumer = AioPikaConsumer(conn, case.ack_each)
        for name in _queue_names(case, prefix, group, index):
            queue = await channel.declare_queue(name, durable=case.persistent)
            await queue.consume(consumer.on_message, no_ack=not case.ack_each)
        return consumer


class RabbitMQAdapter(AioPikaStyleAdapter):
    name = "rabbitmq"
    client = "aio-pika"

    @classmethod
    def client_version(cls):
        import aio_pika
        return f"aio-pika {aio_pika.__version__}"

    def settings(self, case):
        s = super().settings(case)
        if case.persistent:
            s["durability"] += " (fsynced before the confirm)"
        return s


class MinibrokerAdapter(AioPikaStyleAdapter):
    name = "minibroker"
    client = "clients.aio_broker"
    module_name = "clients.aio_broker"

    @classmethod
    def client_version(cls):
        return "clients.aio_broker (this repo)"
