"""The produce-request core both log producers share (clients/log/produce_requests.py), without
sockets: which batches make a request, and what a reply, a lost connection or the delivery
timeout means for each batch. The producers' real-server tests (test_log_clients_produce_consume,
test_log_clients_aio, test_log_clients_admin_restart) check the same paths over the wire."""

import asyncio
import signal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.aio_log.errors import KafkaTimeoutError
from clients.aio_log.producer import AIOKafkaProducer
from clients.log import AdminClient, KafkaError, NewTopic, Producer
from clients.log.produce_requests import (CONNECTION_CLOSED, DELIVERY_TIMED_OUT, PURGED, PURGED_IN_FLIGHT,
                                          ProduceRequest, ProduceRequests)
from harness import wait_until


def _core(acks=1, max_request=1000, max_in_flight=10, delivery_timeout=None):
    return ProduceRequests(acks, 30_000, max_request, max_in_flight, delivery_timeout)


def _tps(request: ProduceRequest):
    return [(t, p) for t, p, _ in request.args["data"]]


def test_one_batch_per_partition_per_request_within_max_request_and_order_kept():
    core = _core(max_request=250)
    for name, (t, p, size) in enumerate([("a", 0, 100), ("a", 0, 100), ("a", 1, 100), ("b", 0, 100),
                                         ("a", 1, 10), ("c", 0, 10)]):
        core.add(t, p, bytes(size), name, 0.0)
    first = core.next_request()
    # a-0's second batch waits for the next request (one per partition); b-0 does not fit in
    # 250 bytes, and a-1's second batch, though small, must not overtake a-1's first.
    assert first.args == {"acks": 1, "timeout_ms": 30_000, "data": [["a", 0, bytes(100)], ["a", 1, bytes(100)],
                                                                     ["c", 0, bytes(10)]]}
    assert [item[3] for item in first.items] == [0, 2, 5]
    assert core.sent(first, 1.0, 7) == []
    second = core.next_request()  # pipelined behind the first: each partition still in order
    assert _tps(second) == [("a", 0), ("b", 0), ("a", 1)] and [i[3] for i in second.items] == [1, 3, 4]
    assert core.next_request() is None


def test_a_small_batch_never_overtakes_its_partitions_larger_one_left_out_for_size():
    core = _core(max_request=100)
    core.add("t", 1, bytes(60), "other", 0.0)
    core.add("t", 0, bytes(60), "large", 0.0)   # does not fit beside "other"
    core.add("t", 0, bytes(10), "small", 0.0)   # would fit, but must follow "large"
    assert [i[3] for i in core.next_request().items] == ["other"]
    assert [i[3] for i in core.next_request().items] == ["large"]
    assert [i[3] for i in core.next_request().items] == ["small"]


def test_a_batch_larger_than_max_request_still_goes_alone():
    core = _core(max_request=10)
    core.add("t", 0, bytes(50), "big", 0.0)
    core.add("t", 1, bytes(5), "small", 0.0)
    assert [i[3] for i in core.next_request().items] == ["big"]
    assert [i[3] for i in core.next_request().items] == ["small"]


def test_a_reply_maps_base_offsets_and_errors_back_to_each_batch():
    core = _core()
    for name, (t, p) in enumerate([("t", 0), ("t", 1), ("t", 2), ("t", 3), ("u", 0)]):
        core.add(t, p, b"x", name, 0.0)
    request = core.next_request()
    core.sent(request, 0.0, 1)
    assert core.in_flight == 1
    outcomes = core.completed(request, {"results": [
        ["t", 0, 40, None],
        ["t", 1, -1, ["STORAGE_ERROR", "disk full"]],
        ["t", 2, "forty", None],             # a malformed offset
        ["u", 0, 7, "not a pair"],           # a malformed error field
        # t-3 is not mentioned at all
    ]})
    by = {b: (base, err) for b, base, err in outcomes}
    assert by[0] == (40, None)
    assert by[1] == (-1, ("STORAGE_ERROR", "disk full"))
    assert by[2][0] == -1 and by[2][1][0] == "INTERNAL_ERROR" and "t-2" in by[2][1][1]
    assert by[3][0] == -1 and "t-3" in by[3][1][1]
    assert by[4][0] == -1 and by[4][1][0] == "INTERNAL_ERROR"
    assert core.in_flight == 0 and len(core) == 0
    # A second reply to the same request (or one for a request no longer in flight) gives nothing.
    assert core.completed(request, {"results": [["t", 0, 41, None]]}) == []
    assert core.completed(request, "garbage") == []


@pytest.mark.parametrize("results, outcome", [
    ([["t", 0, 40, None]], (40, None)),
    ([["t", 0, -1, ["STORAGE_ERROR", "disk full"]]], (-1, ("STORAGE_ERROR", "disk full"))),
    ([["t", 0, "forty", None]], (-1, "INTERNAL_ERROR")),
    ([["t", 0, True, None]], (-1, "INTERNAL_ERROR")),      # a bool is not an offset
    ([["t", 1, 40, None]], (-1, "INTERNAL_ERROR")),        # another partition's result
    ([["u", 0, 40, None]], (-1, "INTERNAL_ERROR")),        # another topic's
    ([["t", 0, 40]], (40, None)),                          # no error field: stored
    ([], (-1, "INTERNAL_ERROR")),
    ([["t", 0, 40, None], ["t", 0, 41, None]], (41, None)),  # two results for it: the last, as for many batches
])
def test_a_one_batch_reply_gives_the_outcome_a_many_batch_reply_gives_it(results, outcome):
    # completed() takes a one-batch reply without building its results map (a linger-0
    # producer's usual reply); whatever the reply, the outcome must be the general path's.
    for how in ("single", "sent_single", "general"):
        core = _core()
        if how == "single":
            request = core.single("t", 0, b"x", "b", 0.0)
            core.sent(request, 0.0, 1)
        elif how == "sent_single":
            request = core.sent_single("t", 0, b"x", "b", 0.0, 1)
        else:
            core.add("t", 0, b"x", "b", 0.0)
            request = core.next_request()
            core.sent(request, 0.0, 1)
        assert core.in_flight == 1 and len(core) == 1 and request.token == 1
        [(batch, base, err)] = core.completed(request, {"results": results})
        assert batch == "b" and base == outcome[0]
        assert err == outcome[1] if not isinstance(outcome[1], str) else err[0] == outcome[1]
        assert core.in_flight == 0 and len(core) == 0
        # A reply that comes again, or after the connection was lost, gives nothing.
        assert core.completed(request, {"results": [["t", 0, 40, None]]}) == []


def test_a_one_batch_request_sent_in_one_step_goes_again_when_the_connection_is_lost():
    core = _core()
    request = core.sent_single("t", 0, b"x", "b", 0.0, 7)
    core.connection_lost()
    assert core.in_flight == 0 and core.completed(request, {"results": [["t", 0, 40, None]]}) == []
    again = core.next_request()
    assert again.args["data"] == [["t", 0, b"x"]] and again.items[0][3] == "b"


def test_a_reply_that_is_not_a_dict_fails_every_batch():
    core = _core()
    core.add("t", 0, b"x", "b", 0.0)
    request = core.next_request()
    core.sent(request, 0.0, 1)
    [(batch, base, err)] = core.completed(request, ["not", "a", "dict"])
    assert batch == "b" and base == -1 and err[0] == "INTERNAL_ERROR"


def test_a_failed_request_fails_each_batch_once():
    core = _core()
    core.add("t", 0, b"x", "a", 0.0)
    core.add("t", 1, b"x", "b", 0.0)
    request = core.next_request()
    core.sent(request, 0.0, 1)
    error = ("MESSAGE_TOO_LARGE", "too big")
    assert core.failed(request, error) == [("a", -1, error), ("b", -1, error)]
    assert core.failed(request, error) == [] and core.in_flight == 0


def test_a_request_that_could_not_be_written_fails_or_goes_back_first():
    core = _core()
    core.add("t", 0, b"x", "a", 0.0)
    core.add("t", 0, b"x", "b", 0.0)
    request = core.next_request()
    core.unsent(request)  # the blocking producer: the connection is gone, send it again later
    assert [i[3] for i in core.ready] == ["a", "b"]
    request = core.next_request()
    # The asyncio producer: the write raised, the batch fails (it was never in flight).
    assert core.failed(request, (CONNECTION_CLOSED, "gone")) == [("a", -1, (CONNECTION_CLOSED, "gone"))]
    assert [i[3] for i in core.ready] == ["b"]


def test_acks_zero_delivers_when_written_and_keeps_nothing_in_flight():
    core = _core(acks=0, max_in_flight=1)
    core.add("t", 0, b"x", "a", 0.0)
    core.add("t", 0, b"x", "b", 0.0)
    r1 = core.next_request()
    assert r1.args["acks"] == 0
    assert core.sent(r1, 0.0) == [("a", -1, None)]
    r2 = core.next_request()  # the in-flight limit does not hold back requests without replies
    assert core.sent(r2, 0.0) == [("b", -1, None)] and core.in_flight == 0


def test_the_in_flight_limit_holds_batches_until_a_reply():
    core = _core(max_in_flight=2)
    for p in range(3):
        core.add("t", 0, b"x", p, 0.0)
    r1, r2 = core.next_request(), None
    core.sent(r1, 0.0, 1)
    r2 = core.next_request()
    core.sent(r2, 0.0, 2)
    assert core.next_request() is None and len(core) == 3
    core.completed(r1, {"results": [["t", 0, 0, None]]})
    r3 = core.next_request()
    assert [i[3] for i in r3.items] == [2]


def test_a_lost_connection_queues_unanswered_batches_again_in_order_and_drops_their_late_replies():
    core = _core()
    for name in range(3):
        core.add("t", 0, b"x", name, 0.0)
    requests = []
    while (r := core.next_request()) is not None:
        core.sent(r, 0.0, len(requests) + 1)
        requests.append(r)
    core.add("t", 0, b"x", 3, 0.0)  # closed while the connection was up, not sent yet
    core.completed(requests[0], {"results": [["t", 0, 0, None]]})
    core.connection_lost()
    assert core.in_flight == 0
    assert [i[3] for i in core.ready] == [1, 2, 3]
    assert core.completed(requests[1], {"results": [["t", 0, 1, None]]}) == []
    assert core.failed(requests[2], (CONNECTION_CLOSED, "gone")) == []
    assert [i[3] for i in core.next_request().items] == [1]


def test_the_delivery_timeout_fails_queued_and_unanswered_batches_and_names_the_requests():
    core = _core(delivery_timeout=5.0)
    core.add("t", 0, b"x", "sent", 0.0)
    request = core.next_request()
    core.sent(request, 1.0, 42)
    core.add("t", 1, b"x", "queued-early", 2.0)
    core.add("t", 2, b"x", "queued-late", 4.0)
    assert core.expire(5.9) == ([], [])
    outcomes, tokens = core.expire(7.0)
    assert tokens == [42]
    assert {b: e[0] for b, _, e in outcomes} == {"sent": DELIVERY_TIMED_OUT, "queued-early": DELIVERY_TIMED_OUT}
    assert [i[3] for i in core.ready] == ["queued-late"] and core.in_flight == 0
    assert core.completed(request, {"results": [["t", 0, 0, None]]}) == []  # the late reply is dropped
    assert _core().expire(1e9) == ([], [])  # no delivery timeout: nothing expires


def test_purge_fails_what_is_queued_not_what_is_in_flight():
    core = _core()
    core.add("t", 0, b"x", "sent", 0.0)
    core.sent(core.next_request(), 0.0, 1)
    core.add("t", 0, b"x", "queued", 0.0)
    assert core.purge() == [("queued", -1, (PURGED, "purged from the send queue"))]
    assert len(core) == 1 and core.in_flight == 1


def test_purging_in_flight_fails_unanswered_batches_names_their_requests_and_drops_late_replies():
    core = _core()
    core.add("t", 0, b"x", "a", 0.0)
    core.add("t", 1, b"x", "b", 0.0)
    request = core.next_request()
    core.sent(request, 0.0, 9)
    core.add("t", 0, b"x", "queued", 0.0)
    outcomes, tokens = core.purge_in_flight()
    assert tokens == [9] and core.in_flight == 0
    assert outcomes == [("a", -1, (PURGED_IN_FLIGHT, "purged while in flight")),
                        ("b", -1, (PURGED_IN_FLIGHT, "purged while in flight"))]
    assert core.completed(request, {"results": [["t", 0, 0, None], ["t", 1, 0, None]]}) == []
    assert [i[3] for i in core.ready] == ["queued"] and len(core) == 1


def test_bad_acks_are_refused():
    with pytest.raises(ValueError):
        ProduceRequests(2, 1000, 1000, 1)


_add = st.tuples(st.just("add"), st.integers(0, 2), st.integers(1, 60))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(
    _add, _add, _add,
    st.tuples(st.just("send"), st.booleans()),
    st.tuples(st.just("reply"), st.integers(0, 5), st.booleans()),
    st.tuples(st.just("lose")),
    st.tuples(st.just("tick"), st.floats(0, 3)),
), max_size=60), st.integers(1, 4), st.integers(30, 150), st.sampled_from([0, 2]))
def test_every_batch_gets_one_outcome_and_each_partition_is_sent_in_order(steps, max_in_flight, max_request,
                                                                          retries):
    """A model run: whatever the order of closes, sends, replies (failures retried or not),
    lost connections and the passing of time, each batch gets exactly one outcome, the in-flight
    limit and the one-batch-per-partition rule hold, and a partition's batches are (re)sent in
    the order they closed."""
    core = ProduceRequests(1, 1000, max_request, max_in_flight, delivery_timeout=4.0, retries=retries,
                           retry_backoff=0.5, retry_backoff_max=1.0)
    now, names, token = 0.0, 0, 0
    outcomes: dict[int, tuple] = {}
    in_flight: list[ProduceRequest] = []
    closed_order: dict[tuple, list] = {}

    def settle(got):
        for batch, base, err in got:
            assert batch not in outcomes, f"batch {batch} settled twice"
            outcomes[batch] = (base, err)

    for step in steps:
        if step[0] == "add":
            tp = ("t", step[1])
            core.add(*tp, bytes(step[2]), names, now)
            closed_order.setdefault(tp, []).append(names)
            names += 1
        elif step[0] == "send":
            request = core.next_request(now)
            if request is None:
                # Nothing to send, or the in-flight limit, or every queued partition waits for a
                # batch backing off before a retry: its oldest batch to retry (a partition's later
                # batches, ready or due, wait behind it to keep the order they closed in).
                oldest = {}
                for entry in core.retrying:
                    tp = (entry[1][0], entry[1][1])
                    if tp not in oldest or entry[0] < oldest[tp][0]:
                        oldest[tp] = entry
                backing_off = {tp for tp, entry in oldest.items() if entry[2] > now}
                assert core.in_flight >= max_in_flight or (
                    len(backing_off) == len(oldest) and all((i[0], i[1]) in backing_off for i in core.ready))
                continue
            tps = _tps(request)
            assert len(tps) == len(set(tps))
            assert len(tps) == 1 or sum(len(d) for _, _, d in request.args["data"]) <= max_request
            for t, p, _, batch, _ in request.items:
                order = closed_order[(t, p)]
                # Batches of one partition go out in closing order: every earlier batch of the
                # partition not yet settled is in flight (after a lost connection, resent first).
                unsettled = [b for b in order if b not in outcomes]
                assert batch in unsettled
                earlier_unsettled = [b for b in unsettled if b < batch]
                assert all(any(b == i[3] for r in in_flight for i in r.items) for b in earlier_unsettled), \
                    f"batch {batch} sent before earlier batches {earlier_unsettled} of its partition"
            token += 1
            assert core.sent(request, now, token) == []
            in_flight.append(request)
            assert core.in_flight <= max_in_flight
        elif step[0] == "reply" and in_flight:
            request = in_flight.pop(step[1] % len(in_flight))
            if step[2]:
                settle(core.completed(request, {"results": [[t, p, 100, None] for t, p, _ in request.args["data"]]},
                                      now))
            else:
                settle(core.failed(request, ("STORAGE_ERROR", "x"), now))
        elif step[0] == "lose":
            core.connection_lost()
            in_flight.clear()
        elif step[0] == "tick":
            now += step[1]
            got, tokens = core.expire(now)
            settle(got)
            in_flight = [r for r in in_flight if r.token not in tokens]
    assert core.in_flight == len(in_flight)
    # Everything not settled is still queued or in flight, exactly once.
    pending = [e[1][3] for e in core.retrying] + [i[3] for i in core.ready] + [i[3] for r in in_flight for i in r.items]
    assert len(pending) == len(set(pending)) == len(core)
    assert set(pending) | set(outcomes) == set(range(names)) and not set(pending) & set(outcomes)


def test_both_producers_hand_their_batches_to_one_produce_requests_core():
    p = Producer({"bootstrap.servers": "127.0.0.1:1", "message.timeout.ms": 1000})  # no server: connects later
    a = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", max_request_size=5000, acks="all")
    assert isinstance(p._requests, ProduceRequests) and isinstance(a._requests, ProduceRequests)
    assert (a._requests.acks, a._requests.max_request) == (-1, 5000)
    assert p._requests.delivery_timeout == 1.0
    p.close(0)


def _own_server_with_topic(spawn_server, data_dir, topic, partitions):
    """A server of the test's own (the tests below stop it with SIGSTOP) holding `topic`:
    (server, bootstrap)."""
    server = spawn_server("minilog", data_dir=data_dir)
    bs = f"127.0.0.1:{server.port}"
    admin = AdminClient({"bootstrap.servers": bs})
    admin.create_topics([NewTopic(topic, partitions)])[topic].result(10)
    admin.close()
    return server, bs


def test_a_request_unanswered_for_message_timeout_fails_once_with_msg_timed_out(spawn_server, tmp_path):
    """Over the wire: a server that stops answering (SIGSTOP) makes the in-flight request fail
    with _MSG_TIMED_OUT after message.timeout.ms; its late reply, once the server runs again,
    reports nothing twice, and the producer goes on delivering."""
    server, bs = _own_server_with_topic(spawn_server, tmp_path / "stopped", "paused", 1)
    reports = []
    p = Producer({"bootstrap.servers": bs, "message.timeout.ms": 400, "linger.ms": 0,
                  "on_delivery": lambda err, msg: reports.append((err, msg.value()))})
    p.produce("paused", b"first")
    assert p.flush(10) == 0 and reports == [(None, b"first")]
    server.proc.send_signal(signal.SIGSTOP)
    try:
        p.produce("paused", b"lost")
        wait_until(lambda: p.poll(0.05) >= 0 and len(reports) == 2, timeout=10)
        err, value = reports[1]
        assert value == b"lost" and err.code() == KafkaError._MSG_TIMED_OUT, err
    finally:
        server.proc.send_signal(signal.SIGCONT)
    p.produce("paused", b"after")
    assert p.flush(10) == 0
    assert [v for _, v in reports] == [b"first", b"lost", b"after"] and reports[2][0] is None
    p.close()


async def test_an_asyncio_send_unanswered_for_twice_request_timeout_fails_with_kafka_timeout_error(spawn_server,
                                                                                                   tmp_path):
    """The asyncio producer expires through the same core: a server that stops answering makes
    the record's future raise KafkaTimeoutError (after 2 x request_timeout_ms, as aiokafka's
    batches expire), flush() returns instead of hanging, and a late reply changes nothing."""
    server, bs = _own_server_with_topic(spawn_server, tmp_path / "stopped-aio", "paused-aio", 1)
    producer = AIOKafkaProducer(bootstrap_servers=bs, request_timeout_ms=200)
    await producer.start()
    try:
        assert (await producer.send_and_wait("paused-aio", b"first")).offset == 0
        server.proc.send_signal(signal.SIGSTOP)
        try:
            fut = await producer.send("paused-aio", b"lost")
            with pytest.raises(KafkaTimeoutError):
                await asyncio.wait_for(fut, 10)
            await asyncio.wait_for(producer.flush(), 10)
        finally:
            server.proc.send_signal(signal.SIGCONT)
        meta = await producer.send_and_wait("paused-aio", b"after")
        assert meta.offset in (1, 2)  # the lost batch may have been stored: at-least-once
        with pytest.raises(KafkaTimeoutError):
            fut.result()
    finally:
        await producer.stop()


def test_purge_reports_queued_and_in_flight_records_with_their_own_errors(spawn_server, tmp_path):
    """confluent-kafka's purge(): with the server stopped (SIGSTOP), one batch is in flight and
    one waits in the send queue behind max.in.flight 1; purge() reports _PURGE_INFLIGHT for the
    first and _PURGE_QUEUE for the second, and the stopped request's reply, once the server
    runs again, reports nothing twice."""
    server, bs = _own_server_with_topic(spawn_server, tmp_path / "purge", "purged", 2)
    reports = []
    p = Producer({"bootstrap.servers": bs, "linger.ms": 1, "max.in.flight.requests.per.connection": 1,
                  "on_delivery": lambda err, msg: reports.append((err and err.code(), msg.value()))})
    p.produce("purged", b"warm-up", partition=0)
    assert p.flush(10) == 0 and reports == [(None, b"warm-up")]
    server.proc.send_signal(signal.SIGSTOP)
    try:
        p.produce("purged", b"in-flight", partition=0)
        wait_until(lambda: p.poll(0) >= 0 and p._requests.in_flight == 1, timeout=10)
        p.produce("purged", b"queued", partition=1)
        wait_until(lambda: p.poll(0) >= 0 and len(p._requests.ready) == 1, timeout=10)
        p.purge()
        assert p.poll(0) == 2 and len(p) == 0
    finally:
        server.proc.send_signal(signal.SIGCONT)
    assert sorted(reports[1:]) == sorted([(KafkaError._PURGE_INFLIGHT, b"in-flight"),
                                          (KafkaError._PURGE_QUEUE, b"queued")])
    p.produce("purged", b"after", partition=0)
    assert p.flush(10) == 0 and reports[-1] == (None, b"after") and len(reports) == 4
    assert len(p) == 0
    p.close()


def _retrying_core(retries=3, max_in_flight=10, delivery_timeout=None):
    return ProduceRequests(1, 30_000, 1000, max_in_flight, delivery_timeout, retries, 0.1, 0.4)


def _fail(core, request, now, code="STORAGE_ERROR"):
    return core.completed(request, {"results": [[t, p, -1, [code, "disk full"]] for t, p, _ in request.args["data"]]},
                          now)


def test_a_retriable_error_queues_the_batch_again_after_a_doubling_backoff_until_retries_run_out():
    core = _retrying_core(retries=3)
    core.add("t", 0, b"x", "a", 0.0)
    sent_at = []
    now = 0.0
    for attempt in range(3):
        request = core.next_request(now)
        assert [i[3] for i in request.items] == ["a"]
        core.sent(request, now, attempt)
        assert _fail(core, request, now) == []            # not an outcome: it waits to go again
        assert core.in_flight == 0 and len(core) == 1 and core.retrying
        backoff = min(0.1 * 2 ** attempt, 0.4)
        assert core.retry_at() == pytest.approx(now + backoff)
        assert core.next_request(now + backoff / 2) is None  # still backing off
        now += backoff
        sent_at.append(now)
    request = core.next_request(now)
    core.sent(request, now, 9)
    # Out of retries (3): the fourth failure is the batch's outcome, with the server's error.
    assert _fail(core, request, now) == [("a", -1, ("STORAGE_ERROR", "disk full"))]
    assert len(core) == 0 and core.retry_at() is None and not core._attempts


def test_a_batch_retried_goes_before_later_batches_of_its_partition_not_others():
    core = _retrying_core()
    core.add("t", 0, b"x", "a", 0.0)
    first = core.next_request(0.0)
    core.sent(first, 0.0, 1)
    core.add("t", 0, b"x", "b", 0.0)   # the same partition, queued behind "a"
    core.add("t", 1, b"x", "other", 0.0)
    _fail(core, first, 0.0)
    # "a" backs off: "b" waits for it, the other partition's batch does not.
    assert [i[3] for i in core.next_request(0.05).items] == ["other"]
    assert core.next_request(0.05) is None
    assert [i[3] for i in core.next_request(0.1).items] == ["a"]
    assert [i[3] for i in core.next_request(0.1).items] == ["b"]


def test_two_retried_batches_of_a_partition_go_again_in_the_order_they_closed():
    core = _retrying_core()
    requests = []
    for name in ("a", "b"):
        core.add("t", 0, b"x", name, 0.0)
        requests.append(core.next_request(0.0))
        core.sent(requests[-1], 0.0, name)
    _fail(core, requests[1], 0.0)    # the later request's failure is read first
    _fail(core, requests[0], 0.0)
    assert [i[3] for i in core.next_request(1.0).items] == ["a"]
    unsent = core.next_request(1.0)
    assert [i[3] for i in unsent.items] == ["b"]
    core.unsent(unsent)               # the write failed: "b" goes back among the retries, in its place
    assert [e[1][3] for e in core.retrying] == ["b"] and core.ready == []


def test_errors_that_waiting_will_not_change_fail_at_once_and_no_clock_means_no_retry():
    core = _retrying_core()
    for p, name in enumerate(("too-big", "corrupt", "gone", "no-now")):
        core.add("t", p, b"x", name, 0.0)
    request = core.next_request(0.0)
    core.sent(request, 0.0, 1)
    outcomes = core.completed(request, {"results": [["t", 0, -1, ["MESSAGE_TOO_LARGE", "m"]],
                                                    ["t", 1, -1, ["CORRUPT_MESSAGE", "m"]],
                                                    ["t", 2, -1, ["NOT_FOUND", "m"]],
                                                    ["t", 3, 5, None]]}, 0.0)
    assert [(b, e[0] if e else None) for b, _, e in outcomes] == [
        ("too-big", "MESSAGE_TOO_LARGE"), ("corrupt", "CORRUPT_MESSAGE"), ("gone", "NOT_FOUND"), ("no-now", None)]
    core.add("t", 0, b"x", "late", 0.0)
    request = core.next_request(0.0)
    core.sent(request, 0.0, 2)
    assert _fail(core, request, None)[0][2][0] == "STORAGE_ERROR"   # no `now`: not retried


def test_a_batch_still_waiting_at_the_delivery_timeout_fails_naming_its_last_error():
    core = _retrying_core(retries=100, delivery_timeout=1.0)
    core.add("t", 0, b"x", "a", 0.0)
    request = core.next_request(0.0)
    core.sent(request, 0.0, 1)
    _fail(core, request, 0.9)
    assert core.expire(0.95) == ([], [])
    [(batch, base, (code, message))], tokens = core.expire(1.0)
    assert batch == "a" and code == DELIVERY_TIMED_OUT and "STORAGE_ERROR" in message and tokens == []
    assert len(core) == 0 and not core._attempts


def test_purge_drops_batches_waiting_to_be_retried():
    core = _retrying_core()
    core.add("t", 0, b"x", "a", 0.0)
    request = core.next_request(0.0)
    core.sent(request, 0.0, 1)
    _fail(core, request, 0.0)
    assert core.purge() == [("a", -1, (PURGED, "purged from the send queue"))] and len(core) == 0
