"""What one client may make a group or the offsets store hold: bounded, refused with a clear error."""

import pytest

from clients.protocol.errors import BrokerError, ErrorCode
from minilog_wire_helpers import connect, create, subscription


def join_args(member_id="", session=10_000, rebalance=10_000):
    return {"group_id": "g", "member_id": member_id, "session_timeout_ms": session,
            "rebalance_timeout_ms": rebalance, "protocol_type": "consumer",
            "protocols": [["range", subscription("t")]]}


def test_commits_for_unknown_topics_and_partitions_are_refused_and_not_kept(server):
    with connect(server) as c:
        create(c, "t", partitions=2)
        offsets = [["t", 0, 5, ""], ["t", 2, 5, ""], ["nope", 0, 5, ""]] + \
            [[f"ghost-{i}", 0, i, ""] for i in range(1_000)]
        rows = c.call("offset_commit", {"group_id": "g", "offsets": offsets})["results"]
        assert rows[0] == ["t", 0, None]
        assert all(r[2][0] == ErrorCode.NOT_FOUND for r in rows[1:])
        assert c.call("offset_fetch", {"group_id": "g"})["offsets"] == [["t", 0, 5, ""]]


@pytest.mark.parametrize("rebalance", [2**62, 2**31, 0, -1])
def test_a_rebalance_timeout_outside_the_bounds_is_refused(server, rebalance):
    with connect(server) as c:
        with pytest.raises(BrokerError) as refused:
            c.call("join_group", join_args(rebalance=rebalance))
        assert refused.value.code == ErrorCode.BAD_REQUEST and "rebalance_timeout_ms" in refused.value.message


def test_a_group_stops_at_its_maximum_size(start_minilog):
    server = start_minilog(group_max_size=3)
    with connect(server) as c:
        for _ in range(3):  # three members join (their rebalance is not the point here)
            c.send("join_group", join_args())
        extra = c.send("join_group", join_args())
        with pytest.raises(BrokerError) as refused:
            c.wait(extra)
        assert refused.value.code == ErrorCode.PRECONDITION_FAILED and "maximum size of 3" in refused.value.message
    with connect(server) as c:  # another group is not affected
        other = dict(join_args(), group_id="other")
        assert c.call("join_group", other)["member_id"]
