"""AdminClient create/delete/list and describe, and a server restart seen from the clients."""

import asyncio
import concurrent.futures

import pytest
from log_client_helpers import drain
from harness import wait_until

from clients.log import (AdminClient, Consumer, ConsumerGroupState, KafkaError, KafkaException, NewTopic,
                         Producer, TopicPartition)


def test_create_list_delete_topics(admin):
    fs = admin.create_topics([NewTopic("orders", num_partitions=3, replication_factor=1,
                                       config={"retention.ms": "3600000"}),
                              NewTopic("audit", 1)])
    assert set(fs) == {"orders", "audit"}
    assert all(isinstance(f, concurrent.futures.Future) for f in fs.values())
    assert [f.result(5) for f in fs.values()] == [None, None]
    md = admin.list_topics(timeout=5)
    assert {"orders", "audit"} <= set(md.topics)
    assert sorted(md.topics["orders"].partitions) == [0, 1, 2]
    assert md.topics["orders"].partitions[1].id == 1 and md.topics["orders"].partitions[1].leader == 0
    assert md.brokers[0].port > 0
    # Creating it again fails for that topic only.
    again = admin.create_topics([NewTopic("orders", 3), NewTopic("fresh", 2)])
    with pytest.raises(KafkaException) as exc:
        again["orders"].result()
    assert exc.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS
    assert again["fresh"].result() is None
    assert admin.list_topics("fresh").topics["fresh"].error is None
    gone = admin.delete_topics(["audit", "never-was"])
    assert gone["audit"].result() is None
    with pytest.raises(KafkaException) as exc:
        gone["never-was"].result()
    assert exc.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    assert "audit" not in admin.list_topics().topics
    assert admin.list_topics("audit").topics["audit"].error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_bad_topic_spec_is_a_clear_error(admin):
    fs = admin.create_topics([NewTopic("bad/name", 1)])
    with pytest.raises(KafkaException):
        fs["bad/name"].result()


def test_list_and_describe_consumer_groups(bootstrap, admin, make_topic, producer, consumer):
    topic = make_topic(2)
    c = consumer(**{"group.id": "described", "heartbeat.interval.ms": 100})
    c.subscribe([topic])
    wait_until(lambda: c.poll(0.05) is None and len(c.assignment()) == 2, 10, message="assignment")
    groups = admin.list_consumer_groups().result(5)
    assert "described" in [g.group_id for g in groups.valid]
    desc = admin.describe_consumer_groups(["described"])["described"].result(5)
    assert desc.state == ConsumerGroupState.STABLE
    assert desc.partition_assignor == "range"
    assert len(desc.members) == 1
    assert sorted(tp.partition for tp in desc.members[0].assignment.topic_partitions) == [0, 1]


def test_restart_keeps_topics_data_and_committed_offsets(start_minilog):
    server = start_minilog()
    bs = f"{server.host}:{server.port}"
    admin = AdminClient({"bootstrap.servers": bs})
    admin.create_topics([NewTopic("durable", 2)])["durable"].result(5)
    p = Producer({"bootstrap.servers": bs, "acks": "all"})
    for i in range(40):
        p.produce("durable", b"%d" % i, partition=i % 2)
    assert p.flush(10) == 0
    c = Consumer({"bootstrap.servers": bs, "group.id": "keeper", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "heartbeat.interval.ms": 100})
    c.subscribe(["durable"])
    got = drain(c, 25)
    for m in got:
        c.commit(message=m, asynchronous=False)
    committed = {tp.partition: tp.offset for tp in c.committed([TopicPartition("durable", 0),
                                                                 TopicPartition("durable", 1)])}
    c.close()
    p.close()
    admin.close()
    server.restart()
    bs = f"{server.host}:{server.port}"
    admin = AdminClient({"bootstrap.servers": bs})
    try:
        md = admin.list_topics("durable")
        assert sorted(md.topics["durable"].partitions) == [0, 1]
        c = Consumer({"bootstrap.servers": bs, "group.id": "keeper", "auto.offset.reset": "earliest",
                      "enable.auto.commit": False, "heartbeat.interval.ms": 100})
        after = {tp.partition: tp.offset for tp in c.committed([TopicPartition("durable", 0),
                                                                 TopicPartition("durable", 1)])}
        assert after == committed and sum(after.values()) == 25
        c.subscribe(["durable"])
        rest = drain(c, 15)
        assert sorted(int(m.value()) for m in got + rest) == list(range(40))
        assert c.get_watermark_offsets(TopicPartition("durable", 0)) == (0, 20)
        c.close()
    finally:
        admin.close()


def test_producer_reconnects_after_server_restart(spawn_server, tmp_path):
    server = spawn_server("minilog", data_dir=tmp_path / "restart-data")
    bs = f"127.0.0.1:{server.port}"
    AdminClient({"bootstrap.servers": bs}).create_topics([NewTopic("again", 1)])["again"].result(5)
    p = Producer({"bootstrap.servers": bs})
    p.produce("again", b"before")
    assert p.flush(10) == 0
    server.stop()
    server.start(port=server.port)  # same port, same data
    errors = []
    deadline_ok = False
    for _ in range(50):
        p.produce("again", b"after", on_delivery=lambda err, msg: errors.append(err))
        p.flush(10)
        if errors and errors[-1] is None:
            deadline_ok = True
            break
    assert deadline_ok, errors
    c = Consumer({"bootstrap.servers": bs, "auto.offset.reset": "earliest"})
    c.assign([TopicPartition("again", 0, 0)])
    values = [m.value() for m in drain(c, 2)]
    assert values[0] == b"before" and values[-1] == b"after"
    c.close()
    p.close()


def test_group_consumer_survives_a_server_restart(spawn_server, tmp_path):
    server = spawn_server("minilog", data_dir=tmp_path / "consumer-restart")
    bs = f"127.0.0.1:{server.port}"
    AdminClient({"bootstrap.servers": bs}).create_topics([NewTopic("steady", 2)])["steady"].result(5)
    p = Producer({"bootstrap.servers": bs, "acks": "all"})
    for i in range(20):
        p.produce("steady", b"%d" % i, partition=i % 2)
    assert p.flush(10) == 0
    c = Consumer({"bootstrap.servers": bs, "group.id": "steady", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "heartbeat.interval.ms": 100, "fetch.wait.max.ms": 100})
    c.subscribe(["steady"])
    first = drain(c, 20)
    c.commit(asynchronous=False)
    server.stop()
    server.start(port=server.port)
    for i in range(20, 30):
        p.produce("steady", b"%d" % i, partition=i % 2)
    assert p.flush(20) == 0  # the producer reconnects and resends what was in flight
    rest = []
    wait_until(lambda: rest.extend(m for m in c.consume(10, 0.2) if m.error() is None) or len(rest) >= 10,
               20, message="records produced after the restart")
    assert sorted(int(m.value()) for m in first + rest) == list(range(30))
    c.close()
    p.close()


def test_aiokafka_style_producer_reconnects_after_server_restart(spawn_server, tmp_path):
    """As aiokafka's sender: the producer outlives its connection. A send made while the
    server is down waits and is delivered once it is back; later sends go on the new
    connection, and nothing reports an error."""
    from clients.aio_log import AIOKafkaProducer

    server = spawn_server("minilog", data_dir=tmp_path / "aio-restart-data")
    bs = f"127.0.0.1:{server.port}"
    AdminClient({"bootstrap.servers": bs}).create_topics([NewTopic("aio-again", 1)])["aio-again"].result(5)

    async def run():
        p = AIOKafkaProducer(bootstrap_servers=bs, request_timeout_ms=15000)
        await p.start()
        try:
            assert (await p.send_and_wait("aio-again", b"before")).offset == 0
            server.stop()
            during = await p.send("aio-again", b"during")  # no server: it waits for one
            await asyncio.to_thread(server.start, port=server.port)  # same port, same data
            assert (await during).offset == 1
            assert (await p.send_and_wait("aio-again", b"after")).offset == 2
        finally:
            await p.stop()

    asyncio.run(run())
    c = Consumer({"bootstrap.servers": bs, "group.id": "aio-again-check", "auto.offset.reset": "earliest"})
    try:
        c.subscribe(["aio-again"])
        assert [m.value() for m in drain(c, 3)] == [b"before", b"during", b"after"]
    finally:
        c.close()
