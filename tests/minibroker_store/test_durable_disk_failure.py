"""A failing disk over the real wire: unconfirmed publishes are nacked with a STORAGE_ERROR, the
server keeps serving, new publishes succeed once the disk recovers, and a restart brings back
exactly the confirmed messages.

The failure is injected where the journal meets the OS: `minibroker.store.journal.os` is
replaced, for this test only, by a proxy whose writes (disk full) or fdatasyncs (I/O error)
fail while `FlakyOs.failing` is set.
"""

import errno
import os
import time

import pytest

import minibroker.store.journal as journal_module
from clients.protocol.errors import BrokerError
from store_wire import DurableClient


class FlakyOs:
    """The `os` module, except that the chosen calls fail with `failing` (an errno) while it is set."""

    def __init__(self, calls):
        self.calls = calls
        self.failing = None
        self.failed = 0

    def __getattr__(self, name):
        real = getattr(os, name)
        if name not in self.calls:
            return real

        def call(*args):
            if self.failing is not None:
                self.failed += 1
                raise OSError(self.failing, os.strerror(self.failing))
            return real(*args)
        return call


def pump_until(clients, predicate, errors, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    for c in clients:
        c.conn.flush()
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        for c in clients:
            try:
                c.pump(0.05)
            except BrokerError as exc:
                errors.append(exc)


def store_info(c):
    return c.conn.call("server_info")["store"]


@pytest.mark.parametrize("fault", ["disk-full", "fsync-eio"])
def test_unconfirmed_publishes_are_nacked_and_confirmed_ones_survive(start_minibroker, tmp_path, monkeypatch, fault):
    if fault == "disk-full":
        flaky, code, reason = FlakyOs({"pwritev", "pwrite", "write", "writev"}), errno.ENOSPC, "disk full"
    else:
        flaky, code, reason = FlakyOs({"fdatasync", "fsync"}), errno.EIO, "disk I/O error"
    monkeypatch.setattr(journal_module, "os", flaky)
    server = start_minibroker(data_dir=tmp_path / "data")
    pub = DurableClient(server.host, server.port)
    other = DurableClient(server.host, server.port)
    pub.queue("orders")
    other.queue("audit")
    pub.confirm_select()
    other.confirm_select()
    errors = []

    for i in range(50):
        pub.publish("orders", b"confirmed-%d" % i)
    for i in range(20):
        other.publish("audit", b"audit-%d" % i)
    pub.wait_confirms()
    other.wait_confirms()
    assert len(pub.confirmed) == 50 and not pub.nacked and len(other.confirmed) == 20

    # The disk fails: what is published now cannot be made durable.
    flaky.failing = code
    doomed = [pub.publish("orders", b"doomed-%d" % i) for i in range(10)]
    pump_until([pub], lambda: pub._confirmed_upto >= doomed[-1], errors, what="answers to the doomed publishes")
    assert set(doomed) <= pub.nacked and not set(doomed) & pub.confirmed
    pump_until([pub], lambda: errors, errors, what="a STORAGE_ERROR")
    assert errors[0].code == "STORAGE_ERROR" and errors[0].message.startswith(f"channel 1: {reason}"), errors[0]
    assert flaky.failed
    # While it stays failed, persistent publishes are refused at once; transient ones still work.
    refused = pub.publish("orders", b"refused")
    transient = pub.publish("orders", b"transient", persistent=False)
    pump_until([pub], lambda: pub._confirmed_upto >= transient, errors, what="answers during the failure")
    assert refused in pub.nacked and transient in pub.confirmed
    assert any("refused until the disk recovers" in e.message for e in errors[1:])
    assert store_info(pub)["failure"].startswith(reason)

    # The server keeps serving: another connection consumes (and acks) its queue meanwhile.
    assert [b for b, _ in other.drain("audit")] == [b"audit-%d" % i for i in range(20)]
    # The nacked messages left their queue: only the confirmed ones and the transient one wait.
    assert pub.queue("orders")["message_count"] == 51

    # The disk recovers: new publishes are confirmed again.
    flaky.failing = None
    pump_until([pub], lambda: store_info(pub)["failure"] is None, errors, what="the journal's recovery")
    after = [pub.publish("orders", b"after-%d" % i) for i in range(10)]
    pub.wait_confirms()
    assert set(after) <= pub.confirmed
    pub.close()
    other.close()

    server.restart()
    c = DurableClient(server.host, server.port)
    got = [b for b, _ in c.drain("orders")]
    assert got == [b"confirmed-%d" % i for i in range(50)] + [b"after-%d" % i for i in range(10)]
    assert c.queue("audit")["message_count"] == 0
    c.close()


def test_dead_lettering_during_a_disk_failure_keeps_the_message(start_minibroker, tmp_path, monkeypatch):
    """A message rejected into a durable dead-letter queue while the disk is full is not lost:
    the store refuses the copy, so it is kept in memory (delivered, not persisted)."""
    flaky = FlakyOs({"pwritev", "pwrite", "write", "writev"})
    monkeypatch.setattr(journal_module, "os", flaky)
    server = start_minibroker(data_dir=tmp_path / "data")
    c = DurableClient(server.host, server.port)
    c.exchange("dlx", "fanout")
    c.queue("dead")
    c.bind("dead", "dlx", "")
    c.queue("work", arguments={"x-dead-letter-exchange": "dlx"})
    c.confirm_select()
    c.publish("work", b"poison")
    c.wait_confirms()
    assert c.confirmed == {1}
    c.consume("work")
    c.wait_for(lambda: c.deliveries, what="the delivery")
    flaky.failing = errno.ENOSPC
    c.nack(c.deliveries[0][1], requeue=False)
    c.conn.flush()
    assert c.queue("dead")["message_count"] == 1
    assert c.get("dead", no_ack=True)["body"] == b"poison"
    flaky.failing = None
    c.close()


def test_a_durable_declare_the_disk_refuses_fails_alone_and_changes_nothing(start_minibroker, tmp_path,
                                                                           monkeypatch):
    import minibroker.store.definitions as definitions_module
    flaky = FlakyOs({"write"})
    monkeypatch.setattr(definitions_module, "os", flaky)
    server = start_minibroker(data_dir=tmp_path / "data")
    c = DurableClient(server.host, server.port)
    c.exchange("events")
    c.queue("kept")
    flaky.failing = errno.ENOSPC
    for refused in (lambda: c.queue("unsaved"), lambda: c.exchange("unsaved-x"),
                    lambda: c.bind("kept", "events", "k")):
        with pytest.raises(BrokerError) as err:
            refused()
        assert err.value.code == "STORAGE_ERROR"
        assert "disk full" in err.value.message and "nothing changed" in err.value.message
    assert not c.queue_exists("unsaved")       # memory agrees with the disk
    flaky.failing = None
    c.queue("saved")                           # the connection and the store are fine
    c.publish("kept", b"m", exchange="events")  # the refused binding routes nothing
    assert c.queue("kept")["message_count"] == 0
    c.close()
    server.restart()
    c = DurableClient(server.host, server.port)
    assert c.queue_exists("saved") and c.queue_exists("kept") and not c.queue_exists("unsaved")
    c.close()


def test_a_deletion_the_disk_refuses_is_saved_once_the_disk_recovers(start_minibroker, tmp_path, monkeypatch):
    import minibroker.store.definitions as definitions_module
    flaky = FlakyOs({"write"})
    monkeypatch.setattr(definitions_module, "os", flaky)
    server = start_minibroker(data_dir=tmp_path / "data")
    c = DurableClient(server.host, server.port)
    c.queue("doomed")
    c.queue("other")
    path = tmp_path / "data" / definitions_module.FILE_NAME
    flaky.failing = errno.ENOSPC
    c.conn.call("queue_delete", {"queue": "doomed"})     # a deletion cannot be refused
    assert not c.queue_exists("doomed")
    assert "doomed" in definitions_module.DefinitionsStore.read_file(str(path))["queues"]
    flaky.failing = None
    deadline = time.monotonic() + 10
    while "doomed" in definitions_module.DefinitionsStore.read_file(str(path))["queues"]:
        assert time.monotonic() < deadline, "the refused deletion was never saved"
        c.queue_exists("other")                          # a round trip, then look again
    c.close()
    server.restart()
    c = DurableClient(server.host, server.port)
    assert not c.queue_exists("doomed") and c.queue_exists("other")
    c.close()


class PoisonPacker:
    """msgpack, except that packing definitions that name `poison` raises, as an unencodable value would."""

    def __init__(self, real, poison):
        self.real, self.poison = real, poison

    def __getattr__(self, name):
        return getattr(self.real, name)

    def packb(self, obj, **kw):
        if type(obj) is dict and self.poison in obj.get("queues", {}):
            raise TypeError("can not serialize 'object' object")
        return self.real.packb(obj, **kw)


def test_a_definition_the_encoder_refuses_fails_only_its_own_declare(start_minibroker, tmp_path, monkeypatch):
    import msgpack

    import minibroker.store.definitions as definitions_module
    monkeypatch.setattr(definitions_module, "msgpack", PoisonPacker(msgpack, "poison"))
    server = start_minibroker(data_dir=tmp_path / "data")
    c = DurableClient(server.host, server.port)
    other = DurableClient(server.host, server.port)
    other.queue("to-delete")
    with pytest.raises(BrokerError) as err:
        c.queue("poison")
    assert err.value.code == "PRECONDITION_FAILED" and "nothing changed" in err.value.message
    assert not c.queue_exists("poison")
    # Every later change by anyone still saves (before, each one failed on the poisoned entry).
    other.queue("after")
    other.conn.call("queue_delete", {"queue": "to-delete"})
    c.queue("mine")
    saved = definitions_module.DefinitionsStore.read_file(str(tmp_path / "data" / definitions_module.FILE_NAME))
    assert set(saved["queues"]) == {"after", "mine"}
    c.close()
    other.close()
    server.restart()
    c = DurableClient(server.host, server.port)
    assert c.queue_exists("after") and c.queue_exists("mine")
    assert not c.queue_exists("poison") and not c.queue_exists("to-delete")
    c.close()
