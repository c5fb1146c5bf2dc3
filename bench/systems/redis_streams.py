"""Redis Streams as a log: one stream per lane (partition), consumer groups read with
XREADGROUP and ack with XACK; producers pipeline XADDs, one round trip per batch.

The server the bench starts runs with persistence off (`--save "" --appendonly no`): Redis
Streams here are an in-memory log, not a durable one, and the report says so.
"""

from .base import Consumer, Lanes, Producer, SystemAdapter

READ_COUNT = 1000


def _stream(prefix, lane):
    return f"{prefix}:{lane}"


def _group(prefix, group):
    return f"{prefix}-{group}"


class RedisProducer(Producer):
    def __init__(self, r, prefix):
        self.r, self.prefix = r, prefix

    async def send_batch(self, items):
        pipe = self.r.pipeline(transaction=False)
        for lane, _key, body in items:
            pipe.xadd(_stream(self.prefix, lane), {b"d": body})
        await pipe.execute()

    async def close(self):
        await self.r.aclose()


class RedisConsumer(Consumer):
    def __init__(self, r, prefix, group, name, lanes, ack_each):
        self.r, self.group, self.name = r, _group(prefix, group), name
        self.streams = {_stream(prefix, lane): ">" for lane in lanes}
        self.ack_each = ack_each

    async def poll(self, timeout):
        resp = await self.r.xreadgroup(self.group, self.name, self.streams, count=READ_COUNT,
                                       block=max(1, int(timeout * 1000)))
        out = []
        for stream, entries in resp or []:
            if not entries:
                continue
            out.extend(fields[b"d"] for _id, fields in entries)
            if self.ack_each:
                await self.r.xack(stream, self.group, *[i for i, _ in entries])
        return out

    async def close(self):
        await self.r.aclose()


class RedisAdapter(SystemAdapter):
    name = "redis"
    paradigm = "log"
    client = "redis-py"

    @classmethod
    def client_version(cls):
        import redis
        return f"redis-py {redis.__version__} (asyncio)"

    def _connect(self):
        import redis.asyncio
        return redis.asyncio.Redis(host=self.endpoint["host"], port=self.endpoint["port"])

    def settings(self, case):
        return {"durability": "no persistence (save off, appendonly no): in memory only",
                "produce": "pipelined XADD, one round trip per batch of 100",
                "consume": f"XREADGROUP COUNT {READ_COUNT}, XACK per batch"}

    async def setup(self, case, prefix):
        r = self._connect()
        try:
            groups = list(case.groups) + (["replay"] if case.replay else [])
            for lane in range(case.lanes):
                for g in groups:
                    await r.xgroup_create(_stream(prefix, lane), _group(prefix, g), id="0",
                                          mkstream=True)
        finally:
            await r.aclose()

    async def teardown(self, case, prefix):
        r = self._connect()
        try:
            await r.delete(*[_stream(prefix, lane) for lane in range(case.lanes)])
        finally:
            await r.aclose()

    async def open_producer(self, case, prefix, index):
        return RedisProducer(self._connect(), prefix)

    async def open_consumer(self, case, prefix, group, index):
        lanes = Lanes.for_consumer(case.lanes, case.consumers, index)
        return RedisConsumer(self._connect(), prefix, group, f"c{index}", lanes, case.ack_each)
