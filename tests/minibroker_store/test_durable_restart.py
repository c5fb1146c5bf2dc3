"""Durability over the real wire: what survives a clean restart, and what does not (as in RabbitMQ)."""

import logging

import pytest

from minibroker.store.journal import MessageJournal
from store_wire import DurableClient


@pytest.fixture
def broker(start_minibroker, tmp_path):
    return start_minibroker(data_dir=tmp_path / "data")


def client(server):
    return DurableClient(server.host, server.port)


def test_persistent_messages_on_durable_queues_survive_restart(broker):
    c = client(broker)
    c.queue("durable-q", durable=True)
    c.queue("transient-q", durable=False)
    c.confirm_select()
    for i in range(200):
        c.publish("durable-q", b"keep-%d" % i)
        if i % 20 == 0:
            c.publish("durable-q", b"transient-%d" % i, persistent=False)
        c.publish("transient-q", b"gone-%d" % i)
    c.wait_confirms()
    assert not c.nacked
    c.close()
    broker.restart()

    c = client(broker)
    assert not c.queue_exists("transient-q")
    got = c.drain("durable-q")
    assert [b for b, _ in got] == [b"keep-%d" % i for i in range(200)]
    assert not any(redelivered for _, redelivered in got)
    c.close()


def test_durable_exchanges_and_bindings_survive_restart_transient_ones_do_not(broker):
    c = client(broker)
    c.exchange("orders", "topic", durable=True)
    c.exchange("scratch", "fanout", durable=False)
    c.queue("eu-orders")
    c.bind("eu-orders", "orders", "order.eu.*")
    c.close()
    broker.restart()

    c = client(broker)
    c.confirm_select()
    c.publish("order.eu.fr", b"routed", exchange="orders")
    c.publish("order.us.ny", b"not routed", exchange="orders")
    c.wait_confirms()
    assert [b for b, _ in c.drain("eu-orders")] == [b"routed"]
    from clients.protocol.errors import BrokerError
    with pytest.raises(BrokerError) as err:
        c.conn.call("exchange_declare", {"exchange": "scratch", "type": "fanout", "passive": True})
    assert err.value.code == "NOT_FOUND"
    c.close()


def test_deleted_durable_queue_stays_deleted_with_its_messages(broker):
    c = client(broker)
    c.queue("doomed")
    c.confirm_select()
    for i in range(10):
        c.publish("doomed", b"%d" % i)
    c.wait_confirms()
    c.conn.call("queue_delete", {"queue": "doomed"})
    c.close()
    broker.restart()
    c = client(broker)
    assert not c.queue_exists("doomed")
    c.queue("doomed")          # declared again: it starts empty
    assert c.queue("doomed")["message_count"] == 0
    c.close()


def test_delivered_but_unacked_messages_come_back_redelivered(broker):
    c = client(broker)
    c.queue("work")
    c.confirm_select()
    for i in range(6):
        c.publish("work", b"job-%d" % i)
    c.wait_confirms()
    first = [c.get("work") for _ in range(3)]
    c.ack(first[0]["delivery_tag"])          # job-0 done; job-1 and job-2 in flight at the restart
    c.conn.call("ping")                       # the ack has been processed
    c.close()
    broker.restart()

    c = client(broker)
    got = c.drain("work")
    assert got == [(b"job-1", True), (b"job-2", True), (b"job-3", False), (b"job-4", False), (b"job-5", False)]
    c.close()


def test_delivery_counts_survive_restart_for_the_delivery_limit(broker):
    """x-delivery-limit 1: one delivery before the restart and one nack after it use up the limit."""
    c = client(broker)
    c.queue("limited", arguments={"x-delivery-limit": 1})
    c.confirm_select()
    c.publish("limited", b"poison")
    c.wait_confirms()
    assert c.get("limited")["body"] == b"poison"
    c.close()
    broker.restart()

    c = client(broker)
    msg = c.get("limited")
    assert msg["redelivered"] is True
    c.nack(msg["delivery_tag"], requeue=True)
    c.conn.call("ping")
    assert c.queue("limited", arguments={"x-delivery-limit": 1})["message_count"] == 0
    c.close()


def test_confirm_is_sent_only_after_the_message_is_fsynced(broker):
    """At the moment the broker sends confirms, every journaled message's record is fdatasync'ed."""
    checks = {"sends": 0, "unsynced": 0}

    def install():
        server = broker.server
        original = server.broker._send_confirms
        journal = server.store.journal

        def checking_send(confirms, failure=None):
            checks["sends"] += 1
            q = server.broker.queues["synced"]
            for m in list(q.ready):
                seg_id, off, rec_len, _ = journal.location(m.store_id)
                if journal.segments[seg_id].synced < off + rec_len:
                    checks["unsynced"] += 1
            original(confirms, failure)

        server.broker._send_confirms = checking_send
    broker.call(install)
    c = client(broker)
    c.queue("synced")
    c.confirm_select()
    for i in range(20):
        for _ in range(50):
            c.publish("synced", b"x" * 100)
        c.wait_confirms()
    assert checks["sends"] >= 20 and checks["unsynced"] == 0, checks
    assert broker.call(lambda: broker.server.store.journal.stats["fsyncs"]) >= 1
    c.close()


def test_restart_logs_what_was_recovered(broker, caplog):
    c = client(broker)
    c.queue("logged")
    c.confirm_select()
    c.publish_batch("logged", [b"m"] * 30)
    c.wait_confirms()
    c.close()
    caplog.set_level(logging.INFO, logger="minibroker.store")
    broker.restart()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "recovered 0 durable exchanges, 1 durable queues, 0 bindings, 30 persistent messages" in text


def test_journal_is_readable_offline_after_restart(broker, tmp_path):
    c = client(broker)
    c.queue("offline")
    c.confirm_select()
    c.publish_batch("offline", [b"a", b"b"])
    c.wait_confirms()
    c.close()
    broker.stop()
    j = MessageJournal(str(tmp_path / "data" / "journal"))
    rec = j.open()
    assert [j.read_body(m.msg_id) for m in rec.queues["offline"]] == [b"a", b"b"]
    j.close_sync()


def test_memory_alarm_ignores_bodies_paged_out_to_the_journal(broker):
    """A persistent backlog bigger than the memory limit is fine: its bodies are on disk."""
    def lower_limit():
        fc = broker.server.flow_control
        # Above the 4 MiB of bodies a queue keeps in memory (KEEP_BODY_BYTES) plus what the 20,000
        # message objects cost (flow_control.MESSAGE_OVERHEAD each, about 5 MiB), below the 20 MiB backlog.
        fc.limit, fc.resume_below = 12 << 20, 10 << 20
    broker.call(lower_limit)
    c = client(broker)
    c.queue("big")
    c.confirm_select()
    for _ in range(40):
        c.publish_batch("big", [b"b" * 1024] * 500)     # 20 MiB in all
        c.wait_confirms(timeout=10)
    assert c.queue("big")["message_count"] == 20_000
    assert broker.call(lambda: broker.server.flow_control.alarm) is False
    c.close()


def test_bad_fsync_flag_is_refused_with_the_choices(tmp_path):
    import subprocess
    import sys
    from harness import ROOT
    proc = subprocess.run([sys.executable, "-m", "minibroker", "--port", "0", "--data-dir", str(tmp_path),
                           "--fsync", "sometimes"], capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert proc.returncode != 0
    assert "always" in proc.stderr and "interval" in proc.stderr and "never" in proc.stderr


def test_message_ttl_counts_from_the_original_publish_across_a_restart(broker):
    import time
    from harness import wait_until
    c = client(broker)
    c.queue("short-lived", arguments={"x-message-ttl": 1000})
    c.queue("long-lived", arguments={"x-message-ttl": 600_000})
    c.confirm_select()
    c.publish("short-lived", b"expires")
    c.publish("long-lived", b"stays")
    c.wait_confirms()
    c.close()
    broker.stop()
    time.sleep(1.2)            # the broker is down for longer than the short TTL
    broker.start()
    c = client(broker)
    # Expired already at recovery: gone at the first sweep, not a full TTL after the restart.
    wait_until(lambda: c.queue("short-lived", arguments={"x-message-ttl": 1000})["message_count"] == 0,
               timeout=0.6, message="the expired message to be swept")
    assert [b for b, _ in c.drain("long-lived")] == [b"stays"]
    c.close()


def test_a_second_server_on_the_same_data_dir_is_refused(broker, start_minibroker, tmp_path):
    with pytest.raises(OSError, match="in use by another minibroker"):
        start_minibroker(data_dir=tmp_path / "data")
