"""The client connection core without sockets: request ids, reply matching, pushes, id-0 errors."""

from hypothesis import given, strategies as st

from clients.protocol import frames
from clients.protocol.client_state import ClientConnectionState
from clients.protocol.errors import BrokerError, WrongServer
from clients.protocol.framing import encode_frame

import pytest


def _wire(*objs) -> bytes:
    return b"".join(encode_frame(o) for o in objs)


def test_replies_go_to_their_handler_or_wait_in_replies():
    state = ClientConnectionState()
    a, _ = state.encode_request("ping", {})
    b, _ = state.encode_request("ping", {})
    zero, _ = state.encode_request("ack", {}, want_reply=False)
    assert zero == 0 and a != b
    got = []
    state.expect(a, lambda result, error: got.append((result, error)))
    pushes, errors = [], []
    state.receive(_wire(frames.response(b, {"pong": True}), frames.push("deliver", [1, []]),
                        frames.error(a, "NOT_FOUND", "no queue"), frames.error(0, "NOT_FOUND", "channel 3: x", 3)),
                  pushes.append, errors.append)
    assert len(got) == 1 and got[0][0] is None and isinstance(got[0][1], BrokerError)
    assert got[0][1].code == "NOT_FOUND"
    assert state.replies[b].result == {"pong": True}
    assert [p.event for p in pushes] == ["deliver"]
    assert errors[0].channel == 3 and errors[0].exception().channel == 3


def test_a_handler_stays_for_the_answers_a_reply_says_follow():
    """A streamed fetch's answers share its request id; each says how many more follow."""
    state = ClientConnectionState()
    rid, _ = state.encode_request("fetch", {})
    got = []
    state.expect(rid, lambda result, error: got.append(result["results"]))
    state.receive(_wire(frames.response(rid, {"more": 2, "results": [1]}), frames.response(rid, {"more": 1, "results": [2]})),
                  None, None)
    assert got == [[1], [2]] and rid in state.handlers
    state.receive(_wire(frames.response(rid, {"more": 0, "results": [3]})), None, None)
    assert got == [[1], [2], [3]] and rid not in state.handlers
    state.receive(_wire(frames.response(rid, {"results": [4]})), None, None)   # none was announced
    assert got == [[1], [2], [3]] and state.replies[rid].result == {"results": [4]}


def test_an_asyncio_style_state_drops_replies_nobody_waits_for():
    state = ClientConnectionState(keep_unclaimed=False)
    rid, _ = state.encode_request("ping", {})
    state.receive(_wire(frames.response(rid, {})), lambda p: None, lambda e: None)
    assert state.replies == {}


def test_fail_all_runs_every_handler_once_and_keeps_the_dict():
    state = ClientConnectionState()
    handlers = state.handlers
    seen = []
    for _ in range(3):
        rid, _ = state.encode_request("ping", {})
        state.expect(rid, lambda result, error, rid=rid: seen.append((rid, error)))
    state.fail_all(BrokerError("CONNECTION_CLOSED", "gone"))
    assert len(seen) == 3 and all(e.code == "CONNECTION_CLOSED" for _, e in seen)
    assert state.handlers is handlers and not handlers


def test_hello_refuses_the_other_broker():
    state = ClientConnectionState()
    with pytest.raises(WrongServer):
        state.accept_hello({"server": "minilog", "max_frame": 1 << 20}, expect_server="minibroker")
    state.accept_hello({"server": "minibroker", "max_frame": 1 << 20}, expect_server="minibroker")
    assert state.max_frame == 1 << 20


@given(st.lists(st.integers(min_value=1, max_value=len(b"x") + 200), min_size=1, max_size=30))
def test_replies_are_matched_however_the_bytes_are_split(cuts):
    state = ClientConnectionState()
    rids = [state.encode_request("ping", {"i": i})[0] for i in range(5)]
    results = {}
    for rid in rids[:3]:
        state.expect(rid, lambda result, error, rid=rid: results.__setitem__(rid, result))
    data = _wire(*[frames.response(rid, {"n": rid}) for rid in reversed(rids)])
    pos = 0
    for cut in cuts:
        state.receive(data[pos:pos + cut], lambda p: None, lambda e: None)
        pos += cut
    state.receive(data[pos:], lambda p: None, lambda e: None)
    assert results == {rid: {"n": rid} for rid in rids[:3]}
    assert {rid: r.result for rid, r in state.replies.items()} == {rid: {"n": rid} for rid in rids[3:]}
