"""The core's consumer groups and committed offsets, called in-process with plain values."""

import asyncio

import msgpack
import pytest

from clients.protocol.errors import BrokerError, ErrorCode
from clients.record_batch import build_batch

PROTOCOLS = [("range", b"meta")]


def join(broker, group, member="", client="c", session=10_000):
    return broker.join_group(group, member, client, session, session, "consumer", PROTOCOLS)


async def test_two_members_join_sync_commit_and_describe(broker):
    broker.produce([["t", 0, build_batch([(None, b"v", None, None)] * 5)]])
    first = join(broker, "g")
    one = await asyncio.wait_for(first, 5)
    assert one["generation_id"] == 1 and one["leader_id"] == one["member_id"]
    assert one["members"] == [[one["member_id"], b"meta"]]
    # A second member makes the group rebalance: the first learns it by heartbeat, rejoins.
    second = join(broker, "g", client="d")
    with pytest.raises(BrokerError) as info:
        broker.heartbeat("g", 1, one["member_id"])
    assert info.value.code == ErrorCode.REBALANCE_IN_PROGRESS
    rejoined = join(broker, "g", one["member_id"])
    a, b = await asyncio.wait_for(asyncio.gather(rejoined, second), 5)
    assert a["generation_id"] == b["generation_id"] == 2
    leader, follower = (a, b) if a["member_id"] == a["leader_id"] else (b, a)
    assert len(leader["members"]) == 2 and follower["members"] == []
    assignment = msgpack.packb({"t": [0]})
    follower_sync = broker.sync_group("g", 2, follower["member_id"], [])
    leader_sync = broker.sync_group("g", 2, leader["member_id"], [[follower["member_id"], assignment]])
    assert (await leader_sync)["assignment"] == b""
    assert (await follower_sync)["assignment"] == assignment
    # Commits are fenced by generation, and durable before they are answered.
    with pytest.raises(BrokerError) as info:
        broker.commit_offsets("g", 1, follower["member_id"], [("t", 0, 3, None)])
    assert info.value.code == ErrorCode.ILLEGAL_GENERATION
    pending = broker.commit_offsets("g", 2, follower["member_id"], [("t", 0, 3, "m"), ("t", 0, -1, "")])
    rows = await asyncio.wait_for(pending, 5)
    assert rows[0] == ["t", 0, None] and rows[1][2][0] == ErrorCode.BAD_REQUEST
    assert broker.fetch_offsets("g", [("t", 0), ("t", 1)]) == [["t", 0, 3, "m"], ["t", 1, -1, ""]]
    assert broker.list_groups() == [("g", "Stable")]
    described = broker.describe_group("g")
    (member,) = [m for m in described["members"] if m["member_id"] == follower["member_id"]]
    assert member["assignment"] == {"t": [0]} and member["lag"] == 2
    broker.leave_group("g", leader["member_id"])
    broker.leave_group("g", follower["member_id"])
    assert broker.list_groups() == [("g", "Empty")]


async def test_committed_offsets_survive_a_restart(open_broker):
    broker = open_broker()
    broker.create_topic("t", 1, {})
    await asyncio.wait_for(broker.commit_offsets("solo", -1, "", [("t", 0, 7, "x")]), 5)
    broker.close()
    again = open_broker()
    assert again.fetch_offsets("solo") == [["t", 0, 7, "x"]]
    assert again.list_groups() == [("solo", "Empty")]
    assert again.describe_group("solo")["state"] == "Empty"
    assert again.describe_group("never")["state"] == "Dead"


async def test_silent_member_is_evicted_by_the_tick(broker):
    joined = await asyncio.wait_for(join(broker, "g", session=10), 5)
    broker.tick_groups()
    await asyncio.sleep(0.03)   # the scenario: the member stays silent for 3 session timeouts
    broker.tick_groups()
    with pytest.raises(BrokerError) as info:
        broker.heartbeat("g", joined["generation_id"], joined["member_id"])
    assert info.value.code == ErrorCode.UNKNOWN_MEMBER_ID
