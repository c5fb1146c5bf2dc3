"""Repositioning a confluent-style consumer discards what it prefetched for that partition.

`assign()` at an offset, `seek()`, `unassign()` then `assign()`, and re-assigning a partition
that is already assigned: in each case the next record returned is at the asked offset, as
with the real confluent-kafka (checked there: 100000 -> 100000, 150000 -> 150000 in a
200k-record partition). Scaled down to 20,000 records.
"""

from clients.log import TopicPartition

N = 20_000


def _fill(producer, topic):
    p = producer(**{"linger.ms": 5})
    for i in range(N):
        p.produce(topic, b"%d" % i, partition=0)
    assert p.flush(30) == 0


def _next(consumer, timeout=10.0):
    msg = consumer.poll(timeout)
    assert msg is not None and msg.error() is None, msg and msg.error()
    return msg


def _prefetch(consumer, count=100):
    """Read a few records so the consumer has fetched (and holds) much more than it handed out."""
    got = consumer.consume(count, 10)
    assert len(got) == count
    return got


def test_every_reposition_discards_the_prefetched_records(producer, consumer, make_topic):
    topic = make_topic(1)
    _fill(producer, topic)
    c = consumer()
    c.assign([TopicPartition(topic, 0, 0)])
    assert _prefetch(c)[0].offset() == 0

    c.assign([TopicPartition(topic, 0, 10_000)])  # re-assign, already assigned, at an offset
    assert _next(c).offset() == 10_000
    _prefetch(c)

    c.unassign()
    c.assign([TopicPartition(topic, 0, 12_000)])
    assert _next(c).offset() == 12_000
    _prefetch(c)

    c.seek(TopicPartition(topic, 0, 15_000))
    assert _next(c).offset() == 15_000
    _prefetch(c)

    c.seek(TopicPartition(topic, 0, 3))  # backwards too
    assert [m.offset() for m in c.consume(5, 10)] == [3, 4, 5, 6, 7]

    c.incremental_unassign([TopicPartition(topic, 0)])
    c.incremental_assign([TopicPartition(topic, 0, 19_990)])
    assert [m.offset() for m in c.consume(10, 10)] == list(range(19_990, 20_000))
