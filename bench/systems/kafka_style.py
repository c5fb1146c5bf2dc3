"""Log adapters written once against the confluent-kafka API: a Kafka-protocol broker (tansu)
through confluent-kafka, and minilog through `clients.log`, which mirrors it.

Each case gets a fresh topic with `case.lanes` partitions. Producers name the partition
explicitly (the runner picks it: key mod partitions for keyed shapes, round robin for work
queues) so every system routes identically; records carry no key, since the partition is
already chosen and a key would only be hashed for nothing (the body carries the key the
consumers check order by). Consumers set librdkafka's `queued.min.messages` to
`QUEUED_MIN_MESSAGES` on every system: its default (100k) holds a replay back whatever the
broker (tansu went from ~200k to ~540k records/s with 1M). Consumers are *assigned* their partitions and
commit offsets to their group after every poll: group rebalancing is not what these workloads
measure, and tansu's group joins take ~20 s (bench/README.md says so).
"""

import importlib

from .base import Consumer, Lanes, Producer, SystemAdapter

LINGER_MS = 5
# librdkafka's default 500 ms long poll showed as ~180 ms p50 at 1k msgs/s against tansu; a
# consumer tuned for latency sets it low, and both log adapters get the same value.
FETCH_WAIT_MS = 10
CONSUME_BATCH = 1000
CONSUME_WAIT_S = 0.002
QUEUED_MIN_MESSAGES = 1_000_000


class ConfluentProducer(Producer):
    def __init__(self, producer, topic):
        self.p, self.topic = producer, topic

    async def send_batch(self, items):
        produce, topic = self.p.produce, self.topic
        for lane, _key, body in items:
            while True:
                try:
                    produce(topic, body, partition=lane)
                    break
                except BufferError:
                    self.p.poll(0.01)
        self.p.poll(0)

    async def flush(self):
        left = self.p.flush(120)
        if left:
            raise RuntimeError(f"{left} records still unacknowledged after 120 s")


class ConfluentConsumer(Consumer):
    def __init__(self, consumer, commit_each: bool):
        self.c, self.commit_each = consumer, commit_each

    async def poll(self, timeout):
        # consume() returns when the batch is full *or* the timeout passes, so a long timeout
        # holds early messages back at low rates (50 ms showed as ~30 ms p50 at 1k msgs/s).
        msgs = self.c.consume(CONSUME_BATCH, min(timeout, CONSUME_WAIT_S))
        if not msgs:
            return []
        out = []
        for m in msgs:
            if m.error() is None:
                out.append(m.value())
            elif not _is_partition_eof(m):
                raise RuntimeError(f"consume error: {m.error()}")
        if self.commit_each and out:
            self.c.commit(asynchronous=True)
        return out

    async def close(self):
        self.c.close()


def _is_partition_eof(m) -> bool:
    err = m.error()
    return getattr(err, "code", lambda: None)() == -191   # _PARTITION_EOF


class ConfluentStyleAdapter(SystemAdapter):
    paradigm = "log"
    module_name = "confluent_kafka"
    admin_module_name = "confluent_kafka.admin"
    acks = "1"

    def _mod(self):
        return importlib.import_module(self.module_name)

    def _conf(self) -> dict:
        return {"bootstrap.servers": self.endpoint["bootstrap"]}

    def settings(self, case):
        return {"acks": self.acks, "linger.ms": LINGER_MS, "fetch.wait.max.ms": FETCH_WAIT_MS,
                "consume": f"consume({CONSUME_BATCH}, timeout {CONSUME_WAIT_S * 1000:g} ms)",
                "commit": "async, after every poll", "queued.min.messages": QUEUED_MIN_MESSAGES,
                "records": "no key; the partition is named",
                "assignment": "manual (assign), offsets committed to the group"}

    async def setup(self, case, prefix):
        admin_mod = importlib.import_module(self.admin_module_name)
        admin = admin_mod.AdminClient(self._conf())
        futures = admin.create_topics([admin_mod.NewTopic(prefix, num_partitions=case.lanes,
                                                          replication_factor=1)])
        for f in futures.values():
            f.result(30)

    async def teardown(self, case, prefix):
        admin_mod = importlib.import_module(self.admin_module_name)
        admin = admin_mod.AdminClient(self._conf())
        for f in admin.delete_topics([prefix]).values():
            try:
                f.result(30)
            except Exception:
                pass     # a broker without topic deletion keeps it; names are unique per case

    async def open_producer(self, case, prefix, index):
        p = self._mod().Producer({**self._conf(), "linger.ms": LINGER_MS, "acks": self.acks})
        return ConfluentProducer(p, prefix)

    async def open_consumer(self, case, prefix, group, index):
        mod = self._mod()
        c = mod.Consumer({**self._conf(), "group.id": f"{prefix}-{group}",
                          "enable.auto.commit": False, "auto.offset.reset": "earliest",
                          "fetch.wait.max.ms": FETCH_WAIT_MS,
                          "queued.min.messages": QUEUED_MIN_MESSAGES})
        parts = Lanes.for_consumer(case.lanes, case.consumers, index)
        c.assign([mod.TopicPartition(prefix, p, mod.OFFSET_BEGINNING) for p in parts])
        return ConfluentConsumer(c, case.ack_each)


class KafkaAdapter(ConfluentStyleAdapter):
    name = "kafka"
    client = "confluent-kafka"

    @classmethod
    def client_version(cls):
        import confluent_kafka
        from importlib.metadata import version
        return f"confluent-kafka {version('confluent-kafka')} (librdkafka {confluent_kafka.libversion()[0]})"

    def settings(self, case):
        s = super().settings(case)
        s["durability"] = "tansu memory storage: nothing is durable"
        return s


class MinilogAdapter(ConfluentStyleAdapter):
    name = "minilog"
    client = "clients.log"
    module_name = "clients.log"
    admin_module_name = "clients.log.admin"

    @classmethod
    def client_version(cls):
        return "clients.log (this repo)"

    def settings(self, case):
        s = super().settings(case)
        s["durability"] = ("acks=1: appended to the page cache (flush.messages default: never "
                           "fsynced per batch)")
        return s
