"""One group protocol for both log consumers: a group may mix them, and either may lead.

The asyncio consumer speaks the group protocol through the same core as the blocking one
(`clients/log/group_protocol.py`): it sends the partitions it owns, and as leader it runs
`cooperative-sticky` with the two-phase hand-over: a partition moving from one member to
another is first revoked by its owner, then assigned to the newcomer, never held by both.
"""

import asyncio
import threading
import time

from clients.aio_log import AIOKafkaConsumer, ConsumerRebalanceListener
from clients.log import Consumer

STRATEGY = "cooperative-sticky"


class _Recorder(ConsumerRebalanceListener):
    def __init__(self, events):
        self.events = events

    def on_partitions_revoked(self, revoked):
        self.events.append(("aio-revoked", {(tp.topic, tp.partition) for tp in revoked}))

    def on_partitions_assigned(self, assigned):
        self.events.append(("aio-assigned", {(tp.topic, tp.partition) for tp in assigned}))


async def test_an_asyncio_leader_hands_partitions_over_in_two_phases(bootstrap, make_topic):
    topic = make_topic(4)
    everything = {(topic, p) for p in range(4)}
    events = []
    leader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id="mixed", heartbeat_interval_ms=100,
                              session_timeout_ms=3000, partition_assignment_strategy=(STRATEGY,),
                              auto_offset_reset="earliest")
    await leader.start()
    stop = threading.Event()
    follower_parts = set()
    try:
        leader.subscribe([topic], listener=_Recorder(events))
        deadline = time.monotonic() + 20
        while {(tp.topic, tp.partition) for tp in leader.assignment()} != everything:
            assert time.monotonic() < deadline, "the asyncio consumer never got every partition"
            await leader.getmany(timeout_ms=100)

        def follow():
            follower = Consumer({"bootstrap.servers": bootstrap, "group.id": "mixed",
                                 "partition.assignment.strategy": STRATEGY, "heartbeat.interval.ms": 100,
                                 "session.timeout.ms": 3000, "auto.offset.reset": "earliest"})

            def on_assign(consumer, parts):
                events.append(("blocking-assigned", {(tp.topic, tp.partition) for tp in parts}))

            def on_revoke(consumer, parts):
                events.append(("blocking-revoked", {(tp.topic, tp.partition) for tp in parts}))
            try:
                follower.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
                while not stop.is_set():
                    follower.poll(0.1)
                    follower_parts.clear()
                    follower_parts.update((tp.topic, tp.partition) for tp in follower.assignment())
            finally:
                follower.close()

        thread = threading.Thread(target=follow, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while True:
            mine = {(tp.topic, tp.partition) for tp in leader.assignment()}
            if len(mine) == 2 and set(follower_parts) == everything - mine:
                break
            assert time.monotonic() < deadline, f"no balanced split: {mine} / {follower_parts} / {events}"
            await leader.getmany(timeout_ms=100)
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 10) if "thread" in locals() else None
        await leader.stop()
    # Two phases: the leader revoked exactly the two partitions that moved, and only after
    # that did the blocking consumer get them.
    held_by_leader = set()
    for kind, parts in events:
        if kind == "aio-assigned":
            held_by_leader |= parts
        elif kind == "aio-revoked":
            held_by_leader -= parts
        elif kind == "blocking-assigned":
            assert not parts & held_by_leader, f"handed over before being revoked: {events}"
    revokes = [parts for kind, parts in events if kind == "aio-revoked" and parts]
    assert revokes and all(len(parts) < 4 for parts in revokes), events
