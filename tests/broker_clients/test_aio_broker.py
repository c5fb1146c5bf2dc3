"""The aio-pika-style client end to end, written as an aio-pika user writes it:
`from clients import aio_broker as aio_pika`."""

import asyncio

import pytest

from clients import aio_broker as aio_pika
from clients.aio_broker import DeliveryMode, ExchangeType, IncomingMessage, Message
from harness import async_wait_until

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def connection(minibroker_server):
    conn = await aio_pika.connect(host=minibroker_server.host, port=minibroker_server.port)
    yield conn
    await conn.close()


async def test_publish_consume_with_confirms_and_properties(connection):
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=10)
        exchange = await channel.declare_exchange("events", type=ExchangeType.FANOUT, durable=True)
        queue = await channel.declare_queue("audit", durable=True)
        await queue.bind(exchange, routing_key="")
        confirm = await exchange.publish(
            Message(b"created", headers={"user": "ann"}, delivery_mode=DeliveryMode.PERSISTENT,
                    content_type="text/plain", correlation_id="c1", priority=3, message_id="m1"),
            routing_key="user.created")
        assert confirm  # the broker's confirm
        received = asyncio.get_running_loop().create_future()

        async def on_message(message: IncomingMessage):
            async with message.process():
                received.set_result(message)

        tag = await queue.consume(on_message)
        message = await asyncio.wait_for(received, 5)
        assert message.body == b"created" and message.headers == {"user": "ann"}
        assert message.delivery_mode == DeliveryMode.PERSISTENT and message.content_type == "text/plain"
        assert (message.correlation_id, message.priority, message.message_id) == ("c1", 3, "m1")
        assert message.routing_key == "user.created" and message.exchange == "events"
        assert message.delivery_tag == 1 and message.redelivered is False
        assert message.consumer_tag == tag and message.processed
        await queue.cancel(tag)
        assert (await queue.declare()).message_count == 0  # acked by process()
    assert connection.is_closed


async def test_many_concurrent_confirmed_publishes_pipeline(connection):
    channel = await connection.channel()
    queue = await channel.declare_queue("bulk")
    confirms = await asyncio.gather(*[channel.default_exchange.publish(Message(f"{i}".encode()), routing_key="bulk")
                                      for i in range(2000)])
    assert len(confirms) == 2000 and all(confirms)
    assert (await queue.declare()).message_count == 2000


async def test_publish_without_confirms_does_not_wait(connection):
    channel = await connection.channel(publisher_confirms=False)
    queue = await channel.declare_queue("fast")
    for i in range(500):
        assert await channel.default_exchange.publish(Message(b"x"), routing_key="fast") is None
    assert (await queue.declare()).message_count == 500  # the declare follows the publishes in order


async def test_large_messages_are_split_into_batches_under_the_frame_limit(connection):
    # 400 x 64 KiB published in one loop turn is 26 MB: more than one 16 MiB frame can carry.
    channel = await connection.channel()
    queue = await channel.declare_queue("large")
    body = b"x" * 65536
    confirms = await asyncio.gather(*[channel.default_exchange.publish(Message(body), routing_key="large")
                                      for _ in range(400)])
    assert len(confirms) == 400 and all(confirms)
    assert (await queue.declare()).message_count == 400


async def test_queue_iterator_and_settling(connection):
    channel = await connection.channel()
    queue = await channel.declare_queue("it")
    for i in range(6):
        await channel.default_exchange.publish(Message(f"m{i}".encode()), routing_key="it")
    seen = []
    async with queue.iterator() as it:
        async for message in it:
            seen.append(message.body)
            if message.redelivered:
                assert message.body == b"m0"
                await message.ack()
                break
            if message.body == b"m0":
                await message.nack(requeue=True)  # comes back with redelivered set
            elif message.body == b"m1":
                await message.reject(requeue=False)  # dropped
            else:
                await message.ack()
    assert seen[:6] == [b"m0", b"m1", b"m2", b"m3", b"m4", b"m5"] and seen[-1] == b"m0"
    assert (await queue.declare()).message_count == 0


async def test_iterator_exit_requeues_what_it_held(connection):
    channel = await connection.channel()
    queue = await channel.declare_queue("held")
    for i in range(20):
        await channel.default_exchange.publish(Message(f"m{i}".encode()), routing_key="held")
    async with queue.iterator() as it:
        async for message in it:
            await message.ack()
            break
    other = await connection.channel()
    assert (await other.declare_queue("held", passive=True)).declaration_result.message_count == 19


async def test_get_purge_delete(connection):
    channel = await connection.channel()
    queue = await channel.declare_queue("g", auto_delete=False)
    with pytest.raises(aio_pika.exceptions.QueueEmpty):
        await queue.get(no_ack=True)
    assert await queue.get(fail=False) is None
    for i in range(3):
        await channel.default_exchange.publish(Message(f"{i}".encode()), routing_key="g")
    message = await queue.get(no_ack=False)
    assert message.body == b"0" and message.message_count == 2
    await message.ack()
    message = await queue.get(no_ack=True)
    assert message.body == b"1"
    with pytest.raises(TypeError):
        await message.ack()  # no_ack messages cannot be settled
    assert (await queue.purge()).message_count == 1
    await channel.default_exchange.publish(Message(b"last"), routing_key="g")
    assert (await queue.delete(if_unused=False, if_empty=False)).message_count == 1


async def test_unroutable_mandatory_raises_delivery_error_with_on_return_raises(connection):
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    with pytest.raises(aio_pika.exceptions.DeliveryError):
        await channel.default_exchange.publish(Message(b"x"), routing_key="nobody", mandatory=True)
    # not mandatory: confirmed and dropped
    assert await channel.default_exchange.publish(Message(b"x"), routing_key="nobody", mandatory=False)


async def test_reject_publish_overflow_nacks(connection):
    channel = await connection.channel()
    queue = await channel.declare_queue("tiny", arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    await channel.default_exchange.publish(Message(b"1"), routing_key="tiny")
    with pytest.raises(aio_pika.exceptions.DeliveryError):
        await channel.default_exchange.publish(Message(b"2"), routing_key="tiny")
    assert (await queue.declare()).message_count == 1


async def test_errors_map_to_reply_codes(connection, minibroker_server):
    channel = await connection.channel()
    with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity) as err:
        await channel.declare_queue("ghost", passive=True)
    assert err.value.reply_code == 404
    assert channel.is_closed
    await channel.reopen()
    await channel.declare_queue("settled", durable=True)
    with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
        await channel.declare_queue("settled", durable=False)
    channel = await connection.channel()
    missing = aio_pika.Exchange(channel, "no-such-exchange")
    with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
        await missing.publish(Message(b"x"), routing_key="k")
    owner = await connection.channel()
    await owner.declare_queue("private", exclusive=True)
    other_conn = await aio_pika.connect(host=minibroker_server.host, port=minibroker_server.port)
    async with other_conn:
        other = await other_conn.channel()
        queue = aio_pika.Queue(other, "private")
        with pytest.raises(aio_pika.exceptions.ChannelLockedResource) as err:
            await queue.consume(lambda m: None)
        assert err.value.reply_code == 405


async def test_topic_routing_and_sync_callback(connection):
    channel = await connection.channel()
    exchange = await channel.declare_exchange("logs", ExchangeType.TOPIC)
    queue = await channel.declare_queue("", exclusive=True)
    await queue.bind(exchange, routing_key="kern.*")
    got = []
    await queue.consume(lambda m: got.append(m.body), no_ack=True)  # plain functions work as callbacks
    await exchange.publish(Message(b"k"), routing_key="kern.crit")
    await exchange.publish(Message(b"a"), routing_key="app.crit")
    await exchange.publish(Message(b"k2"), routing_key="kern.info")
    await async_wait_until(lambda: len(got) == 2, 5)
    assert got == [b"k", b"k2"]


async def test_competing_consumers_no_loss_no_duplicates(minibroker_server):
    conns = [await aio_pika.connect(host=minibroker_server.host, port=minibroker_server.port) for _ in range(3)]
    try:
        producer = await conns[0].channel()
        await producer.declare_queue("work")
        n = 1500
        await asyncio.gather(*[producer.default_exchange.publish(Message(f"{i}".encode()), routing_key="work")
                               for i in range(n)])
        results = {}
        for index, conn in enumerate(conns):
            channel = await conn.channel()
            await channel.set_qos(prefetch_count=50)
            queue = await channel.get_queue("work")
            mine = results[index] = []

            async def on_message(message, mine=mine):
                assert not message.redelivered
                mine.append(message.body)
                await message.ack()

            await queue.consume(on_message)
        await async_wait_until(lambda: sum(map(len, results.values())) >= n, 15)
        everything = [b for v in results.values() for b in v]
        assert sorted(everything) == sorted(f"{i}".encode() for i in range(n))
        assert all(results.values())
    finally:
        for conn in conns:
            await conn.close()


async def test_consumer_connection_dies_messages_redelivered(minibroker_server):
    host, port = minibroker_server.host, minibroker_server.port
    doomed = await aio_pika.connect(host=host, port=port)
    channel = await doomed.channel()
    await channel.set_qos(prefetch_count=3)
    queue = await channel.declare_queue("fragile")
    for i in range(5):
        await channel.default_exchange.publish(Message(f"m{i}".encode()), routing_key="fragile")
    held = []
    await queue.consume(held.append)  # never acks
    await async_wait_until(lambda: len(held) == 3, 5)
    doomed._rpc._transport.abort()  # the process dies: no goodbye
    survivor = await aio_pika.connect_robust(host=host, port=port)
    async with survivor:
        channel = await survivor.channel()
        queue = await channel.get_queue("fragile")
        got = []
        async with queue.iterator() as it:
            async for message in it:
                got.append((message.body, message.redelivered))
                await message.ack()
                if len(got) == 5:
                    break
    assert sorted(b for b, _ in got) == [f"m{i}".encode() for i in range(5)]
    assert {b for b, r in got if r} == {b"m0", b"m1", b"m2"}


async def test_dead_letter_with_x_death(connection):
    channel = await connection.channel()
    dlx = await channel.declare_exchange("dlx", ExchangeType.FANOUT)
    dead = await channel.declare_queue("dead")
    await dead.bind(dlx)
    queue = await channel.declare_queue("ttl", arguments={"x-message-ttl": 30, "x-dead-letter-exchange": "dlx"})
    await channel.default_exchange.publish(Message(b"late"), routing_key="ttl")
    async with dead.iterator() as it:
        async for message in it:
            async with message.process():
                assert message.body == b"late"
                death = message.headers["x-death"][0]
                assert death["reason"] == "expired" and death["queue"] == "ttl"
            break
    assert (await queue.declare()).message_count == 0


async def test_url_connect_channel_context_and_process_requeue(minibroker_server):
    url = f"amqp://{minibroker_server.host}:{minibroker_server.port}/"
    async with await aio_pika.connect(url) as connection:
        async with connection.channel() as channel:
            queue = await channel.declare_queue("retry")
            await channel.default_exchange.publish(Message(b"job"), routing_key="retry")
            message = await queue.get()
            with pytest.raises(RuntimeError):
                async with message.process(requeue=True):
                    raise RuntimeError("handler failed")  # rejected with requeue
            again = await queue.get()
            assert again.body == b"job" and again.redelivered
            with pytest.raises(RuntimeError):
                async with again.process(requeue=True, reject_on_redelivered=True):
                    raise RuntimeError("failed twice")  # redelivered: rejected for good
            assert await queue.get(fail=False) is None
        assert channel.is_closed
    assert connection.is_closed


async def test_iterator_timeout(connection):
    channel = await connection.channel()
    queue = await channel.declare_queue("quiet")
    async with queue.iterator(timeout=0.1) as it:
        with pytest.raises(asyncio.TimeoutError):
            async for _ in it:
                pass


async def test_connection_lost_fails_pending_calls(start_minibroker):
    server = start_minibroker()
    connection = await aio_pika.connect(host=server.host, port=server.port)
    channel = await connection.channel()
    await channel.declare_queue("q")
    await asyncio.get_running_loop().run_in_executor(None, server.stop)
    await async_wait_until(lambda: connection.is_closed, 5)
    with pytest.raises(aio_pika.exceptions.AMQPError):
        await channel.declare_queue("q2")
    with pytest.raises(aio_pika.exceptions.AMQPError):
        await channel.default_exchange.publish(Message(b"x"), routing_key="q")


async def test_consumer_callback_errors_do_not_break_the_connection(connection):
    channel = await connection.channel()
    queue = await channel.declare_queue("faulty")
    got = []

    def sync_callback(message):
        got.append(message.body)
        raise RuntimeError("sync consumer bug")

    async def async_callback(message):
        got.append(message.body)
        raise RuntimeError("async consumer bug")

    await queue.consume(sync_callback, no_ack=True)
    await queue.consume(async_callback, no_ack=True)
    for i in range(4):
        await channel.default_exchange.publish(Message(f"{i}".encode()), routing_key="faulty")
    await async_wait_until(lambda: len(got) == 4, 5)
    assert not connection.is_closed
    assert (await queue.declare()).message_count == 0


async def test_connect_robust_reconnects_and_restores_topology(minibroker_server):
    connection = await aio_pika.connect_robust(host=minibroker_server.host, port=minibroker_server.port,
                                               reconnect_interval=0.05)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=10)
        exchange = await channel.declare_exchange("news", ExchangeType.FANOUT)
        queue = await channel.declare_queue("", exclusive=True)  # gone with the old connection
        await queue.bind(exchange)
        got = []
        await queue.consume(lambda m: got.append(m.body), no_ack=True)
        await exchange.publish(Message(b"before"), routing_key="")
        await async_wait_until(lambda: got == [b"before"], 5)
        old_name = queue.name

        connection._rpc._transport.abort()  # the network drops
        await async_wait_until(lambda: not connection.connected.is_set(), 5)
        assert not connection.is_closed  # a robust connection is down, not closed
        with pytest.raises(aio_pika.exceptions.ChannelInvalidStateError):
            await exchange.publish(Message(b"lost"), routing_key="")
        await asyncio.wait_for(connection.connected.wait(), 5)

        assert queue.name != old_name  # re-declared, server-named again
        await exchange.publish(Message(b"after"), routing_key="")  # same objects keep working
        await async_wait_until(lambda: got == [b"before", b"after"], 5)
    assert connection.is_closed


async def test_connect_robust_survives_a_server_restart(spawn_server):
    server = spawn_server("minibroker")
    connection = await aio_pika.connect_robust(host=server.host, port=server.port, reconnect_interval=0.05)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue("jobs")
        received = []
        await queue.consume(lambda m: received.append(m.body), no_ack=True)
        loop = asyncio.get_running_loop()
        port = server.port
        await loop.run_in_executor(None, server.stop)
        await async_wait_until(lambda: not connection.connected.is_set(), 5)
        await loop.run_in_executor(None, lambda: server.start(port=port))
        await asyncio.wait_for(connection.connected.wait(), 10)
        await channel.default_exchange.publish(Message(b"after restart"), routing_key="jobs")
        await async_wait_until(lambda: received == [b"after restart"], 5)
    finally:
        await connection.close()


async def test_per_message_acks_merge_and_stay_exact(connection):
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=100)
    queue = await channel.declare_queue("acked")
    await asyncio.gather(*[channel.default_exchange.publish(Message(f"{i}".encode()), routing_key="acked")
                           for i in range(600)])
    rpc = connection._rpc
    sent = {"ack": 0}
    send = rpc.send

    def counting(op, args=None, want_reply=True):
        if op in sent:
            sent[op] += 1
        return send(op, args, want_reply)

    rpc.send = counting
    kept = []
    async with queue.iterator() as it:
        count = 0
        async for message in it:
            count += 1
            if count > 300 and count % 50 == 7:
                kept.append(message)  # held unacked: no merged ack may cover it
            else:
                await message.ack()
            if count == 300:
                acks_for_first_300 = sent["ack"]
            if count == 600:
                break
    rpc.send = send
    assert acks_for_first_300 < 60  # merged, not one per message
    other = await connection.channel()
    assert (await other.declare_queue("acked", passive=True)).declaration_result.message_count == 0
    await channel.close()  # the kept ones come back now
    assert (await other.declare_queue("acked", passive=True)).declaration_result.message_count == len(kept)
