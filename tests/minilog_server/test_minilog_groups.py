"""Consumer groups over the wire: join, sync, heartbeat, leave, session timeouts, offsets."""

import msgpack
import pytest

from clients.protocol.errors import BrokerError, ErrorCode
from harness import wait_until
from minilog_wire_helpers import assignment, batch, connect, create, error_code, produce, subscription, values

SESSION = {"session_timeout_ms": 10_000, "rebalance_timeout_ms": 10_000}


def join_args(group, member_id="", session=SESSION, client="c"):
    return {"group_id": group, "member_id": member_id, "protocol_type": "consumer", "client": client,
            "protocols": [["range", subscription("t")]], **session}


def heartbeat_code(conn, group, generation, member_id):
    try:
        conn.call("heartbeat", {"group_id": group, "generation_id": generation, "member_id": member_id})
        return None
    except BrokerError as exc:
        return exc.code


def form_group(conns, group, session=SESSION):
    """Join every connection as a member of `group` and sync; returns (generation, [member ids], leader)."""
    first = conns[0].call("join_group", join_args(group, session=session))
    members = {0: first["member_id"]}
    if len(conns) > 1:
        # Newcomers trigger a rebalance; the first member learns of it by heartbeat and rejoins.
        ids = {i: c.send("join_group", join_args(group, session=session)) for i, c in enumerate(conns) if i}
        for c in conns[1:]:
            c.flush()
        wait_until(lambda: heartbeat_code(conns[0], group, first["generation_id"], members[0])
                   == ErrorCode.REBALANCE_IN_PROGRESS, message="the rebalance to start")
        ids[0] = conns[0].send("join_group", join_args(group, members[0], session=session))
        conns[0].flush()
        results = {i: conns[i].wait(rid) for i, rid in ids.items()}
    else:
        results = {0: first}
    generation = results[0]["generation_id"]
    assert {r["generation_id"] for r in results.values()} == {generation}
    leader = results[0]["leader_id"]
    ids = [results[i]["member_id"] for i in range(len(conns))]
    leader_index = ids.index(leader)
    # Leader assigns partition i to member i (opaque to the broker).
    plan = [[m, assignment({"t": [i]})] for i, m in enumerate(ids)]
    sync_ids = {}
    for i, c in enumerate(conns):
        args = {"group_id": group, "generation_id": generation, "member_id": ids[i],
                "assignments": plan if i == leader_index else []}
        sync_ids[i] = c.send("sync_group", args)
        c.flush()
    for i, c in enumerate(conns):
        assert msgpack.unpackb(c.wait(sync_ids[i])["assignment"]) == {"t": [i]}
    return generation, ids, leader, results


def test_three_members_join_the_leader_gets_members_and_everyone_their_assignment(server):
    conns = [connect(server, f"m{i}") for i in range(3)]
    try:
        generation, ids, leader, results = form_group(conns, "g")
        assert len(set(ids)) == 3
        for i, r in results.items():
            if r["member_id"] == leader:
                assert sorted(m for m, _ in r["members"]) == sorted(ids)
                assert all(meta == subscription("t") for _, meta in r["members"])
            else:
                assert r["members"] == []
            assert r["protocol"] == "range"
        for i, c in enumerate(conns):
            assert heartbeat_code(c, "g", generation, ids[i]) is None
        described = conns[0].call("describe_groups", {"groups": ["g"]})["groups"][0]
        assert described["state"] == "Stable" and described["generation_id"] == generation
        assert {m["member_id"]: m["assignment"] for m in described["members"]} == {
            ids[i]: {"t": [i]} for i in range(3)}
        assert ["g", "Stable"] in conns[0].call("list_groups")["groups"]
    finally:
        for c in conns:
            c.close()


def test_leave_triggers_a_rebalance_for_the_rest(server):
    conns = [connect(server) for _ in range(2)]
    try:
        generation, ids, _, _ = form_group(conns, "g")
        conns[1].call("leave_group", {"group_id": "g", "member_id": ids[1]})
        assert heartbeat_code(conns[0], "g", generation, ids[0]) == ErrorCode.REBALANCE_IN_PROGRESS
        r = conns[0].call("join_group", join_args("g", ids[0]))
        assert r["generation_id"] == generation + 1 and r["leader_id"] == ids[0]
        assert [m for m, _ in r["members"]] == [ids[0]]
        assert heartbeat_code(conns[1], "g", generation, ids[1]) == ErrorCode.UNKNOWN_MEMBER_ID
    finally:
        for c in conns:
            c.close()


def test_session_timeout_evicts_a_silent_member_and_rebalances(server):
    short = {"session_timeout_ms": 300, "rebalance_timeout_ms": 5_000}
    conns = [connect(server) for _ in range(2)]
    try:
        generation, ids, _, _ = form_group(conns, "g", session=short)
        # Member 0 keeps heartbeating; member 1 goes silent.
        wait_until(lambda: heartbeat_code(conns[0], "g", generation, ids[0]) == ErrorCode.REBALANCE_IN_PROGRESS,
                   timeout=10, interval=0.05, message="member 1 to be evicted")
        r = conns[0].call("join_group", join_args("g", ids[0], session=short))
        assert r["generation_id"] == generation + 1
        assert [m for m, _ in r["members"]] == [ids[0]]
        assert heartbeat_code(conns[1], "g", generation, ids[1]) == ErrorCode.UNKNOWN_MEMBER_ID
    finally:
        for c in conns:
            c.close()


def test_rebalance_timeout_drops_members_that_do_not_rejoin(server):
    fast = {"session_timeout_ms": 10_000, "rebalance_timeout_ms": 300}
    conns = [connect(server) for _ in range(2)]
    try:
        generation, ids, _, _ = form_group(conns, "g", session=fast)
        # Member 0 rejoins (say, its subscription changed); member 1 never does.
        r = conns[0].call("join_group", {**join_args("g", ids[0], session=fast),
                                         "protocols": [["range", subscription("t", "u")]]}, timeout=10)
        assert r["generation_id"] == generation + 1 and [m for m, _ in r["members"]] == [ids[0]]
    finally:
        for c in conns:
            c.close()


def test_stale_generation_cannot_sync_heartbeat_or_commit(server):
    conns = [connect(server) for _ in range(2)]
    try:
        create(conns[0], "t")  # commits are kept only for partitions that exist
        generation, ids, _, _ = form_group(conns, "g")
        commit = {"group_id": "g", "generation_id": generation - 1, "member_id": ids[0],
                  "offsets": [["t", 0, 5, ""]]}
        assert error_code(conns[0].call, "offset_commit", commit) == ErrorCode.ILLEGAL_GENERATION
        assert heartbeat_code(conns[0], "g", generation - 1, ids[0]) == ErrorCode.ILLEGAL_GENERATION
        assert error_code(conns[0].call, "sync_group", {"group_id": "g", "generation_id": generation + 7,
                                                        "member_id": ids[0]}) == ErrorCode.ILLEGAL_GENERATION
        # A simple consumer (generation -1) may not commit while the group has members.
        simple = {"group_id": "g", "generation_id": -1, "member_id": "", "offsets": [["t", 0, 5, ""]]}
        assert error_code(conns[0].call, "offset_commit", simple) == ErrorCode.ILLEGAL_GENERATION
        ok = conns[0].call("offset_commit", {**commit, "generation_id": generation})
        assert ok["results"] == [["t", 0, None]]
        assert error_code(conns[0].call, "offset_commit", {**commit, "generation_id": generation,
                                                           "member_id": "stranger"}) == ErrorCode.UNKNOWN_MEMBER_ID
    finally:
        for c in conns:
            c.close()


def test_offset_commit_and_fetch(server):
    with connect(server) as c:
        create(c, "t", partitions=3)
        commit = {"group_id": "solo", "generation_id": -1, "member_id": "",
                  "offsets": [["t", 0, 10, "meta"], ["t", 1, 3, ""], ["u", 0, -4, ""]]}
        results = c.call("offset_commit", commit)["results"]
        assert results[:2] == [["t", 0, None], ["t", 1, None]]
        assert results[2][2][0] == ErrorCode.BAD_REQUEST
        c.call("offset_commit", {**commit, "offsets": [["t", 0, 12, "later"]]})
        fetched = c.call("offset_fetch", {"group_id": "solo", "partitions": [["t", 0], ["t", 1], ["t", 2]]})
        assert fetched["offsets"] == [["t", 0, 12, "later"], ["t", 1, 3, ""], ["t", 2, -1, ""]]
        assert c.call("offset_fetch", {"group_id": "solo", "partitions": None})["offsets"] == [
            ["t", 0, 12, "later"], ["t", 1, 3, ""]]
        assert c.call("offset_fetch", {"group_id": "nobody"})["offsets"] == []
        assert ["solo", "Empty"] in c.call("list_groups")["groups"]


def test_describe_reports_lag_per_member(server):
    conns = [connect(server) for _ in range(2)]
    try:
        create(conns[0], "t", partitions=2)
        produce(conns[0], "t", 0, batch(values(10)))
        produce(conns[0], "t", 1, batch(values(4)))
        generation, ids, _, _ = form_group(conns, "g")
        conns[0].call("offset_commit", {"group_id": "g", "generation_id": generation, "member_id": ids[0],
                                        "offsets": [["t", 0, 7, ""]]})
        members = {m["member_id"]: m for m in conns[0].call("describe_groups", {"groups": ["g"]})["groups"][0]["members"]}
        assert members[ids[0]]["lag"] == 3 and members[ids[0]]["partitions"] == [["t", 0, 7, 10, 3]]
        assert members[ids[1]]["lag"] == 4 and members[ids[1]]["partitions"] == [["t", 1, -1, 4, 4]]
        unknown = conns[0].call("describe_groups", {"groups": ["none"]})["groups"][0]
        assert unknown["state"] == "Dead" and unknown["members"] == []
    finally:
        for c in conns:
            c.close()


def test_group_calls_for_unknown_groups_and_members(server):
    with connect(server) as c:
        assert heartbeat_code(c, "nobody", 1, "m") == ErrorCode.NOT_FOUND
        r = c.call("join_group", join_args("g"))
        assert heartbeat_code(c, "g", r["generation_id"], "ghost") == ErrorCode.UNKNOWN_MEMBER_ID
        assert error_code(c.call, "join_group", join_args("g", member_id="ghost")) == ErrorCode.UNKNOWN_MEMBER_ID
        assert error_code(c.call, "join_group", {**join_args("g"), "protocols": []}) == ErrorCode.BAD_REQUEST
        assert error_code(c.call, "join_group", {**join_args("g"), "session_timeout_ms": 1}) == ErrorCode.BAD_REQUEST


def test_last_member_leaving_empties_the_group(server):
    with connect(server) as c:
        create(c, "t")
        r = c.call("join_group", join_args("g"))
        c.call("sync_group", {"group_id": "g", "generation_id": r["generation_id"], "member_id": r["member_id"],
                              "assignments": [[r["member_id"], assignment({"t": [0]})]]})
        c.call("leave_group", {"group_id": "g", "member_id": r["member_id"]})
        assert c.call("describe_groups", {"groups": ["g"]})["groups"][0]["state"] == "Empty"
        # Now a simple consumer may commit with generation -1.
        assert c.call("offset_commit", {"group_id": "g", "generation_id": -1, "member_id": "",
                                        "offsets": [["t", 0, 1, ""]]})["results"] == [["t", 0, None]]


def test_a_member_whose_connection_drops_mid_join_does_not_block_the_group(server):
    a, b = connect(server), connect(server)
    try:
        ra = a.call("join_group", join_args("g", session={"session_timeout_ms": 300, "rebalance_timeout_ms": 300}))
        b.send("join_group", join_args("g", session={"session_timeout_ms": 300, "rebalance_timeout_ms": 300}))
        b.flush()
        wait_until(lambda: heartbeat_code(a, "g", ra["generation_id"], ra["member_id"])
                   == ErrorCode.REBALANCE_IN_PROGRESS)
        b.close()   # b's parked join has no one to answer now; a must still get a generation
        r = a.call("join_group", join_args("g", ra["member_id"], session={"session_timeout_ms": 300,
                                                                          "rebalance_timeout_ms": 300}), timeout=10)
        assert r["generation_id"] > ra["generation_id"]
    finally:
        a.close()


@pytest.mark.parametrize("bad", [{"group_id": "g"}, {"group_id": "g", "protocols": [["range", "not bin"]]}])
def test_malformed_group_requests_are_bad_requests(server, bad):
    with connect(server) as c:
        assert error_code(c.call, "join_group", bad) == ErrorCode.BAD_REQUEST
        assert c.call("ping")["pong"]


def test_initial_rebalance_delay_lets_members_started_together_share_generation_one(start_minilog):
    server = start_minilog(group_initial_rebalance_delay_ms=300)
    a, b = connect(server), connect(server)
    try:
        ra_id = a.send("join_group", join_args("fresh"))
        rb_id = b.send("join_group", join_args("fresh"))
        a.flush()
        b.flush()
        ra, rb = a.wait(ra_id, timeout=10), b.wait(rb_id, timeout=10)
        assert ra["generation_id"] == rb["generation_id"] == 1
        leader = ra if ra["member_id"] == ra["leader_id"] else rb
        assert len(leader["members"]) == 2
    finally:
        a.close()
        b.close()
