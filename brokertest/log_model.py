"""A whole-broker model of a Kafka-style log, driven through a confluent-kafka-API client.

One hypothesis `RuleBasedStateMachine` produces keyed and unkeyed records to a topic of three
partitions (to a named partition or through the partitioner), reads back from random offsets
(`assign` at an offset), commits offsets for a group and reads them back, and restarts the
server. After every step the broker must agree with a plain model - a list of values per
partition:

- offsets are dense and increasing: each acknowledged record gets the next offset of its
  partition, and a read at offset N returns exactly the model's record N;
- per-key order: every record of a key lands in the same partition;
- committed offsets are what was committed, also after a restart;
- nothing acknowledged is lost by a restart.

`log_model(kafka, config, restart)` returns the state machine class for one client and broker:
`kafka` is a module with confluent-kafka's API (the real one, or this project's `clients.log`),
`config()` the client settings that reach the broker, `restart()` restarts it on its data.
"""

import uuid

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

PARTITIONS = 3


def log_model(kafka, config, restart=None, admin=None):
    """The model's state machine (see the module docstring); `admin` is the module with
    `AdminClient` and `NewTopic` (default: `kafka.admin`)."""

    class LogBrokerModel(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            self.topic = f"m{uuid.uuid4().hex[:8]}"
            admin_mod = admin or kafka.admin
            client = admin_mod.AdminClient(config())
            for f in client.create_topics([admin_mod.NewTopic(self.topic, num_partitions=PARTITIONS,
                                                              replication_factor=1)]).values():
                f.result(30)
            self.log = {p: [] for p in range(PARTITIONS)}
            self.key_partition = {}
            self.committed = {}
            self.producer = kafka.Producer({**config(), "acks": "all", "linger.ms": 0})
            self.n = 0

        def teardown(self):
            self.producer.flush(10)

        @rule(key=st.sampled_from([None, b"k1", b"k2", b"k3"]),
              partition=st.sampled_from([None, 0, 1, 2]))
        def produce(self, key, partition):
            self.n += 1
            value = b"v%d" % self.n
            reports = []
            kwargs = {"key": key, "on_delivery": lambda err, msg: reports.append((err, msg))}
            if partition is not None:
                kwargs["partition"] = partition
            self.producer.produce(self.topic, value, **kwargs)
            assert self.producer.flush(15) == 0, "the produce was not acknowledged"
            err, msg = reports[0]
            assert err is None, err
            p = msg.partition()
            if partition is not None:
                assert p == partition
            elif key is not None:
                assert self.key_partition.setdefault(key, p) == p, f"key {key!r} moved partition"
            assert msg.offset() == len(self.log[p]), \
                f"partition {p}: offset {msg.offset()}, the model's next is {len(self.log[p])}"
            self.log[p].append(value)

        @precondition(lambda self: any(self.log.values()))
        @rule(data=st.data())
        def read_at(self, data):
            p = data.draw(st.sampled_from([p for p in range(PARTITIONS) if self.log[p]]))
            offset = data.draw(st.integers(0, len(self.log[p]) - 1))
            c = kafka.Consumer({**config(), "group.id": f"{self.topic}-reader",
                                "enable.auto.commit": False})
            try:
                c.assign([kafka.TopicPartition(self.topic, p, offset)])
                got = []
                for _ in range(40):
                    got += [m for m in c.consume(10, 0.25) if m.error() is None]
                    if got:
                        break
                assert got, f"nothing read at {p}/{offset}"
                assert (got[0].offset(), got[0].value()) == (offset, self.log[p][offset]), \
                    f"read at {p}/{offset} returned offset {got[0].offset()} {got[0].value()!r}"
                for m in got:
                    assert m.value() == self.log[p][m.offset()]
            finally:
                c.close()

        @rule(partition=st.integers(0, PARTITIONS - 1), data=st.data())
        def commit(self, partition, data):
            offset = data.draw(st.integers(0, len(self.log[partition])))
            c = kafka.Consumer({**config(), "group.id": f"{self.topic}-g", "enable.auto.commit": False})
            try:
                tp = kafka.TopicPartition(self.topic, partition, offset)
                c.commit(offsets=[tp], asynchronous=False)
                self.committed[partition] = offset
                self._check_committed(c)
            finally:
                c.close()

        def _check_committed(self, c):
            tps = [kafka.TopicPartition(self.topic, p) for p in sorted(self.committed)]
            got = {tp.partition: tp.offset for tp in c.committed(tps, timeout=15)}
            assert got == self.committed, f"committed offsets {got}, the model's {self.committed}"

        @precondition(lambda self: restart is not None)
        @rule()
        def restart_server(self):
            self.producer.flush(10)
            restart()
            self.producer = kafka.Producer({**config(), "acks": "all", "linger.ms": 0})
            if self.committed:
                c = kafka.Consumer({**config(), "group.id": f"{self.topic}-g", "enable.auto.commit": False})
                try:
                    self._check_committed(c)
                finally:
                    c.close()

    return LogBrokerModel
