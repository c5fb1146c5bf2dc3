"""Topics through the Kafka door with the real admin clients (confluent-kafka, kafka-python),
and the connection rules: version negotiation, a malformed frame closes only its connection."""

import os
import socket
import time
import struct

import pytest

from harness import wait_until
from minilog.kafka import errors
from minilog.kafka.codec import decode_response, encode_request
from minilog.kafka.messages import API_VERSIONS, METADATA

confluent_admin = pytest.importorskip("confluent_kafka.admin")
from confluent_kafka import KafkaError, KafkaException  # noqa: E402


def _result(future):
    return future.result(timeout=15)


def test_confluent_admin_creates_describes_and_deletes_topics(bootstrap):
    admin = confluent_admin.AdminClient({"bootstrap.servers": bootstrap})
    created = admin.create_topics([confluent_admin.NewTopic("orders", 3, 1, config={"retention.ms": "60000"}),
                                   confluent_admin.NewTopic("audit", 1, 1)])
    for f in created.values():
        assert _result(f) is None
    md = admin.list_topics(timeout=15)
    assert {"orders", "audit"} <= set(md.topics)
    assert sorted(md.topics["orders"].partitions) == [0, 1, 2]
    assert md.topics["orders"].partitions[1].leader == 0 and list(md.brokers) == [0]

    resource = confluent_admin.ConfigResource(confluent_admin.ResourceType.TOPIC, "orders")
    configs = _result(admin.describe_configs([resource])[resource])
    assert configs["retention.ms"].value == "60000"

    again = admin.create_topics([confluent_admin.NewTopic("orders", 1, 1)])
    with pytest.raises(KafkaException) as exc:
        _result(again["orders"])
    assert exc.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS

    bad = admin.create_topics([confluent_admin.NewTopic("no/slashes", 1, 1)])
    with pytest.raises(KafkaException) as exc:
        _result(bad["no/slashes"])
    assert exc.value.args[0].code() == KafkaError.TOPIC_EXCEPTION

    for f in admin.delete_topics(["audit"]).values():
        assert _result(f) is None
    wait_until(lambda: "audit" not in admin.list_topics(timeout=15).topics, message="audit deleted")
    with pytest.raises(KafkaException) as exc:
        _result(admin.delete_topics(["audit"])["audit"])
    assert exc.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_kafka_python_admin_lists_creates_and_deletes(bootstrap):
    kafka_admin = pytest.importorskip("kafka.admin")
    admin = kafka_admin.KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    try:
        admin.create_topics([kafka_admin.NewTopic("kp-topic", num_partitions=2, replication_factor=1)])
        assert "kp-topic" in admin.list_topics()
        admin.delete_topics(["kp-topic"])
        wait_until(lambda: "kp-topic" not in admin.list_topics(), message="kp-topic deleted")
    finally:
        admin.close()


def _exchange(sock, frame: bytes) -> bytes:
    sock.sendall(frame)
    size = struct.unpack(">i", _recv(sock, 4))[0]
    return _recv(sock, size)


def _recv(sock, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def test_api_versions_at_an_unknown_version_answers_with_our_ranges(kafka_minilog):
    port = kafka_minilog.server.listener("kafka").port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        reply = _exchange(sock, struct.pack(">ihhih", 10, API_VERSIONS.key, 77, 9, -1))
        correlation_id, body = decode_response(API_VERSIONS, 0, reply)
        assert correlation_id == 9 and body["error_code"] == errors.UNSUPPORTED_VERSION
        assert {k["api_key"] for k in body["api_keys"]} >= {API_VERSIONS.key, METADATA.key}
        # the connection stays usable: a supported version now answers
        reply = _exchange(sock, encode_request(API_VERSIONS, 3, 10, "t", {"client_software_name": "t",
                                                                           "client_software_version": "1"}))
        assert decode_response(API_VERSIONS, 3, reply)[1]["error_code"] == 0


def test_a_malformed_request_closes_only_its_connection(kafka_minilog, caplog):
    port = kafka_minilog.server.listener("kafka").port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as good, \
            socket.create_connection(("127.0.0.1", port), timeout=10) as bad:
        bad.sendall(struct.pack(">i", 6) + b"\x00\x03\x00\x01\xff\xff")   # header cut short
        assert bad.recv(10) == b""
        bad2 = socket.create_connection(("127.0.0.1", port), timeout=10)
        bad2.sendall(struct.pack(">i", 0x7FFFFFF0))   # a frame far over --max-frame
        assert bad2.recv(10) == b""
        bad2.close()
        reply = _exchange(good, encode_request(METADATA, 1, 5, "t", {"topics": None}))
        assert decode_response(METADATA, 1, reply)[0] == 5
    assert any("closing kafka connection" in r.getMessage() for r in caplog.records)


def test_partitions_are_added_and_empty_groups_deleted(bootstrap):
    ck = pytest.importorskip("confluent_kafka")
    admin = confluent_admin.AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([confluent_admin.NewTopic("growing", 2, 1)]).values():
        _result(f)
    assert _result(admin.create_partitions([confluent_admin.NewPartitions("growing", 5)])["growing"]) is None
    wait_until(lambda: len(admin.list_topics(timeout=15).topics["growing"].partitions) == 5, message="5 partitions")
    with pytest.raises(KafkaException) as exc:
        _result(admin.create_partitions([confluent_admin.NewPartitions("growing", 3)])["growing"])
    assert exc.value.args[0].code() == KafkaError.INVALID_PARTITIONS

    consumer = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": "doomed", "session.timeout.ms": 6000,
                            "heartbeat.interval.ms": 100})
    consumer.assign([ck.TopicPartition("growing", 0, 0)])
    consumer.commit(offsets=[ck.TopicPartition("growing", 0, 0)], asynchronous=False)
    consumer.close()
    assert _result(admin.delete_consumer_groups(["doomed"])["doomed"]) is None
    with pytest.raises(KafkaException) as exc:
        _result(admin.delete_consumer_groups(["doomed"])["doomed"])
    assert exc.value.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND


def test_a_group_with_members_is_not_deleted(bootstrap):
    ck = pytest.importorskip("confluent_kafka")
    admin = confluent_admin.AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([confluent_admin.NewTopic("busy", 1, 1)]).values():
        _result(f)
    consumer = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": "busy-group", "session.timeout.ms": 6000,
                            "heartbeat.interval.ms": 100})
    consumer.subscribe(["busy"])
    try:
        wait_until(lambda: consumer.poll(0.05) is None and consumer.assignment(), timeout=30, message="joined")
        with pytest.raises(KafkaException) as exc:
            _result(admin.delete_consumer_groups(["busy-group"])["busy-group"])
        assert exc.value.args[0].code() == KafkaError.NON_EMPTY_GROUP
    finally:
        consumer.close()


def test_confluent_admin_create_request_is_bounded_in_partitions(bootstrap, kafka_minilog):
    """One CreateTopics of more than 10,000 partitions in all is refused topic by topic, nothing made."""
    admin = confluent_admin.AdminClient({"bootstrap.servers": bootstrap})
    created = admin.create_topics([confluent_admin.NewTopic("huge-a", 6000, 1),
                                   confluent_admin.NewTopic("huge-b", 4001, 1)], request_timeout=60)
    for name in ("huge-a", "huge-b"):
        with pytest.raises(KafkaException) as exc:
            _result(created[name])
        assert exc.value.args[0].code() == KafkaError.INVALID_REQUEST
        assert "at most 10000 partitions" in exc.value.args[0].str()
    assert not kafka_minilog.server.broker.topics.exists("huge-a")
    assert not [n for n in os.listdir(kafka_minilog.data_dir) if n.startswith("huge-")]
    # Within the bound, a wide topic is made (off the event loop) and usable at once.
    assert _result(admin.create_topics([confluent_admin.NewTopic("wide", 200, 1)], request_timeout=60)["wide"]) is None
    assert sorted(admin.list_topics(timeout=15).topics["wide"].partitions) == list(range(200))


def test_partitions_are_added_off_the_event_loop_all_at_once(bootstrap, kafka_minilog):
    """CreatePartitions makes the new logs on the creation thread: another client is answered
    meanwhile, and the topic goes from 1 to 400 partitions in one step."""
    from clients.rpc import RpcConnection
    admin = confluent_admin.AdminClient({"bootstrap.servers": bootstrap})
    assert _result(admin.create_topics([confluent_admin.NewTopic("grown", 1, 1)])["grown"]) is None
    counts = set()
    with RpcConnection(kafka_minilog.host, kafka_minilog.port) as other:
        grown = admin.create_partitions([confluent_admin.NewPartitions("grown", 400)], request_timeout=120)["grown"]
        waits = []
        while not grown.done():
            sent = time.monotonic()
            other.call("ping", timeout=60)
            waits.append(time.monotonic() - sent)
            counts.add(len(other.call("metadata", {"topics": ["grown"]})["topics"]["grown"]["partitions"]))
        assert _result(grown) is None
    assert len(waits) >= 5, waits            # before: the one ping sent meanwhile waited for all of it
    assert counts <= {1, 400}, counts         # never a part of the new partitions
    assert kafka_minilog.server.broker.topics.partition_count("grown") == 400
    assert len([n for n in os.listdir(kafka_minilog.data_dir) if n.rsplit("-", 1)[0] == "grown"]) == 400


def test_a_topic_named_twice_in_one_create_fails_both_entries_and_is_not_created(kafka_minilog):
    """As Kafka: CreateTopics naming one topic twice answers INVALID_REQUEST for both entries
    (the answer could not say which of two results is the name's) and creates nothing of it;
    the other topics of the request are created."""
    from minilog.kafka.messages import CREATE_TOPICS
    port = kafka_minilog.server.listener("kafka").port
    topic = {"num_partitions": 1, "replication_factor": 1, "assignments": [], "configs": []}
    request = {"topics": [dict(topic, name="twice"), dict(topic, name="once"), dict(topic, name="twice")],
               "timeout_ms": 10000, "validate_only": False}
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        reply = _exchange(sock, encode_request(CREATE_TOPICS, 5, 7, "t", request))
        answers = [(t["name"], t["error_code"]) for t in decode_response(CREATE_TOPICS, 5, reply)[1]["topics"]]
        assert answers == [("twice", errors.INVALID_REQUEST), ("once", 0), ("twice", errors.INVALID_REQUEST)]
        reply = _exchange(sock, encode_request(METADATA, 4, 8, "t", {"topics": [{"name": "twice"}],
                                                                     "allow_auto_topic_creation": False}))
        (described,) = decode_response(METADATA, 4, reply)[1]["topics"]
        assert described["error_code"] == errors.UNKNOWN_TOPIC_OR_PARTITION
