"""The clients' sans-IO group member (clients/log/group_protocol.py, GroupMember) against the
minilog core's coordinator, in-process: the member's requests are handed to the core as plain
values and its replies handed back, with no socket and no consumer around either."""

import asyncio

import pytest

from clients.log.group_protocol import FAIL, REJOIN, GroupMember, plan_assignments, read_members, subscribed_topics
from clients.protocol.errors import BrokerError, ErrorCode


async def send(broker, request):
    """What a consumer's connection does with a request: here, call the core with its arguments."""
    op, a = request
    if op == "join_group":
        return await asyncio.wait_for(broker.join_group(
            a["group_id"], a["member_id"], a["client"], a["session_timeout_ms"], a["rebalance_timeout_ms"],
            a["protocol_type"], a["protocols"]), 5)
    if op == "sync_group":
        return await asyncio.wait_for(broker.sync_group(a["group_id"], a["generation_id"], a["member_id"],
                                                        a["assignments"]), 5)
    if op == "heartbeat":
        return broker.heartbeat(a["group_id"], a["generation_id"], a["member_id"])
    assert op == "leave_group"
    return broker.leave_group(a["group_id"], a["member_id"])


async def join_and_sync(broker, members, counts, joining=None):
    """One generation: every member joins (together; `joining`: a member's join already sent),
    the leader plans, every member syncs."""
    joining = joining or {}
    replies = await asyncio.gather(*(joining.get(m) or send(broker, m.join_request(["t"])) for m in members))
    plans = {}
    for member, reply in zip(members, replies):
        if member.joined(reply):
            subscriptions, owned = read_members(reply["members"])
            assert subscribed_topics(subscriptions) == ["t"]
            plans[member.member_id] = plan_assignments(member.protocol, member.strategies, subscriptions, owned, counts)
    assert len(plans) == 1  # one leader
    (assignments,) = plans.values()
    syncs = [send(broker, m.sync_request(assignments if m.member_id in plans else [])) for m in members]
    return [m.synced(reply) for m, reply in zip(members, await asyncio.gather(*syncs))]


async def test_two_cooperative_members_hand_partitions_over_in_two_phases(broker):
    broker.create_topic("t", 4, {})
    one = GroupMember("g", ["cooperative-sticky"], 10_000, 10_000, "one")
    assert one.join_request(["t"])[1]["member_id"] == ""
    (plan,) = await join_and_sync(broker, [one], {"t": 4})
    assert plan == {"t": [0, 1, 2, 3]} and one.owned == plan and one.incremental()
    assert one.generation == 1 and one.member_id

    two = GroupMember("g", ["cooperative-sticky"], 10_000, 10_000, "two")
    second_join = asyncio.ensure_future(send(broker, two.join_request(["t"])))
    await asyncio.sleep(0)  # let the core see the second join before the first member heartbeats
    with pytest.raises(BrokerError) as info:
        await send(broker, one.heartbeat_request())
    assert one.reply_failed(info.value.code) == REJOIN and one.member_id  # still known: rejoin as itself
    # Phase one: the first member keeps what stays, gives up what moves; the newcomer gets nothing yet.
    first, second = await join_and_sync(broker, [one, two], {"t": 4}, {two: second_join})
    assert len(first["t"]) == 2 and set(first["t"]) < {0, 1, 2, 3}
    assert second == {}
    # Phase two: the freed partitions go to the newcomer.
    first2, second2 = await join_and_sync(broker, [one, two], {"t": 4})
    assert sorted(first2["t"] + second2["t"]) == [0, 1, 2, 3] and first2["t"] == first["t"]
    assert one.owned == first2 and two.owned == second2

    await send(broker, one.leave_request())
    one.left()
    assert (one.member_id, one.generation, one.owned) == ("", -1, {})


def test_what_error_replies_mean_to_a_member():
    member = GroupMember("g", ["range"], 6_000, 30_000, "c")
    member.member_id, member.generation = "m-1", 3
    assert member.reply_failed(ErrorCode.REBALANCE_IN_PROGRESS) == REJOIN and member.member_id == "m-1"
    assert member.reply_failed(ErrorCode.ILLEGAL_GENERATION) == REJOIN and member.member_id == "m-1"
    assert member.reply_failed(ErrorCode.NOT_AUTHORIZED) == FAIL and member.member_id == "m-1"
    # A coordinator that forgot the member (its session timed out): join again as a new member.
    assert member.reply_failed(ErrorCode.UNKNOWN_MEMBER_ID) == REJOIN and member.member_id == ""
    assert not member.incremental()
    assert member.heartbeat_request() == ("heartbeat", {"group_id": "g", "generation_id": 3, "member_id": ""})
    with pytest.raises(ValueError):
        member.synced({"assignment": b"\xc1 not msgpack"})
