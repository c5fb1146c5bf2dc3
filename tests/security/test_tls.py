"""TLS on the msgpack front doors of both brokers, through every client family: server and
client certificates, wrong ports both ways, settings a client cannot honour, the command line."""

import asyncio
import os
import ssl
import subprocess
import sys

import pytest

from clients import aio_broker as aio_pika
from clients import broker as pika
from clients.aio_log import AIOKafkaConsumer, AIOKafkaProducer
from clients.aio_log.helpers import create_ssl_context
from clients.log import Consumer, KafkaException, Producer
from clients.rpc import RpcConnection
from harness import ROOT, ServerProcess
from minilog.acl import parse_acl
from serverbase.tls import TlsSettings, server_context
from serverbase.users import UserStore

from certs import make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_settings(pki, client_certs=False, doors=("",)):
    return TlsSettings(server_context(pki.server_cert, pki.server_key, pki.ca if client_certs else None),
                       {door: 0 for door in doors}, client_certs=client_certs)


def tls_port(server):
    return server.server.listener("tls").port


def client_ctx(pki, cert=None, key=None):
    ctx = ssl.create_default_context(cafile=pki.ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


# ---- minibroker, pika-style and aio-pika-style --------------------------------------------------------
def test_pika_style_client_over_tls_and_plaintext_beside_it(start_minibroker, pki):
    server = start_minibroker(tls=tls_settings(pki))
    params = pika.ConnectionParameters("127.0.0.1", tls_port(server), ssl_options=pika.SSLOptions(client_ctx(pki)))
    with pika.BlockingConnection(params) as conn:
        ch = conn.channel()
        ch.queue_declare("secure")
        big = os.urandom(300_000)   # many TLS records
        for i in range(20):
            ch.basic_publish("", "secure", big if i == 7 else f"m{i}".encode())
        got = []
        for method, _, body in ch.consume("secure", auto_ack=True, inactivity_timeout=10):
            got.append(body)
            if len(got) == 20:
                break
        assert got[7] == big and got[0] == b"m0" and got[19] == b"m19"
    with pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", server.port)) as plain:
        assert plain.channel().queue_declare("secure", passive=True).method.queue == "secure"


def test_client_certificates_required_with_a_ca(start_minibroker, pki):
    server = start_minibroker(tls=tls_settings(pki, client_certs=True))
    port = tls_port(server)
    with RpcConnection("127.0.0.1", port, ssl_context=client_ctx(pki, pki.client_cert, pki.client_key)) as conn:
        assert conn.call("ping", {})["pong"] is True
    for ctx in (client_ctx(pki), client_ctx(pki, pki.stranger_cert, pki.stranger_key)):
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, ssl_options=pika.SSLOptions(ctx),
                                                              socket_timeout=5))


def test_a_plaintext_client_on_a_tls_port_fails_clearly(start_minibroker, pki):
    server = start_minibroker(tls=tls_settings(pki))
    with pytest.raises(pika.exceptions.AMQPConnectionError) as info:
        pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", tls_port(server), socket_timeout=5))
    assert "TLS" in str(info.value)
    assert server.call(lambda: len(server.server.connections)) <= 1   # nothing is left behind


def test_a_tls_client_on_a_plaintext_port_fails_clearly(start_minibroker, pki):
    server = start_minibroker(tls=tls_settings(pki))
    params = pika.ConnectionParameters("127.0.0.1", server.port, ssl_options=pika.SSLOptions(client_ctx(pki)),
                                       socket_timeout=5)
    with pytest.raises(pika.exceptions.AMQPConnectionError) as info:
        pika.BlockingConnection(params)
    assert "TLS handshake" in str(info.value) and "plaintext port" in str(info.value)


def test_a_server_certificate_the_client_does_not_trust_is_refused(start_minibroker, pki):
    server = start_minibroker(tls=tls_settings(pki))
    untrusting = ssl.create_default_context()   # the system CAs: our test CA is not among them
    with pytest.raises(pika.exceptions.AMQPConnectionError) as info:
        pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", tls_port(server),
                                                          ssl_options=pika.SSLOptions(untrusting)))
    assert "certificate" in str(info.value)


def test_pika_settings_it_cannot_honour_raise_at_construction():
    with pytest.raises(TypeError):
        pika.ConnectionParameters(ssl_options={"cafile": "x"})
    with pytest.raises(TypeError):
        pika.SSLOptions("not a context")
    url = pika.URLParameters("amqps://alice:pw@localhost/")
    assert isinstance(url.ssl_options, pika.SSLOptions) and url.port == 5674


async def test_aio_pika_style_client_over_tls(start_minibroker, pki):
    server = start_minibroker(tls=tls_settings(pki))
    conn = await aio_pika.connect(host="127.0.0.1", port=tls_port(server), ssl=True, ssl_context=client_ctx(pki))
    try:
        ch = await conn.channel()
        q = await ch.declare_queue("aio-secure")
        await ch.default_exchange.publish(aio_pika.Message(b"hello"), routing_key="aio-secure")
        msg = await q.get(timeout=5)
        assert msg.body == b"hello"
        await msg.ack()
    finally:
        await conn.close()
    with pytest.raises(ValueError):
        await aio_pika.connect(host="127.0.0.1", port=server.port, ssl_context=client_ctx(pki))   # ssl off
    with pytest.raises(ValueError):   # a CA file that is not there: refused before connecting
        await aio_pika.connect(f"amqps://127.0.0.1:{tls_port(server)}/?cafile=/nonexistent/ca.pem")
    with pytest.raises(aio_pika.exceptions.AMQPConnectionError):   # the test CA is not trusted by default
        await aio_pika.connect(f"amqps://127.0.0.1:{tls_port(server)}/", timeout=5)


# ---- minilog, confluent-style and aiokafka-style ------------------------------------------------------
@pytest.fixture
def secure_minilog(start_minilog, pki, tmp_path):
    data = tmp_path / "ml"
    with UserStore(str(data)).editing() as store:
        store.add("alice", "alice-pw", [parse_acl("topic:*:all"), parse_acl("group:*:all")])
    return start_minilog(data, auth=True, tls=tls_settings(pki))


def test_confluent_style_clients_over_sasl_ssl(secure_minilog, pki):
    base = {"bootstrap.servers": f"SASL_SSL://127.0.0.1:{tls_port(secure_minilog)}", "security.protocol": "SASL_SSL",
            "ssl.ca.location": pki.ca, "sasl.mechanism": "PLAIN", "sasl.username": "alice",
            "sasl.password": "alice-pw"}
    producer = Producer(dict(base))
    big = os.urandom(200_000)   # a fetch over 64 KiB: the server would use sendfile without TLS
    for i in range(30):
        producer.produce("secure-topic", value=big if i % 10 == 0 else f"v{i}".encode())
    assert producer.flush(15) == 0
    consumer = Consumer({**base, "group.id": "g", "auto.offset.reset": "earliest"})
    consumer.subscribe(["secure-topic"])
    values = []
    try:
        while len(values) < 30:
            msg = consumer.poll(10)
            assert msg is not None and msg.error() is None
            values.append(msg.value())
    finally:
        consumer.close()
    assert values[0] == big and values[10] == big and values[1] == b"v1"


def test_confluent_style_settings_it_cannot_honour_raise_at_construction(pki):
    good = {"bootstrap.servers": "127.0.0.1:1"}
    bad_configs = [
        {"security.protocol": "SSL", "ssl.ca.location": "/nonexistent/ca.pem"},
        {"security.protocol": "TLS"},
        {"security.protocol": "PLAINTEXT", "ssl.ca.location": pki.ca},
        {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": "a", "sasl.password": "b"},
        {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN"},
        {"security.protocol": "SASL_SSL", "ssl.ca.location": pki.ca},   # SASL without a user name
    ]
    for bad in bad_configs:
        with pytest.raises(KafkaException):
            Producer({**good, **bad})
        with pytest.raises(KafkaException):
            Consumer({**good, **bad, "group.id": "g"})


def test_confluent_style_plaintext_client_on_the_tls_port_fails_clearly(secure_minilog):
    producer = Producer({"bootstrap.servers": f"127.0.0.1:{tls_port(secure_minilog)}", "sasl.username": "alice",
                         "sasl.password": "alice-pw", "security.protocol": "SASL_PLAINTEXT",
                         "sasl.mechanism": "PLAIN", "message.timeout.ms": 3000})
    with pytest.raises(KafkaException) as info:
        producer.list_topics(timeout=5)
    assert "TLS" in str(info.value)


async def test_aiokafka_style_clients_over_sasl_ssl(secure_minilog, pki):
    port = tls_port(secure_minilog)
    ctx = create_ssl_context(cafile=pki.ca)
    common = dict(bootstrap_servers=f"127.0.0.1:{port}", security_protocol="SASL_SSL", ssl_context=ctx,
                  sasl_mechanism="PLAIN", sasl_plain_username="alice", sasl_plain_password="alice-pw")
    producer = AIOKafkaProducer(**common)
    await producer.start()
    try:
        for i in range(5):
            await producer.send_and_wait("aio-secure", f"v{i}".encode())
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer("aio-secure", group_id="aio-g", auto_offset_reset="earliest", **common)
    await consumer.start()
    try:
        got = [(await asyncio.wait_for(consumer.getone(), 10)).value for _ in range(5)]
    finally:
        await consumer.stop()
    assert got == [f"v{i}".encode() for i in range(5)]
    with pytest.raises(ValueError):
        AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{port}", security_protocol="SSL")   # no ssl_context
    with pytest.raises(ValueError):
        AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{port}", security_protocol="SASL_SSL", ssl_context=ctx,
                         sasl_mechanism="GSSAPI")


# ---- the command line ----------------------------------------------------------------------------------
def test_command_line_tls_flags(tmp_path, pki):
    tls_flags = ["--tls-cert", pki.server_cert, "--tls-key", pki.server_key, "--tls-port", "0"]
    both = ServerProcess("minibroker", tmp_path / "both", tls_flags + ["--amqps-port", "0"])
    both.start()
    try:
        with RpcConnection("127.0.0.1", both.port) as plain:
            plain.call("ping", {})
    finally:
        both.stop()
    # TLS only: the one door prints "minilog tls listening on ..." and speaks TLS alone.
    only = subprocess.Popen([sys.executable, "-m", "minilog", "--port", "0", "--kafka-port", "off", "--data-dir",
                             str(tmp_path / "only"), "--plaintext", "off", *tls_flags],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": ROOT})
    try:
        line = only.stdout.readline().decode()
        assert line.startswith("minilog tls listening on 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        with RpcConnection("127.0.0.1", port, ssl_context=client_ctx(pki)) as conn:
            assert conn.server_info["server"] == "minilog"
    finally:
        only.terminate()
        assert only.wait(15) == 0
    bad = subprocess.run([sys.executable, "-m", "minibroker", "--port", "0", "--data-dir", str(tmp_path / "bad"),
                          "--tls-cert", str(tmp_path / "missing.pem")],
                         capture_output=True, text=True, cwd=ROOT, timeout=60, env={**os.environ, "PYTHONPATH": ROOT})
    assert bad.returncode == 1 and "missing.pem" in bad.stderr and "Traceback" not in bad.stderr
