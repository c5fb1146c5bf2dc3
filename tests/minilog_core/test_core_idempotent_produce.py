"""Idempotent produce in the core: producer ids and epochs, sequence checks per partition, a
retried batch answered with its first offset and not written twice, before and after a restart."""

import pytest

from clients import kafka_batch as kb
from clients.protocol.errors import BrokerError, ErrorCode
from minilog.batch_formats import KAFKA


def batch(pid, epoch, seq, n=2):
    return kb.build_batch([(None, b"v%d" % (seq + i), 1_000, None) for i in range(n)],
                          producer_id=pid, producer_epoch=epoch, base_sequence=seq)


def produce(broker, data, partition=0):
    (row,) = broker.produce([["t", partition, data]], fmt=KAFKA)
    return row[2], row[3] and row[3][0]


def end(broker, partition=0):
    return broker.partition_offsets("t", partition)[1]


async def test_a_retried_batch_gets_its_first_offset_and_is_not_written_again(broker):
    pid, epoch = broker.init_producer_id()
    assert produce(broker, batch(pid, epoch, 0)) == (0, None)
    assert produce(broker, batch(pid, epoch, 2)) == (2, None)
    assert produce(broker, batch(pid, epoch, 0)) == (0, None)      # the retry of the first
    assert produce(broker, batch(pid, epoch, 2)) == (2, None)
    assert end(broker) == 4 and broker.duplicates == 2
    assert produce(broker, batch(pid, epoch, 7)) == (-1, ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)
    assert end(broker) == 4
    assert produce(broker, batch(pid, epoch, 4)) == (4, None)
    # Sequences are per partition: another partition starts at 0.
    broker.create_topic("t2", 1)
    (row,) = broker.produce([["t2", 0, batch(pid, epoch, 0)]], fmt=KAFKA)
    assert row[2:] == [0, None]


async def test_epochs_fence_older_producers(broker):
    pid, epoch = broker.init_producer_id()
    assert produce(broker, batch(pid, epoch, 0)) == (0, None)
    # The producer re-initialises (as after a fatal error): same id, next epoch, sequence 0.
    assert broker.init_producer_id(None, pid, epoch) == (pid, epoch + 1)
    assert produce(broker, batch(pid, epoch + 1, 5)) == (-1, ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)
    assert produce(broker, batch(pid, epoch + 1, 0)) == (2, None)
    assert produce(broker, batch(pid, epoch, 2)) == (-1, ErrorCode.INVALID_PRODUCER_EPOCH)
    # A transactional id keeps its producer id, each init bumps the epoch.
    first = broker.init_producer_id("tx")
    assert broker.init_producer_id("tx") == (first[0], first[1] + 1)
    with pytest.raises(BrokerError):
        broker.init_producer_id(5)


async def test_producer_state_and_ids_survive_a_restart(open_broker):
    broker = open_broker()
    pid, epoch = broker.init_producer_id()
    produce(broker, batch(pid, epoch, 0))
    produce(broker, batch(pid, epoch, 2))
    broker.close()
    again = open_broker()
    assert produce(again, batch(pid, epoch, 2)) == (2, None)      # rebuilt from the log's tail
    assert end(again) == 4
    assert produce(again, batch(pid, epoch, 9)) == (-1, ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)
    assert produce(again, batch(pid, epoch, 4)) == (4, None)
    assert again.init_producer_id()[0] != pid                      # ids are never handed out twice


async def test_an_unknown_producer_id_is_accepted_at_any_sequence(broker):
    # As Kafka: its state may be gone with deleted segments.
    assert produce(broker, batch(999, 3, 41)) == (0, None)
    assert produce(broker, batch(999, 3, 43)) == (2, None)
