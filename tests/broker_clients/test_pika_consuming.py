"""Consuming with the pika-style client: callbacks, the consume generator, acks, event processing,
threads, competing consumers and a consumer that dies."""

import os
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clients import broker as pika
from harness import ROOT, wait_until

pytestmark = pytest.mark.timeout(30)


def fill(ch, queue, n, prefix="m"):
    for i in range(n):
        ch.basic_publish(exchange="", routing_key=queue, body=f"{prefix}{i}")


def test_basic_consume_start_and_stop_consuming(connect):
    conn = connect()
    ch = conn.channel()
    ch.queue_declare("hello")
    fill(ch, "hello", 10)
    seen = []

    def on_message(channel, method, properties, body):
        assert channel is ch
        assert isinstance(method, pika.spec.Basic.Deliver)
        assert method.routing_key == "hello" and method.exchange == "" and not method.redelivered
        assert method.consumer_tag == tag
        seen.append((method.delivery_tag, body))
        channel.basic_ack(delivery_tag=method.delivery_tag)
        if len(seen) == 10:
            channel.stop_consuming()

    tag = ch.basic_consume(queue="hello", on_message_callback=on_message)
    assert ch.consumer_tags == [tag]
    ch.start_consuming()
    assert [b for _, b in seen] == [f"m{i}".encode() for i in range(10)]
    assert [t for t, _ in seen] == list(range(1, 11))
    assert ch.consumer_tags == []
    assert ch.queue_declare("hello", passive=True).method.message_count == 0


def test_prefetch_limits_unacked_and_multiple_ack(connect):
    conn = connect()
    ch = conn.channel()
    ch.queue_declare("pf")
    fill(ch, "pf", 50)
    ch.basic_qos(prefetch_count=10)
    got = []
    ch.basic_consume("pf", lambda c, m, p, b: got.append(m.delivery_tag))
    deadline = time.monotonic() + 5
    while len(got) < 10 and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.1)
    conn.process_data_events(time_limit=0.2)
    assert len(got) == 10  # no more than the prefetch window without acks
    ch.basic_ack(delivery_tag=got[-1], multiple=True)
    wait_until(lambda: conn.process_data_events(0.05) or len(got) == 20, 5, message="next window")
    ch.basic_ack(delivery_tag=0, multiple=True)  # everything outstanding
    wait_until(lambda: conn.process_data_events(0.05) or len(got) == 30, 5, message="third window")


def test_consume_generator_with_inactivity_timeout_and_cancel_requeues(connect):
    conn = connect()
    ch = conn.channel()
    ch.queue_declare("gen")
    fill(ch, "gen", 5)
    received = []
    for method, properties, body in ch.consume("gen", inactivity_timeout=0.3):
        if method is None:
            break
        received.append(body)
        if len(received) == 2:
            ch.basic_ack(method.delivery_tag, multiple=True)
    assert received == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    # three were delivered but not acked: cancel() returns the number it requeued (those the
    # generator still held) and the server requeues the rest when the channel closes
    requeued = ch.cancel()
    assert requeued == 0
    ch.close()
    ch = conn.channel()
    assert ch.queue_declare("gen", passive=True).method.message_count == 3


def test_consume_generator_cancel_requeues_pending(connect):
    conn = connect()
    ch = conn.channel()
    ch.queue_declare("gen2")
    fill(ch, "gen2", 20)
    gen = ch.consume("gen2")
    method, _, body = next(gen)
    assert body == b"m0"
    ch.basic_ack(method.delivery_tag)
    wait_until(lambda: conn.process_data_events(0.05) or ch.get_waiting_message_count() == 19, 5,
               message="the rest buffered in the generator")
    assert ch.cancel() == 19
    other = conn.channel()
    assert other.queue_declare("gen2", passive=True).method.message_count == 19
    method, _, body = other.basic_get("gen2", auto_ack=True)
    assert method.redelivered and body == b"m1"


def test_nack_and_reject_requeue_sets_redelivered(connect):
    ch = connect().channel()
    ch.queue_declare("nk")
    fill(ch, "nk", 2)
    m1, _, _ = ch.basic_get("nk")
    ch.basic_nack(delivery_tag=m1.delivery_tag, multiple=False, requeue=True)
    m1b, _, b1 = ch.basic_get("nk")
    assert m1b.redelivered and b1 == b"m0"
    ch.basic_reject(delivery_tag=m1b.delivery_tag, requeue=False)  # dropped (no dead-letter exchange)
    m2, _, b2 = ch.basic_get("nk")
    assert b2 == b"m1" and not m2.redelivered
    ch.basic_reject(m2.delivery_tag)  # requeue=True is the default
    m2b, _, _ = ch.basic_get("nk", auto_ack=True)
    assert m2b.redelivered and m2b.message_count == 0


def test_basic_cancel_requeues_undispatched_and_returns_auto_ack_ones(connect):
    conn = connect()
    ch = conn.channel()
    ch.queue_declare("bc")
    fill(ch, "bc", 30)
    ch.basic_qos(prefetch_count=30)
    dispatched = []

    def first_only(channel, method, properties, body):
        dispatched.append(body)
        channel.basic_ack(method.delivery_tag)
        channel.basic_cancel(tag)  # the other 29 arrived but were not dispatched: requeued

    tag = ch.basic_consume("bc", first_only)
    # wait for all 30 to arrive before dispatching anything
    wait_until(lambda: ch.connection._pump(0.05) or sum(len(b) for _, b in conn._events) == 30, 5,
               message="all deliveries read")
    conn.process_data_events()
    assert dispatched == [b"m0"]
    assert ch.queue_declare("bc", passive=True).method.message_count == 29

    ch.basic_qos(prefetch_count=0)
    tag2 = ch.basic_consume("bc", lambda *a: None, auto_ack=True)
    wait_until(lambda: ch.connection._pump(0.05) or sum(len(b) for _, b in conn._events) == 29, 5,
               message="auto-ack deliveries read")
    pending = ch.basic_cancel(tag2)
    assert [b for _, _, b in pending] == [f"m{i}".encode() for i in range(1, 30)]
    assert all(isinstance(m, pika.spec.Basic.Deliver) for m, _, _ in pending)


def test_process_data_events_time_limit(connect):
    conn = connect()
    ch = conn.channel()
    ch.queue_declare("pde")
    got = []
    ch.basic_consume("pde", lambda c, m, p, b: got.append(b), auto_ack=True)
    start = time.monotonic()
    conn.process_data_events(time_limit=0.2)  # nothing to do: waits the whole limit
    assert time.monotonic() - start >= 0.19 and got == []
    conn.process_data_events()  # time_limit=0 returns at once
    publisher = connect().channel()
    publisher.basic_publish("", "pde", b"x")
    publisher.connection.process_data_events()  # flushes the buffered publish
    start = time.monotonic()
    conn.process_data_events(time_limit=5)  # returns as soon as the delivery was dispatched
    assert got == [b"x"] and time.monotonic() - start < 2


def test_add_callback_threadsafe_from_another_thread(connect):
    conn = connect()
    ch = conn.channel()
    ch.queue_declare("ts")
    fired = []

    def from_thread():
        # the callback runs on the connection's thread, inside start_consuming
        conn.add_callback_threadsafe(lambda: (fired.append(threading.current_thread().name), ch.stop_consuming()))

    ch.basic_consume("ts", lambda *a: None)
    timer = threading.Timer(0.1, from_thread)
    timer.start()
    ch.start_consuming()  # returns only because the other thread's callback stopped it
    timer.join()
    assert fired == [threading.current_thread().name]


def test_worker_thread_acks_through_add_callback_threadsafe(connect):
    """pika's recipe for long jobs: work in a thread, ack back on the connection's thread."""
    conn = connect()
    ch = conn.channel()
    ch.queue_declare("jobs")
    fill(ch, "jobs", 5)
    done = []

    def on_message(channel, method, properties, body):
        def work():
            done.append(body)
            conn.add_callback_threadsafe(lambda: channel.basic_ack(method.delivery_tag))
            if len(done) == 5:
                conn.add_callback_threadsafe(channel.stop_consuming)
        threading.Thread(target=work).start()

    ch.basic_qos(prefetch_count=1)
    ch.basic_consume("jobs", on_message)
    ch.start_consuming()
    assert sorted(done) == [f"m{i}".encode() for i in range(5)]
    assert ch.queue_declare("jobs", passive=True).method.message_count == 0


def test_sleep_and_call_later_dispatch(connect):
    conn = connect()
    fired = []
    conn.call_later(0.05, lambda: fired.append("timer"))
    removed = conn.call_later(0.05, lambda: fired.append("removed"))
    conn.remove_timeout(removed)
    conn.sleep(0.2)
    assert fired == ["timer"]


def test_competing_consumers_share_work_without_loss_or_duplicates(connect):
    setup = connect().channel()
    setup.queue_declare("tasks")
    n = 2000
    fill(setup, "tasks", n)
    setup.connection.process_data_events()
    results = {}
    stop = threading.Event()

    def worker(name):
        conn = connect()
        ch = conn.channel()
        ch.basic_qos(prefetch_count=20)
        mine = results[name] = []

        def on_message(channel, method, properties, body):
            assert not method.redelivered
            mine.append(body)
            channel.basic_ack(method.delivery_tag)

        ch.basic_consume("tasks", on_message)
        while not stop.is_set():
            conn.process_data_events(time_limit=0.05)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    wait_until(lambda: sum(len(v) for v in list(results.values())) >= n, 20, message="all tasks consumed")
    stop.set()
    for t in threads:
        t.join(10)
    everything = [b for v in results.values() for b in v]
    assert sorted(everything) == sorted(f"m{i}".encode() for i in range(n))  # none lost, none twice
    assert all(len(v) > 0 for v in results.values()), {k: len(v) for k, v in results.items()}


DYING_CONSUMER = """
import os, sys
from clients import broker as pika
conn = pika.BlockingConnection(pika.ConnectionParameters(port=int(sys.argv[1])))
ch = conn.channel()
ch.basic_qos(prefetch_count=5)
count = 0
def on_message(channel, method, properties, body):
    global count
    count += 1
    if count == 5:
        print("HOLDING", flush=True)  # five unacked messages in hand; now wait to be killed
ch.basic_consume("fragile", on_message)
ch.start_consuming()
"""


def test_consumer_that_dies_has_its_unacked_messages_redelivered(connect, minibroker_server):
    ch = connect().channel()
    ch.queue_declare("fragile")
    fill(ch, "fragile", 8)
    ch.connection.process_data_events()
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-c", DYING_CONSUMER, str(minibroker_server.port)],
                            stdout=subprocess.PIPE, cwd=ROOT, env=env)
    try:
        assert proc.stdout.readline().strip() == b"HOLDING"
        proc.kill()
        proc.wait()
    finally:
        proc.stdout.close()
    survivor = connect().channel()
    got = []
    for method, _, body in survivor.consume("fragile", inactivity_timeout=2):
        if method is None:
            break
        got.append((body, method.redelivered))
        survivor.basic_ack(method.delivery_tag)
        if len(got) == 8:
            break
    survivor.cancel()
    assert sorted(b for b, _ in got) == sorted(f"m{i}".encode() for i in range(8))
    redelivered = {b for b, r in got if r}
    assert redelivered == {f"m{i}".encode() for i in range(5)}  # exactly the five the dead one held


def test_closing_channel_requeues_unacked(connect):
    conn = connect()
    ch = conn.channel()
    ch.queue_declare("cq")
    fill(ch, "cq", 3)
    for _ in range(3):
        method, _, _ = ch.basic_get("cq")
        assert method is not None
    ch.close()
    ch = conn.channel()
    method, _, body = ch.basic_get("cq", auto_ack=True)
    assert method.redelivered and body == b"m0" and method.message_count == 2


def test_return_callback_without_confirms(connect):
    conn = connect()
    ch = conn.channel()
    returned = []
    ch.add_on_return_callback(lambda channel, method, properties, body: returned.append((method.reply_code, body)))
    ch.basic_publish("", "nobody-home", b"lost", mandatory=True)
    wait_until(lambda: conn.process_data_events(0.05) or returned, 5, message="the return")
    assert returned == [(312, b"lost")]


def test_start_consuming_raises_when_channel_closed_by_broker(connect):
    conn = connect()
    ch = conn.channel()
    ch.queue_declare("sc")
    ch.basic_consume("sc", lambda *a: None)
    ch.basic_ack(12345)  # unknown tag: the broker closes the channel
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.start_consuming()
    assert err.value.reply_code == 406


def test_channel_reopened_after_broker_error_gets_no_stale_deliveries(connect):
    conn = connect()
    ch = conn.channel()
    ch.queue_declare("stale")
    fill(ch, "stale", 200)
    ch.basic_consume("stale", lambda *a: None)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):
        ch.queue_declare("stale", durable=True)  # 406 while deliveries are in flight
    fresh = conn.channel()
    got = []
    for method, _, body in fresh.consume("stale", inactivity_timeout=2):
        if method is None:
            break
        got.append(body)
        fresh.basic_ack(method.delivery_tag)
        if len(got) == 200:
            break
    assert fresh.is_open
    assert sorted(got) == sorted(f"m{i}".encode() for i in range(200))


def count_sent(conn, op):
    """Wrap the connection's request encoder to count `op` frames (the wire is still real)."""
    rpc = conn._rpc
    counts = {"n": 0}
    send = rpc.send

    def counting(name, args=None, want_reply=True):
        if name == op:
            counts["n"] += 1
        return send(name, args, want_reply)

    rpc.send = counting
    return counts


def test_single_acks_in_order_merge_into_few_frames(connect):
    conn = connect()
    ch = conn.channel()
    ch.queue_declare("acks")
    fill(ch, "acks", 1000)
    acks = count_sent(conn, "ack")
    seen = []

    def on_message(channel, method, properties, body):
        seen.append(body)
        channel.basic_ack(delivery_tag=method.delivery_tag)  # the tutorial's one ack per message
        if len(seen) == 1000:
            channel.stop_consuming()

    ch.basic_qos(prefetch_count=100)
    ch.basic_consume("acks", on_message)
    ch.start_consuming()
    assert ch.queue_declare("acks", passive=True).method.message_count == 0
    assert ch.is_open
    assert acks["n"] < 100  # about one per flush, not one per message
    ch.close()
    assert connect().channel().queue_declare("acks", passive=True).method.message_count == 0


def test_out_of_order_settlements_stay_exact(connect):
    """Two consumers on one channel, acks out of order, nacks and rejects in between: every
    message is settled exactly as asked (the merged acks never cover a delivery still held)."""
    conn = connect()
    ch = conn.channel()
    for q in ("left", "right"):
        ch.queue_declare(q)
        fill(ch, q, 50, prefix=q)
    held = []
    ch.basic_consume("left", lambda c, m, p, b: held.append((m.delivery_tag, b)))
    ch.basic_consume("right", lambda c, m, p, b: held.append((m.delivery_tag, b)))
    wait_until(lambda: conn.process_data_events(0.05) or len(held) == 100, 5, message="all 100 delivered")
    held.sort()
    # oldest first, so acks merge until the first kept one, then newest first for the rest
    order = held[:50] + held[50:][::-1]
    kept = []
    for i, (tag, body) in enumerate(order):
        if i % 10 == 3:
            kept.append(body)  # never settled: must survive as unacked
        elif i % 10 == 5:
            ch.basic_nack(tag, requeue=True)
        elif i % 10 == 7:
            ch.basic_reject(tag, requeue=False)
        else:
            ch.basic_ack(tag)
    conn.process_data_events(time_limit=0.1)
    assert ch.is_open
    ch.stop_consuming()
    ch.close()  # the kept (unacked) ones come back now, beside the nacked ones
    check = connect().channel()
    remaining = check.queue_declare("left", passive=True).method.message_count + \
        check.queue_declare("right", passive=True).method.message_count
    assert remaining == len(kept) + 10  # kept + nacked with requeue


@given(plan=st.lists(st.sampled_from(["ack", "ack-multiple", "nack", "reject", "keep"]), min_size=1, max_size=25),
       order=st.randoms(use_true_random=False))
@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_settlement_merging_matches_a_model(connect, plan, order):
    """Whatever the order and mix of settlements, the broker ends up with exactly the messages
    the AMQP rules say: kept (unacked) and nacked-with-requeue ones come back, nothing else."""
    conn = connect()
    try:
        run_settlement_plan(conn, plan, order)
    finally:
        if conn.is_open:
            conn.close()


def run_settlement_plan(conn, plan, order):
    ch = conn.channel()
    queue = ch.queue_declare("", exclusive=True).method.queue
    fill(ch, queue, len(plan))
    tags = []
    ch.basic_consume(queue, lambda c, m, p, b: tags.append(m.delivery_tag))
    wait_until(lambda: conn.process_data_events(0.02) or len(tags) == len(plan), 5, message="deliveries")
    unsettled = set(tags)
    back = 0
    steps = list(zip(tags, plan))
    order.shuffle(steps)
    for tag, action in steps:
        if tag not in unsettled:
            continue  # already covered by a multiple ack
        if action == "ack":
            ch.basic_ack(tag)
            unsettled.discard(tag)
        elif action == "ack-multiple":
            ch.basic_ack(tag, multiple=True)
            unsettled -= {t for t in unsettled if t <= tag}
        elif action == "nack":
            ch.basic_nack(tag, requeue=True)
            unsettled.discard(tag)
            back += 1
        elif action == "reject":
            ch.basic_reject(tag, requeue=False)
            unsettled.discard(tag)
    ch.stop_consuming()
    conn.process_data_events(time_limit=0)
    assert ch.is_open  # no settlement hit an unknown tag
    # basic_get sees only requeued ones while the rest stay unacked on this channel
    assert ch.queue_declare(queue, passive=True).method.message_count == back
    ch.close()  # the unsettled ones return now
    check = conn.channel()
    assert check.queue_declare(queue, passive=True).method.message_count == back + len(unsettled)


def test_callback_exception_propagates_and_the_rest_of_the_batch_stays(connect):
    conn = connect()
    ch = conn.channel()
    ch.queue_declare("boom")
    fill(ch, "boom", 10)
    seen = []

    def on_message(channel, method, properties, body):
        seen.append(body)
        channel.basic_ack(method.delivery_tag)
        if body == b"m3":
            raise ValueError("bad message")
        if len(seen) == 10:
            channel.stop_consuming()

    ch.basic_consume("boom", on_message)
    with pytest.raises(ValueError):
        ch.start_consuming()
    ch.start_consuming()  # picks up where it stopped: m4..m9 were not lost in the batch
    assert seen == [f"m{i}".encode() for i in range(10)]


def test_queue_deleted_under_consumers_cancels_them(connect):
    conn = connect()
    ch = conn.channel()
    ch.queue_declare("doomed")
    cancelled = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    tag = ch.basic_consume("doomed", lambda *a: None)
    connect().channel().queue_delete("doomed")
    ch.start_consuming()  # returns: the broker cancelled the only consumer
    assert cancelled == [tag] and ch.consumer_tags == []

    ch.queue_declare("doomed-too")
    gen = ch.consume("doomed-too", inactivity_timeout=0.05)
    assert next(gen) == (None, None, None)  # consuming now
    connect().channel().queue_delete("doomed-too")
    rest = []
    for item in gen:  # the generator ends with its consumer
        rest.append(item)
        assert len(rest) < 100, "the generator did not end"
    assert all(item == (None, None, None) for item in rest)
