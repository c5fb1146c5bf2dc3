"""minibroker's AMQP door with the real pika: logins against the user store (the same users and
backoff as the msgpack door), RabbitMQ's permissions as 403 ACCESS_REFUSED channel errors with
the connection kept, and AMQPS on the door's TLS twin."""

import ssl

import pytest

from serverbase.tls import TlsSettings, server_context
from serverbase.users import UserStore

from certs import make_pki

pika = pytest.importorskip("pika")


@pytest.fixture
def secured(start_minibroker, tmp_path):
    data = tmp_path / "mb"
    pki = make_pki(tmp_path / "pki")
    with UserStore(str(data)).editing() as store:
        store.add("admin", "admin-pw", {"configure": ".*", "write": ".*", "read": ".*"})
        store.add("alice", "alice-pw", {"configure": "^alice-", "write": "^(alice-.*|amq\\.default)$",
                                        "read": "^alice-"})
    tls = TlsSettings(server_context(pki.server_cert, pki.server_key), {"amqp": 0})
    srv = start_minibroker(data, auth=True, amqp_port=0, tls=tls)
    srv.amqps_port = srv.server.listener("amqps").port
    srv.pki = pki
    return srv


def params(srv, user, password, **kw):
    return pika.ConnectionParameters("127.0.0.1", kw.pop("port", srv.amqp_port),
                                     credentials=pika.PlainCredentials(user, password), **kw)


def test_store_users_log_in_and_wrong_passwords_are_refused(secured):
    with pika.BlockingConnection(params(secured, "alice", "alice-pw")) as conn:
        assert conn.channel().queue_declare("alice-q").method.queue == "alice-q"
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(params(secured, "alice", "wrong"))
    assert secured.call(lambda: secured.server.authenticator.failed_logins) == 1


def test_denied_methods_are_403_and_the_connection_stays(secured):
    with pika.BlockingConnection(params(secured, "admin", "admin-pw")) as admin:
        ch = admin.channel()
        ch.exchange_declare("bob-ex", "fanout")
        ch.queue_declare("bob-q")
    with pika.BlockingConnection(params(secured, "alice", "alice-pw")) as conn:
        attempts = [
            lambda ch: ch.queue_declare("bob-new"),
            lambda ch: ch.exchange_declare("bob-x", "direct"),
            lambda ch: ch.queue_delete("bob-q"),
            lambda ch: ch.queue_purge("bob-q"),
            lambda ch: ch.basic_get("bob-q"),
            lambda ch: ch.basic_consume("bob-q", lambda *a: None),
            lambda ch: ch.queue_bind("alice-q2", "bob-ex"),
        ]
        conn.channel().queue_declare("alice-q2")
        for attempt in attempts:
            ch = conn.channel()
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
                attempt(ch)
            assert info.value.reply_code == 403 and "ACCESS_REFUSED" in info.value.reply_text
            assert conn.is_open
        # A publish to a denied exchange closes its channel with 403 too (under confirms: raised at once).
        ch = conn.channel()
        ch.confirm_delivery()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            ch.basic_publish("bob-ex", "", b"x")
        assert info.value.reply_code == 403
        ch = conn.channel()
        ch.basic_publish("", "alice-q2", b"allowed")
        method, _, body = ch.basic_get("alice-q2", auto_ack=True)
        assert body == b"allowed"


def test_amqps_with_real_pika(secured):
    ctx = ssl.create_default_context(cafile=secured.pki.ca)
    with pika.BlockingConnection(params(secured, "alice", "alice-pw", port=secured.amqps_port,
                                        ssl_options=pika.SSLOptions(ctx))) as conn:
        ch = conn.channel()
        ch.queue_declare("alice-tls")
        ch.basic_publish("", "alice-tls", b"over tls")
        assert ch.basic_get("alice-tls", auto_ack=True)[2] == b"over tls"


def test_amqplain_through_kombu(secured):
    kombu = pytest.importorskip("kombu")
    url = f"amqp://alice:alice-pw@127.0.0.1:{secured.amqp_port}//"
    with kombu.Connection(url, login_method="AMQPLAIN", connect_timeout=10) as conn:
        conn.connect()
        queue = kombu.Queue("alice-kombu", routing_key="alice-kombu")
        with conn.Producer() as producer:
            producer.publish({"n": 1}, routing_key="alice-kombu", declare=[queue], retry=False)
        with conn.SimpleQueue(queue) as q:
            assert q.get(timeout=10).payload == {"n": 1}
    with pytest.raises(Exception) as info:
        with kombu.Connection(f"amqp://alice:wrong@127.0.0.1:{secured.amqp_port}//", login_method="AMQPLAIN",
                              connect_timeout=10) as conn:
            conn.connect()
    assert "ACCESS_REFUSED" in str(info.value) or "403" in str(info.value)
