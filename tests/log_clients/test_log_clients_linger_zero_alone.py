"""linger.ms 0: a record that finds nothing waiting leaves at once as a batch of its own
(`Producer._send_single`), encoded without the general path's builder and request
(`record_batch.pack_single`, `ProduceRequests.encode_single`). The bytes must be the general
path's, and what a record sent so gets (its report, its partition, its place in the log, a
lost connection) must be what it got before. Real server, real wire; the encoders alone are
checked against the general ones on generated input."""

import itertools
import time

from hypothesis import given
from hypothesis import strategies as st
from log_client_helpers import counted, drain

from clients.log import AdminClient, Consumer, NewTopic, Producer, TopicPartition
from clients.log.connection import LogConnection, parse_bootstrap
from clients.log.produce_requests import ProduceRequests
from clients.protocol.client_state import ClientConnectionState
from clients.record_batch import BatchBuilder, pack_single


# Values past each msgpack bin header's size (256 bytes, 64 KiB) are made, not drawn byte by byte.
_VALUES = st.binary(max_size=300) | st.integers(250, 70000).map(lambda n: b"\x07" * n)


@given(key=st.none() | st.binary(max_size=300), value=_VALUES)
def test_pack_single_is_what_the_batch_builder_packs(key, value):
    builder = BatchBuilder()
    builder.append(key, value)
    assert pack_single(key, value, builder.first_ts) == bytes(builder.pack())


@given(acks=st.sampled_from([-1, 0, 1]), timeout_ms=st.integers(0, 2**31), topic=st.text(min_size=1, max_size=300),
       partition=st.integers(0, 70000), data=_VALUES,
       rid=st.integers(0, 2**40))
def test_encode_single_is_the_frame_encode_request_makes(acks, timeout_ms, topic, partition, data, rid):
    requests = ProduceRequests(acks, timeout_ms, 10**6, 5)
    state = ClientConnectionState()
    if rid:
        state._ids = itertools.count(rid)
    expected_rid, frame = state.encode_request("produce", {"acks": acks, "timeout_ms": timeout_ms,
                                                           "data": [[topic, partition, data]]}, rid != 0)
    assert expected_rid == rid
    assert requests.encode_single(rid, topic, partition, data) == frame


def test_encode_single_encodes_every_size_of_request_id_and_batch_as_msgpack_does():
    # Each of msgpack's int and bin encodings, at its edges (encode_single makes them itself).
    requests = ProduceRequests(1, 30000, 10**6, 5)
    for rid in (0, 1, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, 2**32 - 1, 2**32, 2**40):
        for n in (0, 0xFF, 0x100, 0xFFFF, 0x10000):
            data = b"\x05" * n
            state = ClientConnectionState()
            if rid:
                state._ids = itertools.count(rid)
            _, frame = state.encode_request("produce", {"acks": 1, "timeout_ms": 30000, "data": [["t", 3, data]]},
                                            rid != 0)
            assert requests.encode_single(rid, "t", 3, data) == frame, (rid, n)


def test_each_call_form_sent_alone_is_stored_and_reported_as_the_general_path_would(producer, consumer, make_topic):
    topic = make_topic(3)
    reports = []
    p = producer(on_delivery=lambda err, msg: reports.append((err, msg.partition(), msg.offset(), msg.key(),
                                                              msg.value(), msg.timestamp())), **{"linger.ms": 0})
    p.produce(topic, b"first")   # the topic's metadata: the general path
    assert p.flush(10) == 0
    general = counted(p, "_produce")
    before = time.time_ns() // 1_000_000
    forms = [dict(value=b"plain"), dict(value=b"", partition=2), dict(value=b"keyed", key=b"k"),
             dict(value=b"keyed to 1", key=b"", partition=1), dict(value=b"v" * 5000, key=b"k" * 300)]
    for form in forms:
        p.produce(topic, **form)
        assert p.flush(10) == 0   # nothing in flight: the next record leaves alone too
    after = time.time_ns() // 1_000_000
    assert general == []          # every form left alone, none through the general path
    sent = reports[1:]
    assert [r[0] for r in sent] == [None] * len(forms)
    assert [r[4] for r in sent] == [f["value"] for f in forms]
    assert [r[3] for r in sent] == [f.get("key") for f in forms]
    assert sent[1][1] == 2 and sent[3][1] == 1
    assert all(before <= r[5][1] <= after for r in sent)
    c = consumer()
    c.assign([TopicPartition(topic, part, 0) for part in range(3)])
    stored = {(m.partition(), m.offset()): (m.key(), m.value(), m.timestamp()) for m in drain(c, len(forms) + 1)}
    for err, partition, offset, key, value, timestamp in sent:
        assert stored[(partition, offset)] == (key, value, timestamp)


def test_keyless_records_sent_alone_move_the_sticky_partition_on(producer, make_topic):
    # As when an open batch closes (RecordAccumulator.closing): each batch of keyless records
    # goes to another partition than the one before.
    topic = make_topic(4)
    partitions = []
    p = producer(on_delivery=lambda err, msg: partitions.append(msg.partition()), **{"linger.ms": 0})
    for i in range(20):
        p.produce(topic, b"%d" % i)
        assert p.flush(10) == 0
    assert len(partitions) == 20
    assert all(a != b for a, b in zip(partitions, partitions[1:])), partitions


def test_one_request_in_flight_keeps_every_record_in_order(producer, consumer, make_topic):
    # max.in.flight 1: a record leaves alone only while no request is unanswered; the others
    # gather behind it (Producer._held). Both ways, the partition's order is kept.
    topic = make_topic(1)
    offsets = []
    p = producer(on_delivery=lambda err, msg: offsets.append((err, int(msg.value()), msg.offset())),
                 **{"linger.ms": 0, "max.in.flight": 1})
    for i in range(300):
        p.produce(topic, b"%d" % i)
        p.poll(0)
    assert p.flush(10) == 0
    assert offsets == [(None, i, i) for i in range(300)]
    c = consumer()
    c.assign([TopicPartition(topic, 0, 0)])
    assert [int(m.value()) for m in drain(c, 300)] == list(range(300))


def test_acks_zero_records_sent_alone_are_reported_and_stored(producer, consumer, make_topic):
    topic = make_topic(1)
    reports = []
    p = producer(acks=0, on_delivery=lambda err, msg: reports.append((err, msg.value())), **{"linger.ms": 0})
    for i in range(20):
        p.produce(topic, b"%d" % i)
        p.poll(0)
    assert p.flush(10) == 0
    assert reports == [(None, b"%d" % i) for i in range(20)]
    c = consumer()
    c.assign([TopicPartition(topic, 0, 0)])
    assert [int(m.value()) for m in drain(c, 20)] == list(range(20))


def test_records_sent_alone_to_a_stopped_server_go_again_on_the_next_connection(spawn_server, tmp_path):
    # The server goes away under a linger-0 producer: the first record's write may still
    # succeed (the peer's reset comes after), the next one's fails (the record goes back to
    # the queue). Both must reach the restarted server, in order, and be reported once.
    server = spawn_server("minilog", data_dir=tmp_path / "alone-restart")
    bs = f"127.0.0.1:{server.port}"
    AdminClient({"bootstrap.servers": bs}).create_topics([NewTopic("alone", 1)])["alone"].result(5)
    reports = []
    p = Producer({"bootstrap.servers": bs, "linger.ms": 0,
                  "on_delivery": lambda err, msg: reports.append((err, msg.value()))})
    p.produce("alone", b"before")
    assert p.flush(10) == 0
    server.stop()
    for value in (b"a", b"b", b"c"):
        p.produce("alone", value)
    server.start(port=server.port)   # same port, same data
    deadline = time.monotonic() + 20
    while len(reports) < 4 and time.monotonic() < deadline:
        p.poll(0.2)
    assert reports == [(None, b"before"), (None, b"a"), (None, b"b"), (None, b"c")]
    assert p.flush(10) == 0
    c = Consumer({"bootstrap.servers": bs, "auto.offset.reset": "earliest"})
    c.assign([TopicPartition("alone", 0, 0)])
    values = []
    while b"c" not in values and time.monotonic() < deadline:
        values += [m.value() for m in c.consume(10, 0.5) if m.error() is None]
    # At least once: a record whose write reached the old server before it stopped may be
    # stored twice; never out of order, never lost.
    assert values[0] == b"before" and [v for i, v in enumerate(values) if v not in values[:i]][1:] == [b"a", b"b", b"c"]
    c.close()
    p.close()


def test_write_frame_writes_what_is_queued_before_it(bootstrap, make_topic):
    # LogConnection.write_frame, the one sendall of a record sent alone: a request queued on the
    # connection and not yet flushed goes first, and both are answered.
    topic = make_topic(1)
    conn = LogConnection(*parse_bootstrap(bootstrap))
    try:
        replies = {}
        conn.send_with("metadata", {"topics": [topic]}, lambda result, error: replies.setdefault("metadata", error))
        requests = ProduceRequests(1, 1000, 10**6, 5)
        data = pack_single(None, b"alone", 1_700_000_000_000)
        request = requests.single(topic, 0, data, object(), 0.0)
        rid = conn.state.next_id()
        conn.state.expect(rid, lambda result, error: replies.setdefault("produce", (result, error)))
        conn.write_frame(requests.encode_single(rid, topic, 0, data))
        requests.sent(request, 0.0, rid)
        deadline = time.monotonic() + 10
        while len(replies) < 2 and time.monotonic() < deadline:
            conn.pump(0.5)
        assert replies["metadata"] is None
        result, error = replies["produce"]
        assert error is None and requests.completed(request, result) == [(request.items[0][3], 0, None)]
    finally:
        conn.close()
    c = Consumer({"bootstrap.servers": bootstrap, "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(topic, 0, 0)])
    (m,) = drain(c, 1)
    assert (m.value(), m.timestamp()[1]) == (b"alone", 1_700_000_000_000)
    c.close()
