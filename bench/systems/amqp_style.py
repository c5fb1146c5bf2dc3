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


class ConfirmWindow:
    """At most `size` publishes awaiting their confirm; the first failure is re-raised.

    Done-callbacks rather than asyncio.wait over the pending set: waiting on a set of a
    thousand futures registers a thousand callbacks per wake-up, which capped the publisher at
    ~2k msgs/s.
    """

    def __init__(self, size: int):
        self.size = size
        self.outstanding = 0
        self.error: BaseException | None = None
        self.room: asyncio.Future | None = None

    def _done(self, fut: asyncio.Future) -> None:
        self.outstanding -= 1
        if not fut.cancelled() and fut.exception() is not None and self.error is None:
            self.error = fut.exception()
        if self.room is not None and not self.room.done() and (
                self.outstanding <= self.size // 2 or self.error is not None):
            self.room.set_result(None)

    async def add(self, coro) -> None:
        if self.error is not None:
            raise self.error
        fut = asyncio.ensure_future(coro)
        self.outstanding += 1
        fut.add_done_callback(self._done)
        if self.outstanding >= self.size:
            await self._wait_until(lambda: self.outstanding <= self.size // 2)

    async def drain(self) -> None:
        await self._wait_until(lambda: self.outstanding == 0)
        if self.error is not None:
            raise self.error

    async def _wait_until(self, cond) -> None:
        while not cond() and self.error is None:
            self.room = asyncio.get_running_loop().create_future()
            if self.outstanding == 0:
                break
            await self.room
            if self.outstanding == 0:
                break


class AioPikaProducer(Producer):
    def __init__(self, mod, conn, channel, exchange, case, prefix):
        self.mod, self.conn, self.channel, self.exchange = mod, conn, channel, exchange
        self.case, self.prefix = case, prefix
        self.window = ConfirmWindow(CONFIRM_WINDOW)
        self.mode = (mod.DeliveryMode.PERSISTENT if case.persistent
                     else mod.DeliveryMode.NOT_PERSISTENT)

    def _routing_key(self, lane: int) -> str:
        if self.case.shape == "work":
            return f"{self.prefix}.q"
        if self.case.shape == "fanout":
            return ""
        return str(lane)

    async def send_batch(self, items):
        Message, publish, add = self.mod.Message, self.exchange.publish, self.window.add
        for lane, _key, body in items:
            await add(publish(Message(body, delivery_mode=self.mode),
                              routing_key=self._routing_key(lane)))

    async def flush(self):
        await asyncio.wait_for(self.window.drain(), 120)

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

    def settings(self, case):
        s = super().settings(case)
        if case.persistent:
            s["durability"] += " (--fsync always, the default: confirmed after fsync)"
        return s
