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

It also runs a consumer group on the topic: members join (`subscribe`), leave (`close`) and
time out (a member in a child process holds partitions, is killed with SIGKILL, and must be
evicted by the broker when its short session timeout passes, since it never says goodbye);
members read and commit what they own. Invariants of the group:

- never two owners: no partition is assigned to two of the test process's members at once
  (the eager protocol revokes everything before it hands anything out);
- exactly one owner after a rebalance: once every live member has been given its assignment,
  the assignments are disjoint and cover every partition, and as many members own partitions
  as there are partitions to go round;
- committed offsets survive rebalances: a member reads a partition from exactly the offset
  the group last committed for it (0 if none), whoever committed it, record by record as in
  the model; a commit the broker refused (the group was rebalancing) is not applied.

`log_model(kafka, config, restart)` returns the state machine class for one client and broker:
`kafka` is a module with confluent-kafka's API (the real one, or this project's `clients.log`),
`config()` the client settings that reach the broker, `restart()` restarts it on its data.
`session_timeout_ms` is the timing-out member's session (Kafka's brokers refuse less than 6000
by default, `group.min.session.timeout.ms`; minilog takes 10 ms and up).
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

PARTITIONS = 3
MAX_MEMBERS = PARTITIONS + 1      # one more member than partitions: someone owns nothing
MAX_TIMEOUTS = 2                  # members timed out per run
REBALANCE_DEADLINE = 60.0         # seconds for a group to settle after a change, on a busy machine

# Choices among what the broker made (which partition unkeyed records went to, how many members
# are left) are drawn as plain numbers and taken modulo: a draw whose bounds depended on the
# broker would make hypothesis's replay of a failure inconsistent and hide the shortest one.
CHOICE = st.integers(0, 2**16 - 1)


def pick(choice: int, items: list):
    return items[choice % len(items)]

# A group member in a child process: prints each assignment it is given as a JSON list and
# "revoked" when it gives them up, polls until killed. It never closes, so the broker only learns it is gone when its session expires.
_CHILD_MEMBER = """
import importlib, json, sys
kafka = importlib.import_module(sys.argv[1])
consumer = kafka.Consumer(json.loads(sys.argv[2]))
def on_assign(c, partitions):
    print(json.dumps(sorted(tp.partition for tp in partitions)), flush=True)
consumer.subscribe([sys.argv[3]], on_assign=on_assign,
                   on_revoke=lambda c, partitions: print("revoked", flush=True))
while True:
    consumer.poll(0.1)
"""


class GroupMember:
    """One subscribed consumer of the model's group, in this process and polled by the model.

    `owned` is what the broker's latest rebalance gave it (kept by the rebalance callbacks,
    which run inside `poll`), `next` the offset it must read next in each owned partition,
    `assignments` how many assignments it has been given."""

    def __init__(self, kafka, conf, topic, model):
        self.model = model
        self.owned = set()
        self.next = {}
        self.assignments = 0
        self.consumer = kafka.Consumer(conf)
        self.consumer.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _on_assign(self, consumer, partitions):
        self.owned = {tp.partition for tp in partitions}
        # A new owner starts where the group's last commit says (no commit: the beginning).
        self.next = {p: self.model.group_committed.get(p, 0) for p in self.owned}
        self.assignments += 1
        self.model.check_never_two_owners()

    def _on_revoke(self, consumer, partitions):
        self.owned -= {tp.partition for tp in partitions}
        self.next = {p: o for p, o in self.next.items() if p in self.owned}

    def poll(self, timeout: float) -> None:
        for m in self.consumer.consume(50, timeout):
            if m.error() is not None:
                continue
            p, offset = m.partition(), m.offset()
            assert p in self.owned, f"a member read partition {p}, which it does not own ({self.owned})"
            assert offset == self.next[p], \
                f"partition {p}: a member read offset {offset}, the group's position is {self.next[p]}"
            assert m.value() == self.model.log[p][offset], \
                f"partition {p} offset {offset}: {m.value()!r}, the model's {self.model.log[p][offset]!r}"
            self.next[p] = offset + 1


class ChildMember:
    """A group member in a child process (`_CHILD_MEMBER`), there to be killed with SIGKILL."""

    def __init__(self, kafka, conf, topic):
        self.owned = set()
        self.assignments = 0
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self.proc = subprocess.Popen([sys.executable, "-c", _CHILD_MEMBER, kafka.__name__, json.dumps(conf),
                                      topic], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            if line.strip() == b"revoked":
                self.owned = set()
            else:
                self.owned = set(json.loads(line))
                self.assignments += 1

    def poll(self, timeout: float) -> None:
        assert self.proc.poll() is None, f"the child member exited with status {self.proc.returncode}"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def log_model(kafka, config, restart=None, admin=None, session_timeout_ms=1000):
    """The model's state machine (see the module docstring); `admin` is the module with
    `AdminClient` and `NewTopic` (default: `kafka.admin`); `session_timeout_ms` is the session
    of the member that times out."""

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
            self.group = f"{self.topic}-members"
            self.members = []
            self.group_committed = {}
            self.timeouts = 0

        def teardown(self):
            self.producer.flush(10)
            for member in self.members:
                if isinstance(member, ChildMember):
                    member.kill()
                else:
                    member.consumer.close()

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
        @rule(which=CHOICE, where=CHOICE)
        def read_at(self, which, where):
            p = pick(which, [p for p in range(PARTITIONS) if self.log[p]])
            offset = where % len(self.log[p])
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

        @rule(partition=st.integers(0, PARTITIONS - 1), where=CHOICE)
        def commit(self, partition, where):
            offset = where % (len(self.log[partition]) + 1)
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

        # -- the consumer group -------------------------------------------------------------

        def _member_conf(self, session_ms):
            return {**config(), "group.id": self.group, "enable.auto.commit": False,
                    "auto.offset.reset": "earliest", "partition.assignment.strategy": "range",
                    "session.timeout.ms": session_ms,
                    # heard often, so members learn of a rebalance within a tenth of a second
                    "heartbeat.interval.ms": max(10, min(100, session_ms // 10))}

        def check_never_two_owners(self):
            seen = {}
            for i, member in enumerate(self.members):
                if isinstance(member, GroupMember):
                    for p in member.owned:
                        assert p not in seen, f"partition {p} is owned by members {seen[p]} and {i} at once"
                        seen[p] = i

        def _settle(self, before):
            """Poll every member until each has been given an assignment since `before` (their
            assignment counts then) and the group's assignments are one owner per partition."""
            deadline = time.monotonic() + REBALANCE_DEADLINE
            while True:
                for member in self.members:
                    member.poll(0.05)
                fresh = all(m.assignments > before.get(id(m), 0) for m in self.members)
                owners = [p for m in self.members for p in m.owned]
                if fresh and sorted(owners) == list(range(PARTITIONS)) \
                        and sum(1 for m in self.members if m.owned) == min(len(self.members), PARTITIONS):
                    return
                assert time.monotonic() < deadline, \
                    f"no rebalance to one owner per partition within {REBALANCE_DEADLINE} s: members own " \
                    f"{[sorted(m.owned) for m in self.members]}, fresh assignments: {fresh}"

        def _counts(self):
            return {id(m): m.assignments for m in self.members}

        @precondition(lambda self: len(self.members) < MAX_MEMBERS)
        @rule()
        def member_joins(self):
            before = self._counts()
            self.members.append(GroupMember(kafka, self._member_conf(10_000), self.topic, self))
            self._settle(before)

        @precondition(lambda self: self.members)
        @rule(which=CHOICE)
        def member_leaves(self, which):
            member = self.members.pop(which % len(self.members))
            before = self._counts()
            member.consumer.close()
            if self.members:
                self._settle(before)

        # Someone must be left to take the partitions over; a child process costs a second or
        # so, hence a few per run.
        @precondition(lambda self: 0 < len(self.members) < MAX_MEMBERS and self.timeouts < MAX_TIMEOUTS)
        @rule()
        def member_times_out(self):
            """A member joins from a child process, is given partitions, and is killed: the
            others get its partitions once its session (session_timeout_ms) expires."""
            self.timeouts += 1
            before = self._counts()
            child = ChildMember(kafka, self._member_conf(session_timeout_ms), self.topic)
            self.members.append(child)
            self._settle(before)
            self.members.remove(child)
            child.kill()
            self._settle(self._counts())

        def _group_member(self, which):
            return pick(which, [m for m in self.members if isinstance(m, GroupMember)])

        @precondition(lambda self: any(isinstance(m, GroupMember) for m in self.members))
        @rule(which=CHOICE)
        def member_reads_to_the_end(self, which):
            """Poll the group until one member has read every record of what it owns."""
            member = self._group_member(which)
            deadline = time.monotonic() + REBALANCE_DEADLINE
            while any(member.next.get(p, 0) < len(self.log[p]) for p in member.owned):
                assert time.monotonic() < deadline, \
                    f"a member did not read to the end of {sorted(member.owned)} within " \
                    f"{REBALANCE_DEADLINE} s: at {member.next}, the log ends at " \
                    f"{ {p: len(self.log[p]) for p in member.owned} }"
                for m in self.members:
                    m.poll(0.05)

        @precondition(lambda self: any(isinstance(m, GroupMember) and m.owned for m in self.members))
        @rule(which=CHOICE)
        def member_commits(self, which):
            member = self._group_member(which)
            positions = dict(member.next)
            if not positions:
                return
            tps = [kafka.TopicPartition(self.topic, p, o) for p, o in sorted(positions.items())]
            try:
                member.consumer.commit(offsets=tps, asynchronous=False)
            except kafka.KafkaException:
                return          # refused (a rebalance began): the model's commits stand, as the broker's must
            self.group_committed.update(positions)
            got = {tp.partition: tp.offset for tp in member.consumer.committed(
                [kafka.TopicPartition(self.topic, p) for p in sorted(self.group_committed)], timeout=15)}
            assert got == self.group_committed, \
                f"the group's committed offsets {got}, the model's {self.group_committed}"

        @precondition(lambda self: restart is not None and not self.members)
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
            if self.group_committed:
                c = kafka.Consumer({**config(), "group.id": self.group, "enable.auto.commit": False})
                try:
                    got = {tp.partition: tp.offset for tp in c.committed(
                        [kafka.TopicPartition(self.topic, p) for p in sorted(self.group_committed)], timeout=15)}
                    assert got == self.group_committed, \
                        f"after a restart the group's committed offsets are {got}, the model's {self.group_committed}"
                finally:
                    c.close()

    return LogBrokerModel
