"""Both log consumers fetching in the server's fetch session (`fetch_session.CONTINUE_FETCHES`
on): a second fetch queued behind the parked one, every record once and in order, through
seeks and live appends; and against servers that do not keep fetch sessions (an older one
without the feature, one that refuses session fetches), one fetch in flight as before."""

import asyncio

import pytest
from log_client_helpers import drain

from clients.aio_log import AIOKafkaConsumer, AIOKafkaProducer
from clients.aio_log import TopicPartition as AioTopicPartition
from clients.log import Consumer, TopicPartition, fetch_session
from clients.protocol.errors import BrokerError, ErrorCode
from minilog.server import MinilogServer
from serverbase.server import op

N = 3000


@pytest.fixture(autouse=True)
def continue_fetches(monkeypatch):
    monkeypatch.setattr(fetch_session, "CONTINUE_FETCHES", True)
    monkeypatch.setattr(fetch_session, "STREAM_FETCHES", False)   # streamed: test_log_clients_fetch_stream.py


class ServerWithoutSessions(MinilogServer):
    """A minilog from before fetch sessions: no feature in its hello."""
    features = tuple(f for f in MinilogServer.features if f != "fetch-session")


class ServerRefusingSessions(MinilogServer):
    """A server that names the feature but refuses session fetches as bad requests."""

    @op("fetch")
    def op_fetch(self, conn, args):
        if "session" in args:
            raise BrokerError(ErrorCode.BAD_REQUEST, "bad fetch partition: want [str, int, int, int >= 1]")
        return super().op_fetch(conn, args)


def fill(producer, topic, start, count):
    p = producer(**{"linger.ms": 0})
    for i in range(start, start + count):
        p.produce(topic, b"%d" % i, partition=0)
        if i % 50 == 0:
            p.poll(0)   # many small batches: many fetches
    assert p.flush(30) == 0


def check_run(messages, first):
    assert [m.offset() for m in messages] == list(range(first, first + len(messages)))
    assert all(m.value() == b"%d" % m.offset() for m in messages)


def test_the_consumer_continues_its_fetches_and_gets_every_record_once(producer, consumer, make_topic):
    topic = make_topic(1)
    fill(producer, topic, 0, N)
    c = consumer(**{"fetch.wait.max.ms": 20_000})
    session = c._session
    sent = []
    build = session.fetch_request

    def fetch_request():
        request = build()
        if request is not None:
            sent.append((request[0].get("session"), [p[2] for p in request[0]["partitions"]], session.in_flight))
        return request
    session.fetch_request = fetch_request
    c.assign([TopicPartition(topic, 0, 0)])
    check_run(drain(c, 1000), 0)
    assert session.continued
    assert sent[0] == (1, [0], 1)
    assert (1, [None], 2) in sent   # a continued fetch, the second in flight
    c.seek(TopicPartition(topic, 0, 2500))
    check_run(drain(c, 500), 2500)
    # At the end of the log, with both fetches parked on the server: live appends come in order.
    c.seek(TopicPartition(topic, 0, 200))
    check_run(drain(c, N - 200), 200)
    fill(producer, topic, N, 700)
    check_run(drain(c, 700), N)


@pytest.mark.parametrize("server_class", [ServerWithoutSessions, ServerRefusingSessions])
def test_a_server_without_fetch_sessions_is_read_with_one_fetch_in_flight(start_server_thread, server_class,
                                                                          tmp_path):
    server = start_server_thread(server_class, tmp_path / "old")
    bootstrap = f"{server.host}:{server.port}"
    from clients.log import AdminClient, NewTopic, Producer
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic("t", 1)])["t"].result(10)
    admin.close()
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    for i in range(N):
        p.produce("t", b"%d" % i, partition=0)
        if i % 50 == 0:
            p.poll(0)
    assert p.flush(30) == 0
    p.close()
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "g", "auto.offset.reset": "earliest"})
    try:
        c.assign([TopicPartition("t", 0, 0)])
        check_run(drain(c, N), 0)   # no error message: a refusal is not the application's error
        assert not c._session.continued and c._session.in_flight <= 1
    finally:
        c.close()


async def test_the_asyncio_consumer_continues_its_fetches(bootstrap, make_topic):
    topic = make_topic(1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=20_000)
    await consumer.start()
    tp = AioTopicPartition(topic, 0)

    async def produce(start, count):
        for i in range(start, start + count):
            await producer.send(topic, b"%d" % i, partition=0)
            if i % 50 == 0:
                await asyncio.sleep(0)
        await producer.flush()

    async def take(count):
        got = []
        deadline = asyncio.get_running_loop().time() + 20
        while len(got) < count:
            assert asyncio.get_running_loop().time() < deadline, f"got {len(got)} of {count}"
            batch = await consumer.getmany(tp, timeout_ms=500, max_records=count - len(got))
            got += [(r.offset, r.value) for r in batch.get(tp, [])]
        return got

    try:
        await produce(0, N)
        consumer.assign([tp])
        assert await take(1000) == [(i, b"%d" % i) for i in range(1000)]
        assert consumer._session.continued
        consumer.seek(tp, 2500)
        assert await take(500) == [(i, b"%d" % i) for i in range(2500, N)]
        await produce(N, 300)
        assert await take(300) == [(i, b"%d" % i) for i in range(N, N + 300)]
    finally:
        await consumer.stop()
        await producer.stop()
