"""DefinitionsStore: durable exchanges, queues and bindings survive reopen; a crash mid-save
leaves the old set or the new one, never a broken file."""

import os

import pytest

from minibroker.store.definitions import FILE_NAME, DefinitionsCorrupt, DefinitionsStore

EXCHANGE = {"type": "topic", "durable": True, "auto_delete": False, "internal": False, "arguments": {}}
QUEUE = {"durable": True, "exclusive": False, "auto_delete": False,
         "arguments": {"x-message-ttl": 60000, "x-dead-letter-exchange": "dlx"}}


def test_definitions_round_trip(tmp_path):
    store = DefinitionsStore(str(tmp_path)).load()
    store.put_exchange("orders", EXCHANGE)
    store.put_queue("billing", QUEUE)
    store.add_binding({"source": "orders", "destination": "billing", "routing_key": "order.*",
                       "arguments": {"x-match": "any"}})
    again = DefinitionsStore(str(tmp_path)).load()
    assert again.exchanges == {"orders": EXCHANGE}
    assert again.queues == {"billing": QUEUE}
    assert again.bindings == [{"source": "orders", "destination": "billing", "destination_kind": "queue",
                               "routing_key": "order.*", "arguments": {"x-match": "any"}}]


def test_deleting_a_queue_removes_its_bindings(tmp_path):
    store = DefinitionsStore(str(tmp_path)).load()
    store.put_exchange("orders", EXCHANGE)
    store.put_queue("a", QUEUE)
    store.put_queue("b", QUEUE)
    store.add_binding({"source": "orders", "destination": "a", "routing_key": "x"})
    store.add_binding({"source": "orders", "destination": "b", "routing_key": "x"})
    store.delete_queue("a")
    again = DefinitionsStore(str(tmp_path)).load()
    assert set(again.queues) == {"b"}
    assert [b["destination"] for b in again.bindings] == ["b"]


def test_unchanged_redeclare_does_not_rewrite(tmp_path):
    store = DefinitionsStore(str(tmp_path)).load()
    store.put_queue("a", QUEUE)
    store.put_queue("a", QUEUE)
    store.add_binding({"source": "amq.direct", "destination": "a", "routing_key": "a"})
    store.add_binding({"source": "amq.direct", "destination": "a", "routing_key": "a"})
    assert store.saves == 2


def test_crash_before_rename_keeps_the_old_definitions(tmp_path):
    store = DefinitionsStore(str(tmp_path)).load()
    store.put_queue("old", QUEUE)
    # A crash after the temp file was (partly) written but before the rename.
    with open(tmp_path / (FILE_NAME + ".tmp"), "wb") as f:
        f.write(b"MBDEFS01\x00\x00\x10\x00half a fil")
    again = DefinitionsStore(str(tmp_path)).load()
    assert set(again.queues) == {"old"}
    assert not os.path.exists(tmp_path / (FILE_NAME + ".tmp"))


def test_corrupt_definitions_file_is_reported_clearly(tmp_path):
    store = DefinitionsStore(str(tmp_path)).load()
    store.put_queue("q", QUEUE)
    path = tmp_path / FILE_NAME
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DefinitionsCorrupt, match="CRC"):
        DefinitionsStore.read_file(str(path))


def test_a_damaged_definitions_file_is_recovered_from_the_previous_copy(tmp_path, caplog):
    store = DefinitionsStore(str(tmp_path)).load()
    store.put_queue("q", QUEUE)
    store.put_queue("r", QUEUE)            # the last change: the previous copy has only "q"
    path = tmp_path / FILE_NAME
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    again = DefinitionsStore(str(tmp_path)).load()
    assert again.recovered_from == "backup" and set(again.queues) == {"q"}
    assert os.path.exists(tmp_path / (FILE_NAME + ".corrupt"))
    assert "Recovered from the previous copy" in caplog.text
