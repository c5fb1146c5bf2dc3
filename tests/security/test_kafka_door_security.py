"""minilog's Kafka door with the real confluent-kafka: SASL PLAIN against the user store (the
same users and backoff as the msgpack door), ACL denials as Kafka's TOPIC_/GROUP_AUTHORIZATION_FAILED,
and SASL_SSL on the Kafka door's TLS twin."""

import pytest

from harness import wait_until
from minilog.acl import parse_acl
from serverbase.tls import TlsSettings, server_context
from serverbase.users import UserStore

from certs import make_pki

ck = pytest.importorskip("confluent_kafka")
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402


@pytest.fixture
def secured(start_minilog, tmp_path):
    data = tmp_path / "ml"
    pki = make_pki(tmp_path / "pki")
    with UserStore(str(data)).editing() as store:
        store.add("admin", "admin-pw", [parse_acl("topic:*:all"), parse_acl("group:*:all")])
        store.add("alice", "alice-pw", [parse_acl("topic:alice-*:all"), parse_acl("group:alice-*:read")])
    tls = TlsSettings(server_context(pki.server_cert, pki.server_key), {"kafka": 0})
    srv = start_minilog(data, auth=True, kafka_port=0, tls=tls)
    srv.bootstrap = f"127.0.0.1:{srv.server.listener('kafka').port}"
    srv.tls_bootstrap = f"127.0.0.1:{srv.server.listener('kafka-tls').port}"
    srv.pki = pki
    return srv


def sasl(user, password, protocol="SASL_PLAINTEXT", **extra):
    return {"security.protocol": protocol, "sasl.mechanism": "PLAIN", "sasl.username": user,
            "sasl.password": password, **extra}


def test_sasl_plain_with_store_users_and_acl_denials(secured):
    admin = AdminClient({"bootstrap.servers": secured.bootstrap, **sasl("admin", "admin-pw")})
    for f in admin.create_topics([NewTopic("bob-topic", 1, 1), NewTopic("alice-topic", 1, 1)]).values():
        f.result(15)
    alice = AdminClient({"bootstrap.servers": secured.bootstrap, **sasl("alice", "alice-pw")})
    topics = alice.list_topics(timeout=15).topics
    assert "alice-topic" in topics and "bob-topic" not in topics   # metadata shows what alice may describe
    futures = alice.create_topics([NewTopic("bob-new", 1, 1), NewTopic("alice-new", 1, 1)])
    futures["alice-new"].result(15)
    with pytest.raises(ck.KafkaException) as info:
        futures["bob-new"].result(15)
    assert info.value.args[0].code() == ck.KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_joining_another_teams_group_is_group_authorization_failed(secured):
    admin = AdminClient({"bootstrap.servers": secured.bootstrap, **sasl("admin", "admin-pw")})
    admin.create_topics([NewTopic("alice-topic", 1, 1)])["alice-topic"].result(15)
    consumer = ck.Consumer({"bootstrap.servers": secured.bootstrap, "group.id": "bob-group",
                            "auto.offset.reset": "earliest", **sasl("alice", "alice-pw")})
    consumer.subscribe(["alice-topic"])
    try:
        codes = set()
        for _ in range(20):
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is not None:
                codes.add(msg.error().code())
                break
        assert ck.KafkaError.GROUP_AUTHORIZATION_FAILED in codes
    finally:
        consumer.close()


def test_a_wrong_password_is_refused(secured):
    errors = []
    admin = AdminClient({"bootstrap.servers": secured.bootstrap, **sasl("alice", "wrong"),
                         "error_cb": lambda e: errors.append(e)})
    with pytest.raises(ck.KafkaException):
        admin.list_topics(timeout=5)
    wait_until(lambda: admin.poll(0.1) is not None and errors, timeout=15, message="the authentication error")
    assert any(e.code() == ck.KafkaError._AUTHENTICATION for e in errors), [str(e) for e in errors]
    assert secured.call(lambda: secured.server.authenticator.failed_logins) >= 1


def test_sasl_ssl_on_the_kafka_tls_twin(secured):
    conf = {"bootstrap.servers": secured.tls_bootstrap, "ssl.ca.location": secured.pki.ca,
            **sasl("admin", "admin-pw", "SASL_SSL")}
    admin = AdminClient(conf)
    admin.create_topics([NewTopic("secure", 2, 1)])["secure"].result(15)
    assert len(admin.list_topics(timeout=15).topics["secure"].partitions) == 2


def test_produce_and_fetch_over_sasl_ssl_and_a_denied_topic(secured):
    import os
    base = {"bootstrap.servers": secured.tls_bootstrap, "ssl.ca.location": secured.pki.ca,
            **sasl("alice", "alice-pw", "SASL_SSL")}
    big = os.urandom(300_000)   # fetch replies over 64 KiB: written through TLS, never sendfile
    reports = []
    producer = ck.Producer({**base, "linger.ms": 5})
    for i in range(6):
        producer.produce("alice-big", big if i % 2 == 0 else f"v{i}".encode(),
                         on_delivery=lambda err, msg: reports.append(err))
    producer.produce("bob-topic", b"no", on_delivery=lambda err, msg: reports.append(err))
    assert producer.flush(30) == 0
    assert len(reports) == 7 and sum(e is None for e in reports) == 6
    denied = [e for e in reports if e is not None]
    assert len(denied) == 1 and denied[0].code() == ck.KafkaError.TOPIC_AUTHORIZATION_FAILED
    consumer = ck.Consumer({**base, "group.id": "alice-readers", "auto.offset.reset": "earliest"})
    consumer.subscribe(["alice-big"])
    got = []
    try:
        for _ in range(200):
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append(msg.value())
            if len(got) == 6:
                break
    finally:
        consumer.close()
    assert got[0] == big and got[1] == b"v1" and got[4] == big
