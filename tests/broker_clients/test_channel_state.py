"""The minibroker channel core without sockets (`clients/broker/channel_state.py`).

The tests feed `ChannelState` what the program does and what the server pushes, and check the
frames it hands back to send; a small model of the broker's settlement rules (AMQP's: a
`multiple` ack settles every outstanding tag up to its own) replays those frames.
"""

import threading

from hypothesis import given, strategies as st

from clients.broker.channel_state import (PUBLISH_BATCH_BYTES, PUBLISH_BATCH_MESSAGES, ChannelState, Confirmed,
                                          ConsumerCancelled, Deliveries, Returned, channel_for_error, route_push)


def test_publishes_leave_as_one_batch_then_the_merged_ack():
    core = ChannelState(3)
    for i in range(5):
        assert core.publish("ex", f"k{i}", b"x" * 10, None, i == 4) is False
    core.receive("deliver", [3, [["t", 1, False, "", "q", b"", None], ["t", 2, False, "", "q", b"", None]]])
    assert core.ack(1, False) == [] and core.ack(2, False) == []  # in order: merged
    frames = core.take_output()
    assert [op for op, _ in frames] == ["publish_batch", "ack"]
    batch = frames[0][1]
    assert batch["ch"] == 3 and [m[1] for m in batch["messages"]] == [f"k{i}" for i in range(5)]
    assert batch["messages"][4][4] is True
    assert frames[1][1] == {"ch": 3, "delivery_tag": 2, "multiple": True}
    assert core.take_output() == []


def test_the_buffer_says_when_a_batch_is_full_by_count_and_by_bytes():
    core = ChannelState(1)
    full = [core.publish("", "q", b"", None, False) for _ in range(PUBLISH_BATCH_MESSAGES)]
    assert full[-1] is True and not any(full[:-1])
    core.take_output()
    assert core.publish("", "q", b"x" * PUBLISH_BATCH_BYTES, None, False) is True


def test_what_is_appended_while_output_is_taken_stays_for_the_next_take():
    """The blocking client's flusher takes output on another thread while the program appends
    without a lock: the list is never replaced, so no message is lost or sent twice."""
    core = ChannelState(1)
    buf = core.publishes
    sent = []
    done = threading.Event()

    def flusher():
        while not done.is_set():
            for op, args in core.take_output():
                sent.extend(m[2] for m in args["messages"])

    thread = threading.Thread(target=flusher)
    thread.start()
    for i in range(20000):
        buf.append(("", "q", i, None, False))
    done.set()
    thread.join()
    for op, args in core.take_output():
        sent.extend(m[2] for m in args["messages"])
    assert core.publishes is buf
    assert sent == list(range(20000))


def test_confirms_settle_their_records_in_order_honouring_multiple():
    core = ChannelState(1)
    core.confirm_select()
    records = [core.track("ex", "k", False, waiter=i) for i in range(4)]
    assert [r.seq for r in records] == [1, 2, 3, 4]
    assert core.on_confirm(True, 2, True) == records[:2]
    assert records[0].acked is True and records[2].acked is None
    assert core.on_confirm(False, 4, False) == [records[3]] and records[3].acked is False
    assert core.on_confirm(True, 9, True) == [records[2]]
    assert core.on_confirm(True, 10, False) == []  # nothing waits: no error, nothing settled


def test_a_return_is_matched_to_the_oldest_unconfirmed_mandatory_publish_with_its_key():
    core = ChannelState(1)
    core.confirm_select()
    plain = core.track("ex", "k", False)
    first = core.track("ex", "k", True)
    other = core.track("ex", "other", True)
    second = core.track("ex", "k", True)
    record = core.on_return("ex", "k")
    assert record is first
    record.returned = "message 1"
    assert core.on_return("ex", "k") is second
    assert core.on_return("ex", "nothing") is None
    assert plain.returned is None and other.returned is None
    assert ChannelState(2).on_return("ex", "k") is None  # confirms off: the adapter's callbacks get it


def test_an_out_of_order_ack_goes_out_after_the_held_merged_ack():
    core = ChannelState(1)
    core.receive("deliver", [1, [["t", tag, False, "", "q", b"", None] for tag in range(1, 6)]])
    assert core.ack(1, False) == []
    frames = core.ack(3, False)  # 2 is still outstanding: cannot merge
    assert frames == [("ack", {"ch": 1, "delivery_tag": 1, "multiple": True}),
                      ("ack", {"ch": 1, "delivery_tag": 3, "multiple": False})]
    assert core.ack(2, False) == [] and core.ack_upto == 2  # closes the gap: 1-3 settled
    assert core.settlement.floor == 3
    assert core.reject(5, False) == [("ack", {"ch": 1, "delivery_tag": 2, "multiple": True}),
                                     ("reject", {"ch": 1, "delivery_tag": 5, "requeue": False})]
    assert core.ack(0, True) == [] and core.ack_upto == 5  # multiple with tag 0: all delivered


def test_a_delivery_for_a_cancelled_consumer_is_requeued_unless_it_needed_no_ack():
    core = ChannelState(1)
    assert core.add_consumer("a", print, False) and core.add_consumer("b", print, True)
    assert core.add_consumer("a", print, False) is False
    core.rename_consumer("a", "server-a")
    assert set(core.consumers) == {"server-a", "b"}
    core.remove_consumer("server-a")
    core.on_broker_cancel("b")
    core.receive("deliver", [1, [["server-a", 1, False, "", "q", b"", None], ["b", 2, False, "", "q", b"", None]]])
    assert core.orphaned(["server-a", 1]) == [("nack", {"ch": 1, "delivery_tag": 1, "multiple": False,
                                                        "requeue": True})]
    assert core.orphaned(["b", 2]) == []
    assert core.settlement.floor == 2


def test_reset_hands_back_what_awaited_a_confirm_and_keeps_the_adapters_references():
    core = ChannelState(1)
    buf, settle = core.publishes, core.settlement.settle
    core.confirm_select()
    waiting = [core.track("", "q", False), core.track("", "q", False)]
    core.publish("", "q", b"x", None, False)
    core.add_consumer("c", print, False)
    settle(1)
    assert core.reset() == waiting
    assert core.publishes is buf and not buf and not core.consumers and not core.unconfirmed
    assert core.settlement.floor == 0 and core.track("", "q", False).seq == 1
    assert settle(1) is True and core.settlement.floor == 1  # the bound method still works


def test_pushes_come_out_as_typed_events_with_the_state_updated():
    core = ChannelState(7)
    core.confirm_select()
    core.add_consumer("c", print, True)
    waiting = core.track("ex", "k", True)
    batch = [["c", 1, False, "", "q", b"a", None], ["c", 2, True, "", "q", b"b", {"priority": 1}]]
    assert core.receive("deliver", [7, batch]) == Deliveries(batch)
    assert core.receive("deliver", [7, []]) is None
    assert core.ack(0, True) == [] and core.ack_upto == 2  # tag 0 with multiple: all delivered
    returned = core.receive("return", [7, 312, "NO_ROUTE", "ex", "k", b"body", {"priority": 2}])
    assert returned == Returned(312, "NO_ROUTE", "ex", "k", b"body", {"priority": 2}, waiting)
    assert core.receive("confirm", [7, True, 1]) == Confirmed([waiting]) and waiting.acked is True
    assert core.receive("confirm", [7, True, 1, True]) is None  # nothing left to settle
    assert core.receive("return", [7, 312, "NO_ROUTE", "ex", "k", b"x", None]).record is None
    assert core.receive("cancel", [7, "c"]) == ConsumerCancelled("c", True)
    assert "c" not in core.consumers and core.receive("cancel", [7, "c"]) is None
    assert core.receive("something-new", [7]) is None


class BrokerModel:
    """What the broker does with settlement frames, by AMQP's rules: a tag is settled once;
    a `multiple` frame settles every outstanding tag up to its own; a single one of a tag not
    outstanding is an error (PRECONDITION_FAILED on a real broker)."""

    def __init__(self, tags):
        self.outstanding = set(tags)
        self.outcome = {}

    def apply(self, op, args):
        tag = args["delivery_tag"]
        if args.get("multiple"):
            covered = {t for t in self.outstanding if t <= tag}
        else:
            assert tag in self.outstanding, f"{op} of tag {tag}, which is not outstanding"
            covered = {tag}
        for t in covered:
            self.outcome[t] = op
        self.outstanding -= covered


@given(steps=st.lists(st.tuples(st.integers(1, 30), st.sampled_from(["ack", "ack-multiple", "nack", "reject"])),
                      max_size=40),
       flush_every=st.integers(1, 8))
def test_merged_settlements_settle_exactly_what_the_program_asked(steps, flush_every):
    tags = range(1, 31)
    core = ChannelState(1)
    core.receive("deliver", [1, [["c", t, False, "", "q", b"", None] for t in tags]])
    broker = BrokerModel(tags)
    asked = {}       # what the program settled each tag as, by AMQP's rules

    def send(frames):
        for op, args in frames:
            broker.apply(op, args)

    for i, (tag, action) in enumerate(steps):
        if tag in asked:
            continue   # settling a tag twice is the program's error, not ours to merge
        if action == "ack":
            send(core.ack(tag, False))
            asked[tag] = "ack"
        elif action == "ack-multiple":
            send(core.ack(tag, True))
            for t in tags:
                if t <= tag and t not in asked:
                    asked[t] = "ack"
        elif action == "nack":
            send(core.nack(tag, False, True))
            asked[tag] = "nack"
        else:
            send(core.reject(tag, False))
            asked[tag] = "reject"
        if i % flush_every == 0:
            send(core.take_output())
    send(core.take_output())
    assert broker.outcome == asked


class _Channel:
    """What route_push and channel_for_error read of an adapter's channel."""

    def __init__(self, number, closed=False):
        self._core = ChannelState(number)
        self._closed = closed


def test_a_push_goes_to_the_open_channel_it_names_and_its_state_says_what_it_makes():
    one, two = _Channel(1), _Channel(2, closed=True)
    channels = {1: one, 2: two}
    ch, happened = route_push(channels, "deliver", [1, [["t", 1, False, "", "q", b"", None]]])
    assert ch is one and type(happened) is Deliveries and one._core.settlement.delivered_max == 1
    assert route_push(channels, "deliver", [2, [["t", 1, False, "", "q", b"", None]]]) == (None, None)
    assert route_push(channels, "deliver", [9, []]) == (None, None)
    assert route_push(channels, "deliver", "not a list") == (None, None)


def test_an_id0_error_goes_to_its_channel_else_the_last_no_reply_one_else_any_open_one():
    one, two, three = _Channel(1), _Channel(2, closed=True), _Channel(3)
    channels = {1: one, 2: two, 3: three}
    assert channel_for_error(channels, 3, one) is three
    assert channel_for_error(channels, None, three) is three
    assert channel_for_error(channels, 2, None) is one        # named but closed: the first open one
    assert channel_for_error({2: two}, 2, two) is None
