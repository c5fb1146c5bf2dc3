"""The fetch session both log consumers share (clients/log/fetch_session.py), without sockets.

Each test plays the server: it takes the request the session builds and answers with a reply
dict carrying real batches (`record_batch.build_batch`), as the server's `fetch` does.
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.aio_log.consumer import _RecordBuilder
from clients.log.errors import KafkaError
from clients.log.fetch_session import CORRUPT, PARTITION_EOF, FetchEvent, FetchSession, PartitionFetch
from clients.log.message import MessageBuilder
from clients.record_batch import HEADER_SIZE, build_batch, read_header

T0 = 1_700_000_000_000


def batch(base, count, tag=b"v", ts=T0):
    return build_batch([(b"k%d" % (base + i), b"%s%d" % (tag, base + i), ts + base + i, None) for i in range(count)],
                       base_offset=base)


def session(builder=None, **kw):
    s = FetchSession(builder or MessageBuilder(), **kw)
    part = PartitionFetch("t", 0)
    s.replace({("t", 0): part})
    s.seek(part, 0)
    return s, part


def two_partitions(**kw):
    """A session assigned t-0 and t-1, both from offset 0."""
    s, part = session(**kw)
    other = PartitionFetch("t", 1)
    s.add(("t", 1), other)
    s.seek(other, 0)
    return s, part, other


def reply(records, hw, err=None, topic="t", partition=0):
    return {"results": [[topic, partition, err, hw, 0, records]]}


def fetch(s):
    args, token = s.fetch_request()
    return args, token


def take_all(s, want=1_000_000):
    out = []
    s.take(want, out)
    return out


def test_the_request_names_every_fetchable_partition_from_its_fetch_offset():
    s = FetchSession(MessageBuilder(), max_wait_ms=250, min_bytes=7, max_bytes=5000, partition_max_bytes=900)
    a, b, c = PartitionFetch("t", 0), PartitionFetch("t", 1), PartitionFetch("u", 0)
    s.replace({("t", 0): a, ("t", 1): b, ("u", 0): c})
    assert s.fetch_request() is None  # no position resolved yet: nothing to ask for
    s.seek(a, 5)
    s.seek(c, 9)
    s.pause(c)
    args, token = s.fetch_request()
    assert args == {"max_wait_ms": 250, "min_bytes": 7, "max_bytes": 5000, "partitions": [["t", 0, 5, 900]]}
    assert s.in_flight == 1 and not s.should_fetch()
    s.resume(c)
    assert s.should_fetch()  # positions moved under the fetch in flight
    assert fetch(s)[0]["partitions"] == [["t", 0, 5, 900], ["u", 0, 9, 900]]


def test_records_come_out_as_messages_and_positions_move():
    s, part = session()
    _, token = fetch(s)
    errors, prefetch = s.accept(token, reply(batch(0, 100) + batch(100, 3), hw=103))
    assert errors == [] and prefetch  # the next fetch leaves before this one is decoded
    assert part.fetch_offset == 103 and part.position == 0 and part.hw == 103
    got = []
    s.take(60, got)
    assert [m.offset() for m in got] == list(range(60)) and part.position == 60
    m = got[7]
    assert (m.topic(), m.partition(), m.key(), m.value(), m.timestamp(), m.error()) == (
        "t", 0, b"k7", b"v7", (1, T0 + 7), None)
    rest = take_all(s)
    assert [m.offset() for m in rest] == list(range(60, 103)) and part.position == 103
    assert rest[-1].value() == b"v102" and rest[-1].timestamp() == (1, T0 + 102)


def test_a_reply_asks_for_the_next_fetch_before_decoding_and_an_empty_one_does_not():
    s, part = session()
    _, token = fetch(s)
    _, prefetch = s.accept(token, reply(batch(0, 1), hw=1))
    assert prefetch and fetch(s)[0]["partitions"] == [["t", 0, 1, 1048576]]
    _, token = fetch(s)
    _, prefetch = s.accept(token, reply(b"", hw=1))
    assert not prefetch   # a long poll that ended empty: the adapter's next call asks again


def test_a_large_reply_asks_for_the_next_fetch_before_decoding():
    s, part = session()
    _, token = fetch(s)
    _, prefetch = s.accept(token, reply(batch(0, 2000, tag=b"x" * 40), hw=2000))
    assert prefetch and s.held_bytes > 64 * 1024
    assert fetch(s)[0]["partitions"] == [["t", 0, 2000, 1048576]]


def test_a_batch_starting_before_the_asked_offset_has_its_head_skipped():
    # One record (a batch wholly before the offset gives nothing), and both decoding paths of
    # longer batches (a per-batch class from 64 records).
    for count in (1, 10, 100):
        s, part = session()
        s.seek(part, 4)
        _, token = fetch(s)
        s.accept(token, reply(batch(0, count), hw=count))
        got = take_all(s)
        assert [m.offset() for m in got] == list(range(4, count))


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 150), min_size=1, max_size=5), start=st.integers(0, 40))
def test_both_builders_give_the_same_records(sizes, start):
    """The confluent-style Message and the aiokafka-style ConsumerRecord carry the same fields."""
    data, base = b"", 0
    for n in sizes:
        data += batch(base, n)
        base += n
    start = min(start, base - 1)
    results = []
    for builder in (MessageBuilder(), _RecordBuilder()):
        s, part = session(builder)
        s.seek(part, start)
        _, token = fetch(s)
        s.accept(token, reply(data, hw=base))
        results.append(take_all(s))
        assert part.position == base
    messages, records = results
    assert [(m.offset(), m.timestamp()[1], m.key(), m.value()) for m in messages] == \
           [(r.offset, r.timestamp, r.key, r.value) for r in records] == \
           [(o, T0 + o, b"k%d" % o, b"v%d" % o) for o in range(start, base)]


@settings(max_examples=30, deadline=None)
@given(rows=st.lists(st.tuples(st.none() | st.binary(max_size=8), st.none() | st.binary(max_size=20),
                               st.integers(0, 1000),
                               st.none() | st.lists(st.tuples(st.text(max_size=4), st.none() | st.binary(max_size=4)),
                                                    max_size=2)),
                     min_size=1, max_size=100))
def test_a_large_batchs_records_equal_the_small_batch_form_in_every_field(rows):
    """Records of batches of 64 or more are msgspec structs (aio_log.structs._BatchConsumerRecord,
    log.message._BatchRecord); they must read exactly as the tuples built for small batches."""
    from unittest.mock import patch

    from clients.aio_log import consumer as aio_consumer
    from clients.log import message
    data = build_batch([(k, v, T0 + td, hd) for k, v, td, hd in rows], base_offset=7)
    h = read_header(data)
    body = memoryview(data)[HEADER_SIZE:]
    forms = []
    for threshold in (1, 10**9):  # msgspec structs, then the tuples
        with patch.object(aio_consumer, "_CLASS_PER_BATCH", threshold), patch.object(message, "_CLASS_PER_BATCH", threshold):
            forms.append((_RecordBuilder().records("t", 2, h, body, 7), MessageBuilder().records("t", 2, h, body, 7)))
    (structs, struct_msgs), (tuples, tuple_msgs) = forms
    fields = ("topic", "partition", "offset", "timestamp", "timestamp_type", "key", "value", "checksum",
              "serialized_key_size", "serialized_value_size", "headers")
    assert [tuple(getattr(r, f) for f in fields) for r in structs] == [tuple(r) for r in tuples]
    assert structs == tuples and {hash(r) for r in structs} == {hash(r) for r in tuples}
    assert [repr(r) for r in structs] == [repr(r) for r in tuples]
    methods = ("topic", "partition", "offset", "timestamp", "key", "value", "headers", "error", "latency",
               "leader_epoch", "__len__")
    assert [[getattr(m, f)() for f in methods] for m in struct_msgs] == \
           [[getattr(m, f)() for f in methods] for m in tuple_msgs]
    # A program written against confluent-kafka or aiokafka may check the type it imported.
    from clients.aio_log.structs import ConsumerRecord
    assert all(isinstance(r, ConsumerRecord) for r in structs + tuples)
    assert all(isinstance(m, message.Message) for m in struct_msgs + tuple_msgs)
    assert not isinstance((1, 2), message.Message) and not isinstance(struct_msgs[0], ConsumerRecord)


def test_every_reposition_drops_what_was_fetched_for_the_partition():
    s, part = session()
    _, token = fetch(s)
    s.accept(token, reply(batch(0, 100), hw=100))
    got = []
    s.take(5, got)
    assert [m.offset() for m in got] == [0, 1, 2, 3, 4]
    s.seek(part, 50)  # decoded and raw data of the old position are dropped
    assert take_all(s) == []
    _, token = fetch(s)
    assert token[0][1] == 50
    s.accept(token, reply(batch(0, 100), hw=100))
    assert [m.offset() for m in take_all(s)][:2] == [50, 51]


def test_a_reply_to_a_request_made_before_a_reposition_is_ignored():
    s, part = session()
    _, old = fetch(s)
    s.seek(part, 30)
    _, new = fetch(s)
    s.accept(old, reply(batch(0, 100), hw=100))
    assert take_all(s) == [] and part.fetch_offset == 30
    s.accept(new, reply(batch(0, 100), hw=100))
    assert take_all(s)[0].offset() == 30


def test_pause_drops_prefetched_records_and_resume_fetches_them_again():
    s, part = session()
    _, token = fetch(s)
    s.accept(token, reply(batch(0, 100), hw=100))
    got = []
    s.take(10, got)
    s.pause(part)
    assert take_all(s) == [] and part.fetch_offset == 10
    assert s.fetch_request() is None  # a paused partition is not fetched
    s.resume(part)
    _, token = fetch(s)
    assert token[0][1] == 10


def test_replacing_the_assignment_drops_partitions_given_up_and_keeps_those_kept():
    s, part, other = two_partitions()
    _, token = fetch(s)
    s.accept(token, {"results": [["t", 0, None, 100, 0, batch(0, 100)], ["t", 1, None, 100, 0, batch(0, 100, b"w")]]})
    s.replace({("t", 1): other})  # t-0 is given up, t-1 kept with what it fetched
    got = take_all(s)
    assert {(m.partition(), m.value()[:1]) for m in got} == {(1, b"w")} and len(got) == 100
    s.add(("t", 1), PartitionFetch("t", 1))  # assigned again: starts afresh
    assert other.epoch > 0 and s.fetch_request() is None  # the new one has no position yet
    s.remove(("t", 1))
    assert s.parts == {}


@pytest.mark.parametrize("check_crcs", [True, False])
def test_a_corrupt_batch_is_an_event_at_its_offset(check_crcs):
    data = bytearray(batch(0, 10) + batch(10, 10) + batch(20, 10))
    second = read_header(data, 0).size
    data[second + HEADER_SIZE + 5] ^= 0xFF  # a byte inside the second batch's records
    s, part = session(check_crcs=check_crcs)
    _, token = fetch(s)
    s.accept(token, reply(bytes(data), hw=30))
    got = take_all(s)
    offsets = [m.offset() for m in got if m.error() is None]
    [err] = [m for m in got if m.error() is not None]
    assert err.error().code() == KafkaError._BAD_MSG and err.offset() == 10 and "offset 10" in err.error().str()
    assert got.index(err) == 10  # in its place, after the records before it
    if check_crcs:  # stop there until the application seeks
        assert offsets == list(range(10)) and part.position == 10 and part.failed
        assert s.fetch_request() is None
        s.seek(part, 20)
        assert fetch(s)[1][0][1] == 20
    else:  # exactly that batch is skipped
        assert offsets == list(range(10)) + list(range(20, 30)) and part.position == 30
        assert fetch(s)[1][0][1] == 30


def test_an_unreadable_header_stops_the_partition_after_the_batches_before_it():
    good = batch(0, 10)
    bad = bytearray(batch(10, 10))
    bad[12] = 9  # an unknown magic: no length to trust
    s, part = session(check_crcs=False)
    _, token = fetch(s)
    s.accept(token, reply(good + bytes(bad), hw=20))
    got = take_all(s)
    assert [m.offset() for m in got[:10]] == list(range(10))
    assert got[10].error().code() == KafkaError._BAD_MSG and got[10].offset() == 10
    assert part.failed and s.fetch_request() is None


def _spoil(kind):
    """Three batches of 10 (offsets 0-29), the second spoiled as `kind` says."""
    data = bytearray(batch(0, 10) + batch(10, 10) + batch(20, 10))
    second = read_header(data, 0).size
    if kind == "crc":
        data[second + HEADER_SIZE + 5] ^= 0xFF   # a byte inside its records
    elif kind == "crc-alone":   # the only batch of its result: the result makes no records at all
        data = bytearray(batch(10, 10))
        data[HEADER_SIZE + 5] ^= 0xFF
    elif kind == "structure":
        data[second + 19:second + 23] = (0).to_bytes(4, "big")  # record count 0: no batch has that
    return bytes(data)


@pytest.mark.parametrize("kind, check_crcs", [("clean", True), ("crc", True), ("crc", False),
                                              ("crc-alone", False),
                                              ("structure", True), ("structure", False)])
def test_a_results_bytes_are_released_with_its_last_chunk_however_its_decoding_ends(kind, check_crcs):
    """`_decode` hands a result's byte count to the last chunk it makes (records, or the event
    a bad batch becomes), so whatever stops or skips, the bytes held go back to 0 once all of
    it is taken (a leak here would stop the prefetcher for good)."""
    data = _spoil(kind)
    s, part = session(check_crcs=check_crcs, prefetch_limit=len(data))
    if kind == "crc-alone":
        s.seek(part, 10)
    _, token = fetch(s)
    s.accept(token, reply(data, hw=30))
    assert s.held_bytes == len(data) and not s.should_fetch()
    got = []
    while s.take(1, got) is None and s.has_data():
        assert s.held_bytes == (len(data) if s.has_data() else 0)
    assert s.held_bytes == 0
    bad = [m for m in got if m.error() is not None]
    if kind == "clean":
        assert offsets(got) == list(range(30)) and not bad
    elif kind == "crc-alone":
        assert offsets(got) == [10] and bad and part.fetch_offset == 20
    elif kind == "crc" and not check_crcs:
        assert offsets(got) == list(range(10)) + [10] + list(range(20, 30)) and part.position == 30
    else:  # stopped at the bad batch, which a structure error stops whatever check_crcs says
        assert offsets(got) == list(range(11)) and bad[0].offset() == 10 and part.failed
    assert s.should_fetch() and (s.fetch_request() is None) == part.failed  # a stopped partition asks no more


def test_at_end_is_whether_every_partition_answered_reached_its_high_watermark():
    s, part, other = two_partitions()
    _, token = fetch(s)
    s.accept(token, {"results": [["t", 0, None, 10, 0, batch(0, 10)], ["t", 1, None, 50, 0, batch(0, 10)]]})
    assert not s.at_end   # t-1 is behind its high watermark
    _, token = fetch(s)
    s.accept(token, {"results": [["t", 0, None, 10, 0, None], ["t", 1, None, 20, 0, batch(10, 10)]]})
    assert s.at_end       # t-0 had nothing new at its watermark, t-1 reached its
    _, token = fetch(s)
    s.accept(token, {"results": [["t", 0, None, 30, 0, batch(10, 10)], ["t", 1, ["BOOM", "x"], 20, 0, None]]})
    assert not s.at_end   # an error row counts for nothing; t-0 is behind
    _, token = fetch(s)
    s.accept(token, {"results": [["t", 0, ["BOOM", "x"], 30, 0, None]]})
    assert not s.at_end   # nothing answered: left as it was


def test_stop_at_event_raises_nothing_until_the_records_before_it_are_taken():
    data = bytearray(batch(0, 10) + batch(10, 10))
    data[read_header(data, 0).size + HEADER_SIZE + 3] ^= 0x55
    s, part = session(_RecordBuilder())
    _, token = fetch(s)
    s.accept(token, reply(bytes(data), hw=20))
    pieces = []
    assert s.take(100, pieces, stop_at_event=True, grouped=True) is None
    assert [(p, [r.offset for r in recs]) for p, recs in pieces] == [(part, list(range(10)))]
    event = s.take(100, [], stop_at_event=True)
    assert isinstance(event, FetchEvent) and (event.kind, event.offset) == (CORRUPT, 10)
    assert s.take(100, [], stop_at_event=True) is None and part.position == 10


def test_records_set_aside_by_taking_other_partitions_survive_their_partitions_stop():
    # getmany(partitions=[t-1]) decodes t-0's result while looking for t-1's, meets the
    # header `accept` could not read after t-0's good batch, and stops t-0 there: the good
    # records it set aside still come first when t-0 is taken, as without the detour.
    good = batch(0, 10)
    bad = bytearray(45)   # a Kafka batch's magic where ours would be 0: a Kafka header, cut short
    bad[16] = 2
    s, part, other = two_partitions(builder=_RecordBuilder(), check_crcs=False)
    _, token = fetch(s)
    s.accept(token, {"results": [["t", 0, None, 20, 0, good + bytes(bad)], ["t", 1, None, 5, 0, batch(0, 5)]]})
    got = []
    s.take(100, got, only={("t", 1)})
    assert [(r.partition, r.offset) for r in got] == [(1, o) for o in range(5)]
    got = []
    s.take(100, got, stop_at_event=True)
    assert [(r.partition, r.offset) for r in got] == [(0, o) for o in range(10)]
    event = s.take(100, [], stop_at_event=True)
    assert event.kind == CORRUPT and event.offset == 10 and part.failed


def test_taking_only_some_partitions_leaves_the_others_in_order():
    s, part = session(_RecordBuilder())
    other = PartitionFetch("t", 1)
    s.add(("t", 1), other)
    s.seek(other, 0)
    _, token = fetch(s)
    s.accept(token, {"results": [["t", 0, None, 5, 0, batch(0, 5)], ["t", 1, None, 5, 0, batch(0, 5)]]})
    got = []
    s.take(100, got, only={("t", 1)})
    assert [(r.partition, r.offset) for r in got] == [(1, o) for o in range(5)]
    got = []
    s.take(100, got)
    assert [(r.partition, r.offset) for r in got] == [(0, o) for o in range(5)]


def test_partition_eof_comes_once_per_catch_up_after_the_data():
    s, part = session(partition_eof=True)
    _, token = fetch(s)
    s.accept(token, reply(batch(0, 3), hw=3))
    _, token = fetch(s)
    s.accept(token, reply(b"", hw=3))
    _, token = fetch(s)
    s.accept(token, reply(b"", hw=3))  # still at the end: no second EOF
    got = take_all(s)
    assert [m.offset() for m in got] == [0, 1, 2, 3]
    assert got[3].error().code() == KafkaError._PARTITION_EOF
    assert s.take(5, []) is None and take_all(s) == []


def test_partition_errors_go_back_to_the_adapter():
    s, part = session()
    _, token = fetch(s)
    errors, _ = s.accept(token, reply(None, hw=-1, err=[1, "offset out of range"]))
    assert errors == [(part, [1, "offset out of range"])] and part.fetch_offset == 0


def test_a_lost_connection_starts_fetching_again_from_the_positions():
    s, part = session()
    _, token = fetch(s)
    s.accept(token, reply(batch(0, 100), hw=100))
    got = []
    s.take(40, got)
    fetch(s)
    s.connection_lost()
    assert s.in_flight == 0 and part.fetch_offset == 40
    assert take_all(s) == []  # what was held is dropped with it; it is fetched again
    assert fetch(s)[1][0][1] == 40


def test_events_are_built_by_the_builder():
    msg = MessageBuilder().event(FetchEvent(PARTITION_EOF, "t", 2, 7, "end"))
    assert msg.error().code() == KafkaError._PARTITION_EOF and (msg.topic(), msg.partition(), msg.offset()) == (
        "t", 2, 7)


def test_fetched_bytes_count_against_the_prefetch_limit_until_their_records_are_handed_out():
    s, part = session(_RecordBuilder(), prefetch_limit=1000)
    other = PartitionFetch("t", 1)
    s.add(("t", 1), other)
    s.seek(other, 0)
    _, token = fetch(s)
    data = batch(0, 100)
    s.accept(token, {"results": [["t", 0, None, 100, 0, data], ["t", 1, None, 100, 0, data]]})
    assert s.held_bytes == 2 * len(data) > s.prefetch_limit and not s.should_fetch()
    got = []
    s.take(100, got, only={("t", 1)})  # decodes both; t-0's records stay, so do their bytes
    assert len(got) == 100 and s.held_bytes == len(data) and not s.should_fetch()
    s.take(50, got)
    assert s.held_bytes == len(data)  # half of t-0's records are still held
    s.take(50, got)
    assert s.held_bytes == 0 and s.should_fetch()
    _, token = fetch(s)
    s.accept(token, {"results": [["t", 0, None, 200, 0, batch(100, 100)]]})
    s.seek(part, 0)  # dropped records release their bytes when the session meets them
    assert s.take(10, []) is None and s.held_bytes == 0


@pytest.mark.parametrize("row", [
    ["t", 0, None, "100", 0, None],            # high watermark not a number
    ["t", 0, None, 100, 0, 12345],              # records not bytes
    ["t", 0, "boom", 100, 0, None],             # error field not [code, message]
    ["t", 0, None, 100],                        # too short
])
def test_a_malformed_result_row_is_a_partition_error_not_a_crash(row):
    s, part = session()
    _, token = fetch(s)
    errors, _ = s.accept(token, {"results": [row]})
    assert [(p, e[0]) for p, e in errors] == [(part, "CORRUPT_MESSAGE")]
    assert take_all(s) == [] and part.fetch_offset == 0


@pytest.mark.parametrize("result", [None, [], {"results": 7}, {"results": [None, 5, ["t"]]},
                                    # one row for the one partition asked (matched without an index)
                                    {"results": [None]}, {"results": [["t"]]},
                                    reply(batch(0, 3), 3, topic="u"), reply(batch(0, 3), 3, partition=1),
                                    reply(batch(0, 3), 3, topic=b"t")])
def test_a_reply_of_the_wrong_shape_gives_no_records_and_raises_nothing(result):
    s, part = session()
    _, token = fetch(s)
    assert s.accept(token, result) == ([], False)
    assert take_all(s) == [] and part.fetch_offset == 0


# ---- continued fetches (a server that keeps fetch sessions) ----------------------------------

def continued_session(at_end=True, **kw):
    s, part = session(**kw)
    s.continued = True
    s.at_end = at_end   # as after a reply that reached the high watermark
    return s, part


def session_reply(start, records, hw, err=None, topic="t", partition=0):
    """A fetch-session reply row: the offset it was read from comes seventh."""
    return {"results": [[topic, partition, err, hw, 0, records, start]]}


def offsets(messages):
    return [m.offset() for m in messages]


def test_the_second_fetch_in_flight_continues_in_the_servers_session():
    s, part = continued_session()
    assert s.wanted() == 2
    first, t1 = s.fetch_request()
    second, t2 = s.fetch_request()
    assert first["session"] == second["session"] == 1
    assert first["partitions"] == [["t", 0, 0, 1048576]]        # the first names its offset
    assert second["partitions"] == [["t", 0, None, 1048576]]    # the second goes on after it
    assert s.in_flight == 2 and not s.should_fetch()
    _, prefetch = s.accept(t1, session_reply(0, batch(0, 3), hw=3))
    assert not prefetch          # the continuation is parked already: the next can wait
    assert s.should_fetch()
    _, t3 = s.fetch_request()
    assert t3[0][1] is None
    s.accept(t2, session_reply(3, batch(3, 2), hw=5))
    s.accept(t3, session_reply(5, b"", hw=5))
    assert offsets(take_all(s)) == [0, 1, 2, 3, 4]
    assert part.fetch_offset == 5


def test_a_reply_that_does_not_continue_the_data_held_is_dropped_and_the_offset_sent_again():
    s, part = continued_session()
    _, t1 = s.fetch_request()
    _, t2 = s.fetch_request()
    s.fetch_failed(t1)                               # its reply never came
    s.accept(t2, session_reply(3, batch(3, 2), hw=5))   # the server went on from 3: a gap for us
    assert take_all(s) == [] and part.fetch_offset == 0
    args, t3 = s.fetch_request()
    assert args["partitions"] == [["t", 0, 0, 1048576]]
    s.accept(t3, session_reply(0, batch(0, 5), hw=5))
    assert offsets(take_all(s)) == [0, 1, 2, 3, 4]


def test_a_seek_sends_its_offset_and_drops_the_replies_still_coming():
    s, part = continued_session()
    _, t1 = s.fetch_request()
    _, t2 = s.fetch_request()
    s.seek(part, 40)
    assert s.should_fetch()                          # positions moved: one more, now
    args, t3 = s.fetch_request()
    assert args["partitions"] == [["t", 0, 40, 1048576]]
    s.accept(t1, session_reply(0, batch(0, 3), hw=50))
    s.accept(t2, session_reply(3, batch(3, 3), hw=50))
    s.accept(t3, session_reply(40, batch(40, 2), hw=50))
    assert offsets(take_all(s)) == [40, 41]
    _, t4 = s.fetch_request()
    assert t4[0][1] is None                          # continues after the seek's reply


def test_a_partition_left_out_of_a_request_names_its_offset_when_it_comes_back():
    s = FetchSession(MessageBuilder())
    s.continued = True
    a, b = PartitionFetch("t", 0), PartitionFetch("t", 1)
    s.replace({("t", 0): a, ("t", 1): b})
    s.seek(a, 0)
    s.seek(b, 7)
    args, _ = s.fetch_request()
    assert [p[2] for p in args["partitions"]] == [0, 7]
    s.pause(b)
    args, _ = s.fetch_request()
    assert args["partitions"] == [["t", 0, None, 1048576]]
    s.resume(b)
    args, _ = s.fetch_request()
    assert [p[2] for p in args["partitions"]] == [None, 7]


def test_an_error_row_breaks_the_chain():
    s, part = continued_session()
    _, t1 = s.fetch_request()
    errors, _ = s.accept(t1, session_reply(0, None, hw=-1, err=["NOT_FOUND", "no such topic"]))
    assert errors == [(part, ["NOT_FOUND", "no such topic"])]
    part.failed = False
    args, _ = s.fetch_request()
    assert args["partitions"][0][2] == 0


def test_a_server_that_refuses_fetch_sessions_leaves_one_fetch_in_flight():
    s, part = continued_session()
    _, t1 = s.fetch_request()
    _, t2 = s.fetch_request()
    assert s.fetch_refused(t1) is True
    assert not s.continued
    assert s.fetch_refused(t2) is True               # the second was a session fetch too
    args, t3 = s.fetch_request()
    assert "session" not in args and args["partitions"] == [["t", 0, 0, 1048576]]
    assert not s.should_fetch()                      # one in flight, as before
    assert s.fetch_refused(t3) is False              # a plain fetch refused is the application's error
    _, t4 = s.fetch_request()
    s.accept(t4, reply(batch(0, 2), hw=2))
    assert offsets(take_all(s)) == [0, 1]


def test_a_session_row_without_a_start_offset_is_dropped():
    s, part = continued_session()
    _, t1 = s.fetch_request()
    errors, _ = s.accept(t1, {"results": [["t", 0, None, 3, 0, batch(0, 3), "zero"]]})
    assert take_all(s) == []    # not where the data held ends: dropped, sent again
    args, _ = s.fetch_request()
    assert args["partitions"][0][2] == 0


def test_behind_the_end_of_the_log_one_continued_fetch_is_in_flight():
    """Replay: replies follow each other anyway, so the second fetch waits until a reply
    reaches the high watermark (a live tail, where a record must find a fetch parked)."""
    s, part = continued_session(at_end=False)
    assert s.wanted() == 1
    _, t1 = s.fetch_request()
    assert not s.should_fetch()
    _, prefetch = s.accept(t1, session_reply(0, batch(0, 5), hw=100))
    assert prefetch and s.wanted() == 1 and not s.at_end
    args, t2 = s.fetch_request()
    assert args["partitions"][0][2] is None
    s.accept(t2, session_reply(5, batch(5, 95), hw=100))
    assert s.at_end and s.wanted() == 2


# ---- streamed fetches (a server that answers a fetch more than once) ---------------------------

def test_a_streamed_fetch_stays_in_flight_until_its_last_answer_and_its_successor_goes_before():
    s, part = continued_session()
    s.answers = 4
    args, first = fetch(s)
    assert args["answers"] == 4 and s.in_flight == 1
    for start, more in ((0, 3), (1, 2)):
        s.accept(first, dict(session_reply(start, batch(start, 1), start + 1), more=more))
        assert s.in_flight == 1 and s.wanted() == 0   # more answers are coming
    s.accept(first, dict(session_reply(2, batch(2, 1), 3), more=1))
    assert s.wanted() == 1   # one answer left: ask for the next stream now, so none is missed
    args, second = fetch(s)
    assert args["partitions"][0][2] is None and s.in_flight == 2 and s.wanted() == 0
    s.accept(first, dict(session_reply(3, batch(3, 1), 4), more=0))   # the first stream's last
    assert s.in_flight == 1 and s.wanted() == 0
    s.accept(second, dict(session_reply(4, batch(4, 1), 5), more=3))
    assert offsets(take_all(s)) == [0, 1, 2, 3, 4] and s.in_flight == 1
