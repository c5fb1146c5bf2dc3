"""The real aio-pika (on aiormq) against minibroker's AMQP listener (and RabbitMQ with
AMQP_TEST_URL): robust connection, confirms, consume with an async iterator, exchanges,
float headers, and its exception classes for broker errors."""

import asyncio

import aio_pika
import aiormq.exceptions
import pytest

pytestmark = pytest.mark.timeout(60)


async def test_publish_with_confirms_and_consume_with_an_iterator(amqp_broker, unique):
    conn = await aio_pika.connect_robust(amqp_broker.url)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        await ch.set_qos(prefetch_count=10)
        q = await ch.declare_queue(unique(), auto_delete=True)
        for i in range(50):
            await ch.default_exchange.publish(
                aio_pika.Message(f"m{i}".encode(), headers={"i": i, "f": 0.5}, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=q.name)
        got = []
        async with q.iterator() as it:
            async for message in it:
                async with message.process():
                    got.append((message.body, message.headers["i"], message.headers["f"]))
                if len(got) == 50:
                    break
        assert got == [(f"m{i}".encode(), i, 0.5) for i in range(50)]


async def test_topic_exchange_and_get(amqp_broker, unique):
    conn = await aio_pika.connect(amqp_broker.url)
    async with conn:
        ch = await conn.channel()
        ex = await ch.declare_exchange(unique("logs"), aio_pika.ExchangeType.TOPIC, auto_delete=True)
        q = await ch.declare_queue(exclusive=True)
        await q.bind(ex, "kern.*")
        await ex.publish(aio_pika.Message(b"panic"), routing_key="kern.critical")
        await ex.publish(aio_pika.Message(b"ignored"), routing_key="app.critical")
        message = await q.get(timeout=5)
        await message.ack()
        assert message.body == b"panic" and message.routing_key == "kern.critical"
        assert await q.get(fail=False) is None


async def test_broker_errors_raise_aiormqs_classes(amqp_broker, unique):
    conn = await aio_pika.connect(amqp_broker.url)
    async with conn:
        ch = await conn.channel()
        with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
            await ch.declare_queue(unique("missing"), passive=True)
        ch = await conn.channel()
        name = unique()
        await ch.declare_queue(name, auto_delete=True)
        with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed):
            await ch.declare_queue(name, durable=True, auto_delete=True)
        ch = await conn.channel()
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await ch.declare_queue("amq.mine")


async def test_unroutable_mandatory_publish_is_returned(amqp_broker, unique):
    conn = await aio_pika.connect(amqp_broker.url)
    async with conn:
        ch = await conn.channel(publisher_confirms=True, on_return_raises=True)
        with pytest.raises(aio_pika.exceptions.DeliveryError):
            await ch.default_exchange.publish(aio_pika.Message(b"x"), routing_key=unique("nowhere"), mandatory=True)


async def test_many_channels_at_once(amqp_broker, unique):
    conn = await aio_pika.connect(amqp_broker.url)
    async with conn:
        channels = await asyncio.gather(*(conn.channel() for _ in range(20)))
        queues = await asyncio.gather(*(c.declare_queue(exclusive=True) for c in channels))
        assert len({q.name for q in queues}) == 20
