"""The long poll's max_wait deadlines (`minilog/append_waiters.py`): one heap, one loop timer.

A parked fetch nothing wakes is answered at its own `max_wait_ms`, whatever else is parked,
woken, cancelled or parked from inside an answer; a fetch woken first is answered once; and
the fetches that left before their deadline do not pile up in the heap.
"""

import asyncio
import gc

import pytest

from clients.record_batch import build_batch
from minilog import append_waiters
from minilog.batch_formats import MINILOG

# libuv counts timers in whole ms from the loop's cached time, and a deadline within
# append_waiters._DUE_SLACK_S of the timer's run is answered in that run: an answer may come
# up to ~2 ms early. Late is the machine's load (2 shared cores): bounded generously.
EARLY_S = 0.003
LATE_S = 0.5


def batch(value: bytes):
    return build_batch([(None, value, None, None)])


def park(broker, topic, wait_ms, answers, name=None):
    """Park a fetch at the end of `topic`; its answer appends (name, loop time, rows) to `answers`."""
    loop = asyncio.get_running_loop()
    return broker.park([(topic, 0, broker.topics.get_log(topic, 0).log_end_offset, 1 << 20)], 1 << 20, 1,
                       wait_ms, lambda rows: answers.append((name or wait_ms, loop.time(), rows)))


async def wait_for(condition, timeout=10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def test_each_fetch_is_answered_at_its_own_deadline_whatever_order_they_parked_in(broker):
    broker.create_topic("idle")
    loop = asyncio.get_running_loop()
    answers = []
    started = loop.time()
    for wait_ms in (400, 100, 250, 50):   # a long wait first: the timer must be armed again, earlier
        park(broker, "idle", wait_ms, answers)
    await wait_for(lambda: len(answers) == 4)
    assert [name for name, _, _ in answers] == [50, 100, 250, 400]
    for wait_ms, at, rows in answers:
        assert started + wait_ms / 1000 - EARLY_S <= at <= started + wait_ms / 1000 + LATE_S, (wait_ms, at - started)
        assert rows[0][2] is None and rows[0][5] is None   # empty, not an error
    assert len(broker.waiters) == 0 and broker.waiters.deadlines_held == 0


async def test_a_fetch_woken_by_an_append_is_answered_once_and_not_again_at_its_deadline(broker):
    broker.create_topic("t")
    loop = asyncio.get_running_loop()
    answers = []
    park(broker, "t", 60, answers, "short")
    park(broker, "t", 10_000, answers, "long")
    broker.produce([["t", 0, batch(b"a")]])
    assert sorted(name for name, _, _ in answers) == ["long", "short"]   # inside the append
    answers.clear()
    waiting = park(broker, "t", 80, answers, "idle")
    started = loop.time()
    await wait_for(lambda: answers)
    await asyncio.sleep(0.15)    # past the short fetch's deadline too: it must not answer again
    assert [name for name, _, _ in answers] == ["idle"]
    assert answers[0][1] - started >= 0.08 - EARLY_S
    assert waiting.done and len(broker.waiters) == 0


async def test_an_answer_that_parks_a_fetch_keeps_the_earlier_deadlines(broker):
    """The next fetch is often parked from inside the answer to the last one; the timer it arms
    for its own (later) deadline must not hide the deadlines already in the heap."""
    broker.create_topic("idle")
    loop = asyncio.get_running_loop()
    answers = []
    started = loop.time()

    def first_answered(rows):
        answers.append(("first", loop.time(), rows))
        park(broker, "idle", 1_000, answers, "parked by the answer")

    broker.park([("idle", 0, 0, 1 << 20)], 1 << 20, 1, 30, first_answered)
    park(broker, "idle", 150, answers, "earlier")
    await wait_for(lambda: len(answers) == 2)
    assert [name for name, _, _ in answers] == ["first", "earlier"]
    assert answers[1][1] - started <= 0.15 + LATE_S and answers[1][1] - started >= 0.15 - EARLY_S
    await wait_for(lambda: len(answers) == 3)
    assert answers[2][0] == "parked by the answer"


async def test_a_failing_answer_does_not_keep_the_other_fetches_from_theirs(broker):
    broker.create_topic("idle")
    answers = []

    def broken(rows):
        raise RuntimeError("a front door's bug")

    broker.park([("idle", 0, 0, 1 << 20)], 1 << 20, 1, 20, broken)
    park(broker, "idle", 20, answers)
    park(broker, "idle", 60, answers)
    await wait_for(lambda: len(answers) == 2)
    assert len(broker.waiters) == 0


async def test_fetches_that_leave_before_their_deadline_do_not_pile_up(broker):
    """A live consumer parks and is woken once per record: with a long max_wait the heap would
    hold every fetch of that whole wait. It holds about twice the fetches parked now."""
    broker.create_topic("t")
    answers = []
    live = park(broker, "t", 200, answers, "live")
    day_ms = 24 * 3600 * 1000
    for i in range(5_000):
        park(broker, "t", day_ms, [], i).cancel()
        assert broker.waiters.deadlines_held <= 2 * 2 + append_waiters._COMPACT_MIN + 1
    for i in range(2_000):   # woken by appends: the same, through notify
        answered = []
        park(broker, "t", day_ms, answered, i)
        broker.produce([["t", 0, batch(b"x")]])
        assert answered
        assert broker.waiters.deadlines_held <= 2 * 2 + append_waiters._COMPACT_MIN + 1
    assert answers and answers[0][0] == "live"     # woken by the first append
    answers.clear()
    assert live.done
    late = park(broker, "t", 50, answers, "late")  # still answered at its deadline after all that
    await wait_for(lambda: answers)
    assert late.done and answers[0][0] == "late"


async def test_fetches_that_leave_make_no_garbage_for_the_collector(broker):
    """A woken or cancelled fetch stays in the heap until its deadline or the next rebuild, and
    lets go of everything else at once: its read's arguments and its wake-up (a bound method of
    itself: a reference cycle). So when the rebuild drops it, reference counting frees it; a
    live consumer's thousands of fetches a second leave nothing for the garbage collector."""
    broker.create_topic("t")
    gc.collect()
    gc.disable()
    try:
        for i in range(300):
            park(broker, "t", 60_000, [], i)
            broker.produce([["t", 0, batch(b"x")]])
            park(broker, "t", 60_000, [], i).cancel()
        assert broker.waiters.deadlines_held < 300     # rebuilt on the way
        assert gc.collect() == 0
    finally:
        gc.enable()


async def test_a_fetch_parked_again_inside_its_answer_is_answered_at_its_new_deadline(broker):
    """`ParkedFetch.park_again` (a streamed fetch) keeps its heap entry, at the old deadline,
    which moves to the new one when it comes due: answered once per wait, never early, and
    nothing is left in the heap once it is done."""
    broker.create_topic("t")
    loop = asyncio.get_running_loop()
    answers = []

    def on_ready(rows):
        answers.append(loop.time())
        if len(answers) < 3:
            end = broker.topics.get_log("t", 0).log_end_offset
            parked.park_again(([("t", 0, end, 1 << 20)], 1 << 20, 1, MINILOG))

    started = loop.time()
    parked = broker.park([("t", 0, 0, 1 << 20)], 1 << 20, 1, 200, on_ready)
    await asyncio.sleep(0.1)
    broker.produce([["t", 0, batch(b"a")]])            # answered, parked again: due at ~0.3 s
    assert len(answers) == 1 and not parked.done
    assert broker.waiters.deadlines_held == 1 and len(broker.waiters) == 1
    await wait_for(lambda: len(answers) == 2)          # not at 0.2 s, the first deadline
    assert answers[1] - answers[0] >= 0.2 - EARLY_S, (answers[0] - started, answers[1] - started)
    await wait_for(lambda: len(answers) == 3)          # parked again from its deadline's answer
    assert answers[2] - answers[1] >= 0.2 - EARLY_S
    assert parked.done and len(broker.waiters) == 0 and broker.waiters.deadlines_held == 0


async def test_park_again_is_only_for_the_answer_being_given(broker):
    broker.create_topic("t")
    parked = park(broker, "t", 10_000, [])
    args = ([("t", 0, 0, 1 << 20)], 1 << 20, 1, MINILOG)
    with pytest.raises(RuntimeError):
        parked.park_again(args)       # still parked
    parked.cancel()
    with pytest.raises(RuntimeError):
        parked.park_again(args)       # done for good
    assert len(broker.waiters) == 0
