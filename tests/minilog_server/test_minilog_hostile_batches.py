"""Batches whose header lies about their body: refused at produce, harmless if already on disk.

A CRC proves only that the bytes are the producer's; the broker also checks that the body keeps
the header's promises (record count, offset deltas, timestamps, types) before it appends, and
what an older broker stored anyway must not break restart, list_offsets or consumers.
"""

import msgpack
import pytest

from clients.log import Consumer, TopicPartition
from clients.protocol.errors import ErrorCode
from clients.record_batch import pack_batch, read_header, set_base_offset
from minilog.storage import LogManager
from minilog_wire_helpers import batch, connect, create, fetch, produce, record_values, values


def lying_batch(count=2**31 - 1, rows=None, first_ts=1_000, max_ts=1_000) -> bytes:
    """A batch with a valid CRC whose header claims ``count`` records over ``rows``."""
    rows = rows if rows is not None else [[0, 0, None, b"x" * 20_000, None]]
    return pack_batch(msgpack.packb(rows, use_bin_type=True), count, first_ts, max_ts)


BAD_BODIES = {
    "count-2^31-1": lying_batch(),
    "count-too-small": lying_batch(count=1, rows=[[0, 0, None, b"a", None], [1, 0, None, b"b", None]]),
    "offset-deltas-skip": lying_batch(count=2, rows=[[0, 0, None, b"a", None], [5, 0, None, b"b", None]]),
    "record-newer-than-max": lying_batch(count=1, rows=[[0, 50, None, b"a", None]]),
    "map-key": lying_batch(count=1, rows=[[0, 0, {"k": 1}, b"a", None]]),
    "str-value": lying_batch(count=1, rows=[[0, 0, None, "text", None]]),
    "short-record": lying_batch(count=1, rows=[[0, 0, None, b"a"]]),
    "bad-headers": lying_batch(count=1, rows=[[0, 0, None, b"a", [[1, 2]]]]),
    "trailing-bytes": pack_batch(msgpack.packb([[0, 0, None, b"a", None]]) + b"\xc0", 1, 1_000, 1_000),
}


@pytest.mark.parametrize("name", list(BAD_BODIES))
def test_a_batch_whose_body_breaks_its_header_is_refused_and_the_partition_keeps_working(start_minilog, tmp_path,
                                                                                        name):
    data_dir = tmp_path / "log"
    server = start_minilog(data_dir)
    with connect(server) as c:
        create(c, "t", config={"retention.ms": -1})
        assert produce(c, "t", 0, batch(values(2)))[0][2] == 0
        (row,) = produce(c, "t", 0, BAD_BODIES[name])
        assert row[2] == -1 and row[3][0] == ErrorCode.CORRUPT_MESSAGE, row
        assert produce(c, "t", 0, batch(values(3), timestamp=5_000))[0][2] == 2
        assert c.call("list_offsets", {"partitions": [["t", 0, 0]]})["results"][0][2] == 0
    server.stop()
    server = start_minilog(data_dir)  # and the log opens again with exactly the good records
    with connect(server) as c:
        error, hw, _, records = fetch(c, "t", 0, 0)
        assert error is None and hw == 5
        assert record_values(records) == values(2) + values(3)


def store_lying_batch_directly(data_dir, topic, bad):
    """What a broker without the body check stored: 3 good records at 1000 ms, ``bad``, 2 good at 9000 ms."""
    manager = LogManager(str(data_dir))
    log = manager.create_log(topic, 0, {"retention.ms": -1})
    log.append(batch(values(3, b"before"), timestamp=1_000))
    segment = log.active_segment
    data = bytearray(bad)
    set_base_offset(data, segment.next_offset)
    segment.append(memoryview(data), [read_header(data)])  # below PartitionLog.append's checks
    after = log.append(batch(values(2, b"after"), timestamp=9_000)).base_offset
    manager.close()
    return after


def test_a_lying_batch_already_on_disk_breaks_neither_list_offsets_nor_consumers(start_minilog, tmp_path):
    data_dir = tmp_path / "log"
    # 2,000 records promised (the consumer's class-per-batch path), one delivered, timestamps 5000.
    after = store_lying_batch_directly(data_dir, "old", lying_batch(2_000, first_ts=5_000, max_ts=5_000))
    assert after == 3 + 2_000
    server = start_minilog(data_dir)
    with connect(server) as c:
        rows = c.call("list_offsets", {"partitions": [["old", 0, 2_000], ["old", 0, 5_000], ["old", 0, 8_000]]})
        by_time = [(r[2], r[3]) for r in rows["results"]]
        assert by_time == [(3, None), (3, None), (after, None)]
    consumer = Consumer({"bootstrap.servers": f"{server.host}:{server.port}", "group.id": "g",
                         "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition("old", 0, 0)])
        got, errors = [], []
        for _ in range(50):
            for msg in consumer.consume(100, 0.2):
                (errors if msg.error() else got).append(msg)
            if errors or len(got) >= 5:
                break
        good = [m.value() for m in got]
        assert good[:3] == values(3, b"before")
        assert errors or good[3:] == [b"x" * 20_000] + values(2, b"after")
    finally:
        consumer.close()
