"""NATS JetStream as a log: one stream per case with a subject per lane (`PREFIX.LANE`), pull
consumers (one durable consumer per group and lane, which is how JetStream keeps a group's
position), explicit ack of every message. Publishing awaits each PubAck, with up to
`PUBLISH_WINDOW` publishes in flight.

The server the bench starts uses JetStream's file storage (its default), which writes to the
page cache and does not fsync each message.
"""

import asyncio

from .amqp_style import ConfirmWindow
from .base import Consumer, Lanes, Producer, SystemAdapter

PUBLISH_WINDOW = 1000
FETCH_BATCH = 1000


class NatsProducer(Producer):
    def __init__(self, nc, js, prefix):
        self.nc, self.js, self.prefix = nc, js, prefix
        self.window = ConfirmWindow(PUBLISH_WINDOW)

    async def send_batch(self, items):
        publish, prefix, add = self.js.publish, self.prefix, self.window.add
        for lane, _key, body in items:
            await add(publish(f"{prefix}.{lane}", body, stream=prefix))

    async def flush(self):
        await asyncio.wait_for(self.window.drain(), 120)

    async def close(self):
        await self.nc.close()


class NatsConsumer(Consumer):
    def __init__(self, nc, subs, ack_each):
        self.nc, self.subs, self.ack_each = nc, subs, ack_each

    async def poll(self, timeout):
        import nats.errors
        out = []
        per = max(0.01, timeout / len(self.subs))
        for sub in self.subs:
            try:
                msgs = await sub.fetch(FETCH_BATCH, timeout=per)
            except (nats.errors.TimeoutError, asyncio.TimeoutError):
                continue
            for m in msgs:
                out.append(m.data)
                if self.ack_each:
                    await m.ack()
        return out

    async def close(self):
        await self.nc.close()


class NatsAdapter(SystemAdapter):
    name = "nats"
    paradigm = "log"
    client = "nats-py"

    @classmethod
    def client_version(cls):
        from importlib.metadata import version
        return f"nats-py {version('nats-py')}"

    async def _connect(self):
        import nats
        nc = await nats.connect(self.endpoint["url"], max_reconnect_attempts=0,
                                connect_timeout=5)
        return nc, nc.jetstream()

    def settings(self, case):
        return {"durability": "JetStream file storage (page cache, not fsynced per message)",
                "publish": f"await each PubAck, window {PUBLISH_WINDOW}",
                "consume": f"pull consumers, fetch {FETCH_BATCH}, explicit ack of every message"}

    async def setup(self, case, prefix):
        nc, js = await self._connect()
        try:
            await js.add_stream(name=prefix, subjects=[f"{prefix}.*"])
        finally:
            await nc.close()

    async def teardown(self, case, prefix):
        nc, js = await self._connect()
        try:
            await js.delete_stream(prefix)
        finally:
            await nc.close()

    async def open_producer(self, case, prefix, index):
        nc, js = await self._connect()
        return NatsProducer(nc, js, prefix)

    async def open_consumer(self, case, prefix, group, index):
        nc, js = await self._connect()
        subs = []
        for lane in Lanes.for_consumer(case.lanes, case.consumers, index):
            subs.append(await js.pull_subscribe(f"{prefix}.{lane}", durable=f"{group}{lane}",
                                                stream=prefix))
        return NatsConsumer(nc, subs, case.ack_each)
