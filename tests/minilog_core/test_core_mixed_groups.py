"""One consumer group, members of both front doors: the core hands the leader every member's
subscription, and each member its assignment, in its own client's layout (Kafka's
ConsumerProtocol or the msgpack clients' maps). DeleteGroups. In-process, on the core."""

import asyncio

import msgpack
import pytest

from clients.protocol.errors import BrokerError, ErrorCode
from minilog import consumer_protocol as cp
from minilog.batch_formats import KAFKA, MINILOG

SESSION = 10_000


def join(broker, fmt, metadata, member=""):
    return broker.join_group("mixed", member, fmt, SESSION, SESSION, "consumer", [("range", metadata)], fmt)


async def test_a_kafka_leader_and_a_msgpack_member_read_each_other(broker):
    kafka_meta = cp.encode_kafka_subscription(["orders"], {})
    ours_meta = msgpack.packb({"topics": ["orders", "audit"], "owned": {"orders": [1]}})
    kafka = await asyncio.wait_for(join(broker, KAFKA, kafka_meta), 5)       # first: the leader
    ours_fut = join(broker, MINILOG, ours_meta)
    kafka_again = join(broker, KAFKA, kafka_meta, kafka["member_id"])
    leader, ours = await asyncio.wait_for(asyncio.gather(kafka_again, ours_fut), 5)
    assert leader["leader_id"] == leader["member_id"] == kafka["member_id"]
    subs = {m: cp.decode_kafka_subscription(meta) for m, meta in leader["members"]}
    assert subs[ours["member_id"]] == {"topics": ["orders", "audit"], "owned": {"orders": [1]}}
    assert subs[leader["member_id"]]["topics"] == ["orders"]
    # The Kafka leader assigns in Kafka's layout; the msgpack member receives its own.
    plan = {leader["member_id"]: {"orders": [0]}, ours["member_id"]: {"orders": [1], "audit": [0]}}
    gen = leader["generation_id"]
    ours_sync = broker.sync_group("mixed", gen, ours["member_id"], [])
    leader_sync = broker.sync_group("mixed", gen, leader["member_id"],
                                    [(m, cp.encode_kafka_assignment(a)) for m, a in plan.items()])
    assert cp.decode_kafka_assignment((await leader_sync)["assignment"]) == {"orders": [0]}
    assert msgpack.unpackb((await ours_sync)["assignment"]) == {"orders": [1], "audit": [0]}
    described = {m["member_id"]: m["assignment"] for m in broker.describe_group("mixed")["members"]}
    assert described == plan
    group = broker.groups.describe("mixed")
    member = group.members[ours["member_id"]]
    assert cp.decode_kafka_assignment(broker.groups.assignment_in(group, member, KAFKA)) == plan[ours["member_id"]]


async def test_a_msgpack_leader_reads_a_kafka_member_and_assigns_in_its_layout(broker):
    ours = await asyncio.wait_for(join(broker, MINILOG, msgpack.packb({"topics": ["t"], "owned": {}})), 5)
    kafka_fut = join(broker, KAFKA, cp.encode_kafka_subscription(["t"], {"t": [2]}))
    ours_again = join(broker, MINILOG, msgpack.packb({"topics": ["t"], "owned": {}}), ours["member_id"])
    leader, kafka = await asyncio.wait_for(asyncio.gather(ours_again, kafka_fut), 5)
    metas = {m: msgpack.unpackb(meta) for m, meta in leader["members"]}
    assert metas[kafka["member_id"]] == {"topics": ["t"], "owned": {"t": [2]}}
    gen = leader["generation_id"]
    kafka_sync = broker.sync_group("mixed", gen, kafka["member_id"], [])
    await broker.sync_group("mixed", gen, leader["member_id"],
                            [(kafka["member_id"], msgpack.packb({"t": [0, 1, 2]})), (leader["member_id"], b"")])
    assert cp.decode_kafka_assignment((await kafka_sync)["assignment"]) == {"t": [0, 1, 2]}


async def test_unreadable_metadata_goes_to_the_leader_as_it_came(broker):
    first = await asyncio.wait_for(join(broker, KAFKA, b"\x00\x00\xff"), 5)
    assert first["members"] == [[first["member_id"], b"\x00\x00\xff"]]
    assert cp.translate_metadata(b"not msgpack \xc1", MINILOG, KAFKA) == b"not msgpack \xc1"


async def test_delete_groups(broker):
    broker.create_topic("t", 1, {})  # commits are kept only for partitions that exist
    joined = await asyncio.wait_for(join(broker, KAFKA, cp.encode_kafka_subscription(["t"])), 5)
    await asyncio.wait_for(broker.commit_offsets("idle", -1, "", [("t", 0, 5, "")]), 5)
    rows = broker.delete_groups(["mixed", "idle", "never"])
    rows = await asyncio.wait_for(rows, 5) if not isinstance(rows, list) else rows
    assert [r[1] and r[1][0] for r in rows] == [ErrorCode.NON_EMPTY_GROUP, None, ErrorCode.NOT_FOUND]
    assert broker.fetch_offsets("idle") == [] and ("idle", "Empty") not in broker.list_groups()
    broker.leave_group("mixed", joined["member_id"])
    assert broker.delete_groups(["mixed"]) == [["mixed", None]]
    with pytest.raises(BrokerError):
        broker.heartbeat("mixed", joined["generation_id"], joined["member_id"])
