"""What every client does at the handshake: refuse the other broker, send the credentials its
library's settings name, refuse settings it cannot honour; and the id-0 error frame's channel.

Each test talks to real servers on 127.0.0.1 through the clients under test.
"""

import pytest

from clients import aio_broker as aio_pika
from clients import broker as pika
from clients.aio_log import AIOKafkaConsumer, AIOKafkaProducer
from clients.aio_log.errors import KafkaConnectionError
from clients.log import AdminClient, Consumer, KafkaException, Producer
from clients.protocol.errors import ErrorCode
from clients.rpc import RpcConnection

USERS = {"app": "s3cret"}


# ---- the wrong server ------------------------------------------------------------------------
def test_pika_to_a_minilog_port_is_refused_at_the_handshake(minilog_server):
    params = pika.ConnectionParameters("127.0.0.1", minilog_server.port, connection_attempts=3, retry_delay=5)
    with pytest.raises(pika.exceptions.IncompatibleProtocolError) as info:
        pika.BlockingConnection(params)  # refused at once: no retries against the wrong server
    assert "minilog" in str(info.value)
    assert isinstance(info.value, pika.exceptions.AMQPConnectionError)


async def test_aio_pika_to_a_minilog_port_is_refused(minilog_server):
    with pytest.raises(aio_pika.exceptions.IncompatibleProtocolError, match="minilog"):
        await aio_pika.connect(host="127.0.0.1", port=minilog_server.port)


def test_confluent_clients_to_a_minibroker_port_are_refused(minibroker_server):
    bootstrap = f"127.0.0.1:{minibroker_server.port}"
    with pytest.raises(KafkaException, match="minibroker"):
        Consumer({"bootstrap.servers": bootstrap, "group.id": "g"})
    with pytest.raises(KafkaException, match="minibroker"):
        AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=5)
    producer = Producer({"bootstrap.servers": bootstrap})
    with pytest.raises(KafkaException, match="minibroker"):
        producer.produce("t", b"x")


async def test_aiokafka_clients_to_a_minibroker_port_are_refused(minibroker_server):
    bootstrap = f"127.0.0.1:{minibroker_server.port}"
    for client in (AIOKafkaProducer(bootstrap_servers=bootstrap), AIOKafkaConsumer(bootstrap_servers=bootstrap)):
        with pytest.raises(KafkaConnectionError, match="minibroker"):
            await client.start()


# ---- credentials -----------------------------------------------------------------------------
def test_confluent_sasl_settings_are_the_handshake_credentials(start_minilog):
    server = start_minilog(credentials=USERS)
    bootstrap = f"127.0.0.1:{server.port}"
    good = {"bootstrap.servers": bootstrap, "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
            "sasl.username": "app", "sasl.password": "s3cret"}
    producer = Producer(good)
    producer.produce("auth-topic", b"v")
    assert producer.flush(10) == 0
    consumer = Consumer({**good, "group.id": "g", "auto.offset.reset": "earliest"})
    try:
        consumer.subscribe(["auth-topic"])
        msg = None
        for _ in range(100):
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                break
        assert msg is not None and msg.value() == b"v"
    finally:
        consumer.close()
        producer.close(5) if hasattr(producer, "close") else None
    with pytest.raises(KafkaException, match="NOT_AUTHORIZED|authoriz|credential"):
        Consumer({**good, "sasl.password": "wrong", "group.id": "g"})


def test_confluent_settings_it_cannot_honour_raise_at_construction():
    base = {"bootstrap.servers": "127.0.0.1:1"}
    for bad in ({"sasl.mechanism": "SCRAM-SHA-256", "sasl.username": "u", "sasl.password": "p"},
                {"security.protocol": "SASL_PLAINTEXT"},
                {"sasl.password": "p"},
                {"security.protocol": "kerberos"}):
        for cls in (Producer, Consumer):
            with pytest.raises(KafkaException) as info:
                cls({**base, "group.id": "g", **bad} if cls is Consumer else {**base, **bad})
            assert isinstance(info.value, ValueError)


async def test_aiokafka_sasl_plain_settings_are_the_handshake_credentials(start_minilog):
    server = start_minilog(credentials=USERS)
    bootstrap = f"127.0.0.1:{server.port}"
    sasl = dict(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                sasl_plain_username="app", sasl_plain_password="s3cret")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **sasl)
    await producer.start()
    try:
        md = await producer.send_and_wait("aio-auth", b"v")
        assert md.offset == 0
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, **{**sasl, "sasl_plain_password": "nope"})
    with pytest.raises(KafkaConnectionError, match="NOT_AUTHORIZED"):
        await consumer.start()
    with pytest.raises(ValueError):
        AIOKafkaProducer(bootstrap_servers=bootstrap, security_protocol="SASL_PLAINTEXT",
                         sasl_mechanism="GSSAPI", sasl_plain_username="app")


# ---- id-0 errors name their channel ------------------------------------------------------------
def test_an_id0_error_frame_names_its_channel(minibroker_server):
    rpc = RpcConnection("127.0.0.1", minibroker_server.port)
    try:
        rpc.call("channel_open", {"ch": 7})
        rpc.send("publish", {"ch": 7, "exchange": "no-such-exchange", "routing_key": "k", "body": b"x"},
                 want_reply=False)
        rpc.call("ping", {})  # replies come in order: the error for the publish is in by now
        assert len(rpc.async_errors) == 1
        error = rpc.async_errors.popleft()
        assert error.code == ErrorCode.NOT_FOUND and error.channel == 7
        assert error.exception().channel == 7
    finally:
        rpc.close()


def test_pika_routes_an_id0_error_by_the_frame_not_the_text(minibroker_server):
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", minibroker_server.port))
    try:
        first, second = conn.channel(), conn.channel()
        second.basic_publish("no-such-exchange", "k", b"x")  # the last id-0 sender is `second`...
        first.basic_ack(delivery_tag=99)                      # ...then `first` sends a bad ack
        conn.sleep(0.2)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            first.basic_qos(prefetch_count=1)
        assert info.value.reply_code == 406
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            second.basic_qos(prefetch_count=1)
        assert info.value.reply_code == 404
    finally:
        conn.close()
