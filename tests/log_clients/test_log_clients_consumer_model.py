"""The consumer's positions against a model, over random produce / seek / pause / consume runs.

The prefetcher runs ahead of the application and drops data fetched under an older epoch;
whatever the interleaving, every message handed out must be the next one of its partition
(no gap, no repeat, except after a seek) and nothing may come from a paused partition.
"""

import itertools
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clients.log import Consumer, NewTopic, Producer, TopicPartition

_names = itertools.count(1)

ops = st.lists(st.one_of(
    st.tuples(st.just("produce"), st.integers(0, 1), st.integers(1, 30)),
    st.tuples(st.just("seek"), st.integers(0, 1), st.floats(0, 1)),
    st.tuples(st.just("pause"), st.integers(0, 1)),
    st.tuples(st.just("resume"), st.integers(0, 1)),
    st.tuples(st.just("consume"), st.integers(1, 40)),
), min_size=1, max_size=12)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops)
def test_consumer_positions_follow_the_model(bootstrap, admin, steps):
    topic = f"model-{next(_names)}"
    admin.create_topics([NewTopic(topic, 2)])[topic].result(5)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    c = Consumer({"bootstrap.servers": bootstrap, "fetch.wait.max.ms": 20})
    try:
        _run(topic, p, c, steps)
    finally:
        c.close()
        p.close()
        admin.delete_topics([topic])[topic].result(5)


def _run(topic, p, c, steps):
    c.assign([TopicPartition(topic, 0, 0), TopicPartition(topic, 1, 0)])
    end = [0, 0]
    position = [0, 0]
    paused = [False, False]

    def check(msgs):
        for m in msgs:
            assert m.error() is None, m.error()
            part = m.partition()
            assert not paused[part], "a message from a paused partition"
            assert m.offset() == position[part], (part, m.offset(), position[part])
            position[part] += 1

    for step in steps:
        if step[0] == "produce":
            _, part, n = step
            for _ in range(n):
                p.produce(topic, b"x", partition=part)
            assert p.flush(10) == 0
            end[part] += n
        elif step[0] == "seek":
            _, part, where = step
            if not paused[part]:
                target = int(where * end[part])
                c.seek(TopicPartition(topic, part, target))
                position[part] = target
        elif step[0] == "pause":
            c.pause([TopicPartition(topic, step[1])])
            paused[step[1]] = True
        elif step[0] == "resume":
            c.resume([TopicPartition(topic, step[1])])
            paused[step[1]] = False
        else:
            check(c.consume(step[1], 0.05))
    c.resume([TopicPartition(topic, 0), TopicPartition(topic, 1)])
    paused[:] = [False, False]
    deadline = time.monotonic() + 10
    while position != end:
        assert time.monotonic() < deadline, (position, end)
        check(c.consume(100, 0.1))
    # (a partition never read reports OFFSET_INVALID, as librdkafka does)
    for tp in c.position([TopicPartition(topic, 0), TopicPartition(topic, 1)]):
        assert tp.offset == end[tp.partition] or (tp.offset == -1001 and end[tp.partition] == 0)
