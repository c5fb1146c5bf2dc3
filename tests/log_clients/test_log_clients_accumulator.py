"""The record accumulator both log producers share (clients/log/accumulator.py), without sockets."""

import time

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clients.aio_log.producer import AIOKafkaProducer, BatchBuilder, _Batch
from clients.log.accumulator import OpenBatch, RecordAccumulator, record_size
from clients.log.partitioner import RANDOM
from clients.log.producer import _OpenBatch
from clients.record_batch import BatchBuilder as RecordBatchBuilder
from clients.record_batch import decode_batch, pack_batch, pack_plain_records, validate

_records = st.lists(
    st.tuples(st.none() | st.binary(max_size=20), st.none() | st.binary(max_size=60),
              st.none() | st.integers(1_500_000_000_000, 1_900_000_000_000),
              st.none() | st.lists(st.tuples(st.text(max_size=8), st.binary(max_size=8)), min_size=1, max_size=3)),
    min_size=1, max_size=40)


@given(_records)
def test_a_packed_batch_decodes_to_what_was_appended(records):
    before = time.time_ns() // 1_000_000
    batch = OpenBatch("t", 0)
    for i, (key, value, ts, headers) in enumerate(records):
        assert batch.append(key, value, ts, headers) == i
    after = time.time_ns() // 1_000_000
    data = batch.pack()
    validate(data)
    header, got = decode_batch(data)
    assert header.record_count == len(records) == len(batch)
    assert [(r[2], r[3]) for r in got] == [(k, v) for k, v, _, _ in records]
    stamps = []
    for i, (key, value, ts, headers) in enumerate(records):
        stamp = batch.timestamp_of(i)
        # A record keeps its own timestamp; one without gets the time the batch was opened.
        if ts is not None:
            assert stamp == ts
        else:
            assert before <= stamp <= after
        assert got[i][1] == stamp and got[i][4] == (tuple(headers) if headers else None)
        stamps.append(stamp)
    assert header.first_timestamp == stamps[0]
    # max_timestamp bounds every record, including rows a fast path appends later with the
    # batch's default delta (the opening time), so it is never below that time either.
    assert max(stamps) <= header.max_timestamp <= max(max(stamps), after)
    assert batch.size == sum(record_size(k, v, h) for k, v, _, h in records)


def test_an_empty_batch_is_not_packed():
    with pytest.raises(ValueError, match="empty"):
        OpenBatch("t", 0).pack()


def test_the_producers_fast_path_row_is_what_append_makes():
    # Both producers append directly on their fast path: a record without key, timestamp or
    # headers as its value alone, a keyed one as the row (len(rows), dflt, key, value, None),
    # counted in `tuples`. That must stay what append() makes for such records.
    a, b = OpenBatch("t", 0), OpenBatch("t", 0)
    a.append(None, b"first")
    b.append(None, b"first")
    a.append(b"k", b"second")
    b.rows.append((len(b.rows), b.dflt, b"k", b"second", None))
    b.tuples += 1
    b.size += len(b"second") + len(b"k") + 16
    a.append(None, b"third")
    b.rows.append(b"third")
    b.size += len(b"third") + 16
    b.first_ts, b.max_ts = a.first_ts, a.max_ts  # both opened within the same ms or so
    assert a.rows == b.rows and a.size == b.size and a.tuples == b.tuples == 1
    assert [b.record(i) for i in range(3)] == [(0, b.dflt, None, b"first", None), (1, b.dflt, b"k", b"second", None),
                                               (2, b.dflt, None, b"third", None)]
    assert [r[2:4] for r in decode_batch(b.pack())[1]] == [(None, b"first"), (b"k", b"second"), (None, b"third")]


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=600) | st.tuples(
           st.integers(1, 3000), st.integers(0, 70_000)).map(lambda nl: [b"v" * nl[1]] * nl[0]),
       st.sampled_from([0, 0, 1, -1, 127, 128, 255, 256, 65_536, -(2 ** 40)]))
def test_plain_records_pack_as_msgpack_packs_their_rows(values, dflt):
    # The join of cached heads (values all one length) and the msgpack fallback (varied
    # lengths, a shape met once) both give msgpack's bytes; twice, so the cache serves the second.
    want = msgpack.packb([(i, dflt, None, v, None) for i, v in enumerate(values)], use_bin_type=True)
    assert pack_plain_records(values, dflt) == want
    assert pack_plain_records(values, dflt) == want
    # A builder of such records packs the same rows into the same batch, whichever way it
    # packs them (a bytearray joined once with its header filled in, or msgpack and pack_batch).
    builder = RecordBatchBuilder()
    for v in values:
        builder.append(None, v)
    builder.dflt = dflt
    batch = builder.pack()
    assert bytes(batch) == pack_batch(want, len(values), builder.first_ts, builder.max_ts)
    assert [r[3] for r in decode_batch(batch)[1]] == values


def test_both_producers_batches_are_the_one_accumulator():
    blocking = _OpenBatch("t", 3, 0.0, 10, 1000, 2000)
    asyncio_batch = _Batch("t", 3, None)
    for batch in (blocking, asyncio_batch):
        assert isinstance(batch, OpenBatch)
        # A timestamp ahead of the clock: a batch's max timestamp is also at least the time of
        # its first append, which differs between the two when a millisecond ticks in between.
        batch.append(b"k", b"v", 4_000_000_000_000)
        assert decode_batch(batch.pack())[1][0][2:4] == (b"k", b"v")
    assert blocking.pack() == asyncio_batch.pack()


def test_aiokafka_batch_builder_stops_at_its_size_and_packs():
    builder = BatchBuilder(100)
    assert builder.append(value=b"x" * 50, timestamp=1_700_000_000_000)["offset"] == 0
    assert builder.append(value=b"y" * 50) is None  # would pass 100 bytes: send this batch first
    assert builder.record_count() == 1
    assert decode_batch(builder._build())[1][0][3] == b"x" * 50
    with pytest.raises(TypeError):
        builder.append(value="not bytes")


def test_there_is_one_batch_builder():
    # The accumulator's batches and aiokafka's create_batch() build with record_batch's builder.
    assert issubclass(OpenBatch, RecordBatchBuilder)
    assert type(BatchBuilder(100)._batch) is RecordBatchBuilder


def test_the_sticky_partition_moves_when_its_batch_closes():
    acc = RecordAccumulator()
    t = acc.add_topic("t", 4)
    first = t.sticky
    assert 0 <= first < 4 and t.current is None and not t.fixed
    sticky = acc.opened(t, OpenBatch("t", first))
    other_p = (first + 1) % 4
    other = acc.opened(t, OpenBatch("t", other_p))
    assert t.current is sticky and t.batches[other_p] is other
    assert [b for _, b in acc.open] == [sticky, other]  # oldest first
    sticky.append(None, b"a")
    other.append(b"k", b"b")
    assert acc.records() == 2
    assert acc.closing(t, sticky)
    assert t.sticky != first and t.batches[first] is None
    # keyless records join the new sticky partition's open batch, if it has one
    assert t.current is (other if t.sticky == other_p else None)
    assert [b for _, b in acc.open] == [other] and acc.records() == 1
    assert not acc.closing(t, sticky)  # closed already (a timer firing after a size close)


def test_a_fixed_null_key_partition_never_moves():
    acc = RecordAccumulator()
    t = acc.add_topic("t", 3, null_partition=2)
    assert t.fixed and t.sticky == 2
    batch = acc.opened(t, OpenBatch("t", 2))
    assert t.current is batch
    acc.closing(t, batch)
    assert t.sticky == 2 and t.current is None and acc.open == []
    one = RecordAccumulator().add_topic("one", 1, RANDOM)
    assert one.sticky == 0 and not one.fixed


def test_both_producers_keep_their_batches_in_the_accumulator():
    from clients.log import Producer
    blocking = Producer({"bootstrap.servers": "127.0.0.1:1"})  # nothing listens: it connects later
    aio = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1")
    for p in (blocking, aio):
        assert isinstance(p._acc, RecordAccumulator)
    assert blocking._topics is blocking._acc.topics and blocking._open is blocking._acc.open
    blocking.close(0)
