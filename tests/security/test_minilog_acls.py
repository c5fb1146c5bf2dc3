"""Kafka's ACL model on minilog's msgpack door: each kind of op denied for a topic or a group
gets NOT_AUTHORIZED (per partition where the op has rows), the rest of the request goes on,
and the connection stays usable."""

import pytest

from clients.log import Consumer, KafkaError, Producer
from clients.protocol.errors import BrokerError, ErrorCode
from clients.record_batch import pack_batch
from clients.rpc import RpcConnection
from minilog.acl import Acl, parse_acl
from serverbase.users import UserStore

ALICE = ["topic:alice-*:all", "group:alice-*:read", "topic:shared:describe"]


def batch(value: bytes) -> bytes:
    import msgpack
    return pack_batch(msgpack.packb([[0, 0, None, value, None]], use_bin_type=True), 1, 0, 0, 0, 0)


@pytest.fixture
def server(start_minilog, tmp_path):
    data = tmp_path / "ml"
    with UserStore(str(data)).editing() as store:
        store.add("admin", "admin-pw", [parse_acl("topic:*:all"), parse_acl("group:*:all")])
        store.add("alice", "alice-pw", [parse_acl(a) for a in ALICE])
    server = start_minilog(data, auth=True)
    with connect(server, "admin") as admin:
        admin.call("create_topics", {"topics": [{"name": n} for n in ("bob-topic", "alice-topic", "shared")]})
        rows = admin.call("produce", {"acks": 1, "data": [["bob-topic", 0, batch(b"bob's")]]})["results"]
        assert rows[0][3] is None
        admin.call("offset_commit", {"group_id": "bob-group", "offsets": [["bob-topic", 0, 1]]})
    return server


def connect(server, user):
    return RpcConnection(server.host, server.port, credentials={"username": user, "password": f"{user}-pw"})


def denied(error) -> bool:
    return error is not None and error[0] == ErrorCode.NOT_AUTHORIZED


def test_rows_of_denied_topics_fail_alone(server):
    with connect(server, "alice") as conn:
        rows = conn.call("produce", {"acks": 1, "data": [["alice-topic", 0, batch(b"a")], ["bob-topic", 0, batch(b"b")],
                                                         ["shared", 0, batch(b"s")],
                                                         ["alice-new", 0, batch(b"created")]]})["results"]
        assert [r[3] is None for r in rows] == [True, False, False, True]
        assert denied(rows[1][3]) and "write" in rows[1][3][1] and denied(rows[2][3])
        fetched = conn.call("fetch", {"partitions": [["bob-topic", 0, 0], ["alice-topic", 0, 0]]})
        text = repr(fetched)
        assert "NOT_AUTHORIZED" in text and "bob's" not in text
        offsets = conn.call("list_offsets", {"partitions": [["bob-topic", 0, -1], ["shared", 0, -1]]})["results"]
        assert denied(offsets[0][3]) and offsets[1][3] is None
        assert conn.call("ping", {})["pong"] is True


def test_topic_admin_and_metadata(server):
    with connect(server, "alice") as conn:
        results = conn.call("create_topics", {"topics": [{"name": "bob-new"}, {"name": "alice-made"}]})["results"]
        assert denied(results["bob-new"]) and results["alice-made"] is None
        assert denied(conn.call("delete_topics", {"topics": ["bob-topic"]})["results"]["bob-topic"])
        visible = conn.call("metadata", {})["topics"]
        assert set(visible) == {"alice-topic", "alice-made", "shared"}
        asked = conn.call("metadata", {"topics": ["bob-topic", "shared"]})["topics"]
        assert denied(asked["bob-topic"]["error"]) and asked["shared"]["error"] is None
        # Auto-creation through metadata needs create: alice-* yes, others no.
        auto = conn.call("metadata", {"topics": ["alice-auto", "carol-auto"], "allow_auto_create": True})["topics"]
        assert auto["alice-auto"]["error"] is None and denied(auto["carol-auto"]["error"])
    with connect(server, "admin") as admin:
        assert "carol-auto" not in admin.call("metadata", {})["topics"]
        assert "bob-topic" in admin.call("metadata", {})["topics"]


GROUP_DENIED = [
    ("join_group", {"group_id": "bob-group", "protocols": [["range", b""]]}),
    ("sync_group", {"group_id": "bob-group", "generation_id": 1, "member_id": "m"}),
    ("heartbeat", {"group_id": "bob-group", "generation_id": 1, "member_id": "m"}),
    ("leave_group", {"group_id": "bob-group", "member_id": "m"}),
    ("offset_commit", {"group_id": "bob-group", "offsets": [["alice-topic", 0, 0]]}),
    ("offset_fetch", {"group_id": "bob-group"}),
    ("describe_groups", {"groups": ["bob-group"]}),
]


@pytest.mark.parametrize("op,args", GROUP_DENIED, ids=[d[0] for d in GROUP_DENIED])
def test_another_teams_group_is_not_authorized(server, op, args):
    with connect(server, "alice") as conn:
        with pytest.raises(BrokerError) as info:
            conn.call(op, args)
        assert info.value.code == ErrorCode.NOT_AUTHORIZED and "bob-group" in info.value.message
        assert conn.call("ping", {})["pong"] is True


def test_own_group_commits_only_readable_topics_and_lists_only_its_groups(server):
    with connect(server, "alice") as conn:
        rows = conn.call("offset_commit", {"group_id": "alice-group",
                                           "offsets": [["alice-topic", 0, 0], ["bob-topic", 0, 1]]})["results"]
        assert rows[0][2] is None and denied(rows[1][2])
        assert conn.call("list_groups", {})["groups"] == [["alice-group", "Empty"]]
        fetched = conn.call("offset_fetch", {"group_id": "alice-group"})["offsets"]
        assert [r[0] for r in fetched] == ["alice-topic"]
    with connect(server, "admin") as admin:
        assert {g for g, _ in admin.call("list_groups", {})["groups"]} == {"alice-group", "bob-group"}
        assert [r[:3] for r in admin.call("offset_fetch", {"group_id": "bob-group"})["offsets"]] == [["bob-topic", 0, 1]]


def test_confluent_style_clients_see_the_denials(server):
    conf = {"bootstrap.servers": f"127.0.0.1:{server.port}", "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN", "sasl.username": "alice", "sasl.password": "alice-pw"}
    reports = []
    producer = Producer(conf)
    producer.produce("alice-topic", b"fine", on_delivery=lambda err, msg: reports.append(("alice", err)))
    producer.produce("bob-topic", b"nope", on_delivery=lambda err, msg: reports.append(("bob", err)))
    producer.flush(15)
    errors = dict(reports)
    assert errors["alice"] is None and errors["bob"].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    consumer = Consumer({**conf, "group.id": "bob-group", "auto.offset.reset": "earliest"})
    consumer.subscribe(["alice-topic"])
    try:
        msg = consumer.poll(5)
        assert msg is not None and msg.error() is not None
        assert msg.error().code() == KafkaError.GROUP_AUTHORIZATION_FAILED
    finally:
        consumer.close()


def test_acl_matching_rules():
    acl = Acl("u", [parse_acl(a) for a in ("topic:orders:read", "topic:logs-*:write", "group:*:describe",
                                           "topic:everything:all")])
    assert acl.allows("topic", "orders", "read") and acl.allows("topic", "orders", "describe")
    assert not acl.allows("topic", "orders", "write") and not acl.allows("topic", "orders-2", "read")
    assert acl.allows("topic", "logs-app", "write") and not acl.allows("topic", "logs", "write")
    assert acl.allows("group", "any", "describe") and not acl.allows("group", "any", "read")
    assert acl.allows("topic", "everything", "delete") and not acl.allows("group", "orders", "read")
    for bad in ("topic:orders", "queue:x:read", "topic::read", "topic:x:fly", "topic:x:"):
        with pytest.raises(ValueError):
            parse_acl(bad)
    assert not Acl.from_stored("u", None).allows("topic", "x", "describe")
