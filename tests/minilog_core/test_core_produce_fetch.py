"""The core's produce, fetch, long poll and list offsets, called in-process with plain values."""

import asyncio

import pytest

from clients.protocol.errors import BrokerError, ErrorCode
from clients.record_batch import build_batch, decode_batches
from minilog.broker import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP


def batch(*values, timestamp=None):
    return build_batch([(None, v, timestamp, None) for v in values], timestamp=timestamp)


def records_of(row):
    """Decode the records of a fetch row's FileSlice: [(offset, value)]."""
    slice_ = row[5]
    if slice_ is None:
        return []
    return [(r[0], r[3]) for r in decode_batches(slice_.read())]


async def test_produce_assigns_offsets_and_fetch_reads_them_back(broker):
    rows = broker.produce([["t", 0, batch(b"a", b"b")], ["t", 0, batch(b"c")]])
    assert rows == [["t", 0, 0, None], ["t", 0, 2, None]]
    fetched, ready = broker.read([("t", 0, 0, 1 << 20)], 1 << 20, 1)
    assert ready
    (topic, partition, error, hw, start, _), = fetched
    assert (topic, partition, error, hw, start) == ("t", 0, None, 3, 0)
    assert records_of(fetched[0]) == [(0, b"a"), (1, b"b"), (2, b"c")]


async def test_one_bad_entry_fails_alone(broker):
    broker.create_topic("two", 2)
    good = batch(b"x")
    corrupt = bytearray(good)
    corrupt[-1] ^= 0xFF
    rows = broker.produce([["two", 0, good], ["two", 5, good], ["two", 1, bytes(corrupt)],
                           ["__consumer_offsets", 0, good], ["two", 1, "not bytes"], "junk", ["two", 1, good]])
    codes = [row[3] and row[3][0] for row in rows]
    assert codes == [None, ErrorCode.NOT_FOUND, ErrorCode.CORRUPT_MESSAGE, ErrorCode.NOT_AUTHORIZED,
                     ErrorCode.BAD_REQUEST, ErrorCode.BAD_REQUEST, None]
    assert rows[-1][2] == 0          # the corrupt batch stored nothing on partition 1
    assert broker.list_offsets([("two", 1, LATEST_TIMESTAMP)]) == [["two", 1, 1, None]]


async def test_acks_all_answers_after_the_fsync(broker):
    pending = broker.produce([["d", 0, batch(b"x")]], acks=-1)
    assert asyncio.iscoroutine(pending)
    assert await asyncio.wait_for(pending, 10) == [["d", 0, 0, None]]
    assert broker.logs.get_log("d", 0).flushed_offset >= 1


async def test_fetch_out_of_range_and_unknown_topic_are_row_errors(broker):
    broker.produce([["t", 0, batch(b"a")]])
    rows, ready = broker.read([("t", 0, 5, 1024), ("nope", 0, 0, 1024)], 1 << 20, 1)
    assert ready
    assert rows[0][2][0] == ErrorCode.OFFSET_OUT_OF_RANGE and rows[0][3:5] == (1, 0)
    assert rows[1][2][0] == ErrorCode.NOT_FOUND
    assert not broker.topics.exists("nope")     # a fetch never creates a topic


async def test_only_the_first_batch_may_exceed_the_limits(broker):
    broker.produce([["t", 0, batch(b"x" * 2000)], ["t", 0, batch(b"y" * 2000)]])
    rows, _ = broker.read([("t", 0, 0, 100)], 100, 1)
    assert [o for o, _ in records_of(rows[0])] == [0]


async def test_long_poll_wakes_on_append_and_times_out_empty(broker):
    broker.produce([["t", 0, batch(b"a")]])
    rows, ready = broker.read([("t", 0, 1, 1024)], 1 << 20, 1)
    assert not ready and rows[0][5] is None
    waiting = asyncio.ensure_future(broker.wait_for_records([("t", 0, 1, 1024)], 1 << 20, 1, 10_000))
    for _ in range(100):
        if len(broker.waiters):
            break
        await asyncio.sleep(0)
    assert len(broker.waiters) == 1 and not waiting.done()
    broker.produce([["t", 0, batch(b"b")]])
    rows = await asyncio.wait_for(waiting, 5)
    assert records_of(rows[0]) == [(1, b"b")]
    assert len(broker.waiters) == 0
    rows = await broker.wait_for_records([("t", 0, 2, 1024)], 1 << 20, 1, 20)
    assert rows[0][2] is None and rows[0][5] is None


async def test_cancelled_long_poll_unparks(broker):
    broker.create_topic("t")
    waiting = asyncio.ensure_future(broker.wait_for_records([("t", 0, 0, 1024)], 1 << 20, 1, 10_000))
    await asyncio.sleep(0)
    assert len(broker.waiters) == 1
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert len(broker.waiters) == 0


async def test_list_offsets_earliest_latest_and_by_time(broker):
    broker.produce([["t", 0, batch(b"a", timestamp=1_000)], ["t", 0, batch(b"b", timestamp=2_000)]])
    assert broker.list_offsets([("t", 0, EARLIEST_TIMESTAMP), ("t", 0, LATEST_TIMESTAMP),
                                ("t", 0, 1_500), ("t", 0, 9_999)]) == [
        ["t", 0, 0, None], ["t", 0, 2, None], ["t", 0, 1, None], ["t", 0, -1, None]]
    assert broker.list_offsets([("t", 0, -7)])[0][3][0] == ErrorCode.BAD_REQUEST


async def test_topics_create_describe_delete_and_restart(open_broker, tmp_path):
    broker = open_broker()
    broker.create_topic("a", 3, {"retention.ms": "60000"})
    with pytest.raises(BrokerError) as info:
        broker.create_topic("a", 1)
    assert info.value.code == ErrorCode.ALREADY_EXISTS
    broker.create_topic("checked", 1, validate_only=True)
    assert broker.topic_names() == ["a"]
    described = broker.describe_topics(["a", "missing"])
    assert [p["partition"] for p in described["a"]["partitions"]] == [0, 1, 2]
    assert described["a"]["config"]["retention.ms"] == 60000
    assert described["missing"]["error"][0] == ErrorCode.NOT_FOUND
    # Auto-creation makes the files on the creation thread: the answer comes when the topic exists.
    assert (await broker.describe_topics(["auto"], allow_auto_create=True))["auto"]["error"] is None
    broker.produce([["a", 2, batch(b"kept")]])
    broker.close()
    again = open_broker()
    assert again.topic_names() == ["a", "auto"]
    assert again.list_offsets([("a", 2, LATEST_TIMESTAMP)]) == [["a", 2, 1, None]]
    again.delete_topic("a")
    assert again.topic_names() == ["auto"]
    with pytest.raises(BrokerError):
        again.delete_topic("__consumer_offsets")
