"""Retriable produce errors, over the wire: a batch the server could not store (STORAGE_ERROR,
Kafka's retriable KAFKA_STORAGE_ERROR) goes again after its backoff, as librdkafka and
aiokafka retry it, until it is stored, its retries run out or its delivery timeout passes;
a partition's later records wait for it. The disk is made to fail inside the real server
(a thread of this process) by failing its segment writes, as a full disk does."""

import errno
import os

from clients.aio_log import AIOKafkaProducer
from clients.log import KafkaError
from harness import wait_until
from log_client_helpers import drain
from minilog.storage import segment as segment_module


class FullDisk:
    """`os` for the segment module, whose first `times` writes fail with ENOSPC after writing
    half their bytes (a disk filling up mid-write); later writes go through."""

    def __init__(self, times):
        self.times = times
        self.failures = 0

    def __getattr__(self, name):
        return getattr(os, name)

    def write(self, fd, data):
        if self.failures >= self.times:
            return os.write(fd, data)
        self.failures += 1
        os.write(fd, bytes(data[:len(data) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _reports(p_reports):
    return lambda err, msg: p_reports.append((err, msg.offset(), msg.value()))


def test_a_batch_the_disk_refused_is_sent_again_until_it_is_stored(make_topic, producer, consumer, monkeypatch):
    topic = make_topic()
    reports = []
    p = producer(**{"linger.ms": 0, "retry.backoff.ms": 5, "on_delivery": _reports(reports)})
    p.produce(topic, b"before")
    assert p.flush(10) == 0
    disk = FullDisk(3)
    monkeypatch.setattr(segment_module, "os", disk)
    p.produce(topic, b"retried")
    assert p.flush(10) == 0
    # Three STORAGE_ERROR replies, then stored: one report, without error, at the next offset.
    assert disk.failures == 3
    assert reports == [(None, 0, b"before"), (None, 1, b"retried")]
    c = consumer(**{"group.id": "retries"})
    c.subscribe([topic])
    assert [m.value() for m in drain(c, 2)] == [b"before", b"retried"]


def test_later_records_of_the_partition_wait_for_the_one_being_retried(make_topic, producer, consumer, monkeypatch):
    topic = make_topic()
    reports = []
    # One request in flight at a time: then, as with librdkafka, retries keep the partition's order.
    p = producer(**{"linger.ms": 0, "retry.backoff.ms": 20, "max.in.flight.requests.per.connection": 1,
                    "on_delivery": _reports(reports)})
    disk = FullDisk(2)
    monkeypatch.setattr(segment_module, "os", disk)
    for value in (b"a", b"b", b"c"):
        p.produce(topic, value)
    assert p.flush(10) == 0
    assert disk.failures == 2
    assert [(err, offset, value) for err, offset, value in reports] == [(None, 0, b"a"), (None, 1, b"b"),
                                                                          (None, 2, b"c")]
    c = consumer(**{"group.id": "retry-order"})
    c.subscribe([topic])
    assert [m.value() for m in drain(c, 3)] == [b"a", b"b", b"c"]


def test_out_of_retries_the_record_reports_the_retriable_storage_error(make_topic, producer, monkeypatch):
    topic = make_topic()
    reports = []
    p = producer(**{"linger.ms": 0, "retries": 2, "retry.backoff.ms": 5, "on_delivery": _reports(reports)})
    disk = FullDisk(1000)
    monkeypatch.setattr(segment_module, "os", disk)
    p.produce(topic, b"refused")
    assert p.flush(10) == 0
    assert disk.failures == 3   # the first attempt and two retries
    [(err, offset, value)] = reports
    assert err.code() == KafkaError.KAFKA_STORAGE_ERROR and err.retriable() and offset < 0 and value == b"refused"
    monkeypatch.undo()
    p.produce(topic, b"later")
    assert p.flush(10) == 0 and reports[1] == (None, 0, b"later")


def test_a_record_still_refused_at_message_timeout_reports_msg_timed_out(make_topic, producer, monkeypatch):
    topic = make_topic()
    reports = []
    p = producer(**{"linger.ms": 0, "retry.backoff.ms": 10, "retry.backoff.max.ms": 40, "message.timeout.ms": 400,
                    "on_delivery": _reports(reports)})
    disk = FullDisk(10_000)
    monkeypatch.setattr(segment_module, "os", disk)
    p.produce(topic, b"stuck")
    assert p.flush(10) == 0
    [(err, _, value)] = reports
    assert err.code() == KafkaError._MSG_TIMED_OUT and value == b"stuck"
    assert "STORAGE_ERROR" in err.str()   # the error it was retried for
    # Backoff doubling from 10 ms up to 40 ms: about a dozen attempts in 400 ms, not hundreds.
    assert 2 <= disk.failures <= 40, disk.failures


async def test_the_asyncio_producer_retries_a_batch_the_disk_refused(minilog_server, make_topic, monkeypatch):
    topic = make_topic()
    p = AIOKafkaProducer(bootstrap_servers=f"{minilog_server.host}:{minilog_server.port}", retry_backoff_ms=5)
    await p.start()
    try:
        assert (await p.send_and_wait(topic, b"before")).offset == 0
        disk = FullDisk(2)
        monkeypatch.setattr(segment_module, "os", disk)
        meta = await p.send_and_wait(topic, b"retried")
        assert meta.offset == 1 and disk.failures == 2
    finally:
        await p.stop()
