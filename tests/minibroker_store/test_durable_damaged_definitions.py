"""A damaged definitions.msgpack never stops a start and never costs the journal's messages."""

import os

import pytest

from minibroker.store.definitions import FILE_NAME
from store_wire import DurableClient


def flip_a_bit(path):
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0x08
    with open(path, "wb") as f:
        f.write(data)


@pytest.mark.parametrize("damaged", ["current", "current and previous"])
def test_restart_with_damaged_definitions_keeps_every_message(damaged, start_minibroker, tmp_path, caplog):
    data_dir = tmp_path / "data"
    broker = start_minibroker(data_dir=data_dir)
    c = DurableClient(broker.host, broker.port)
    c.queue("first", durable=True, arguments={"x-max-priority": 5})
    c.queue("last", durable=True)             # the last definition change
    c.confirm_select()
    for i in range(50):
        c.publish("first", b"f%d" % i)
        c.publish("last", b"l%d" % i)
    c.wait_confirms()
    c.close()
    broker.stop()
    flip_a_bit(data_dir / FILE_NAME)
    if damaged != "current":
        flip_a_bit(data_dir / (FILE_NAME + ".prev"))

    broker.start()                            # used to refuse to start
    c = DurableClient(broker.host, broker.port)
    assert [b for b, _ in c.drain("first")] == [b"f%d" % i for i in range(50)]
    assert [b for b, _ in c.drain("last")] == [b"l%d" % i for i in range(50)]
    c.close()
    assert os.path.exists(data_dir / (FILE_NAME + ".corrupt"))
    assert "re-created" in caplog.text or "Recovered from the previous copy" in caplog.text
    # A whole definitions file again: the next start is clean.
    broker.restart()
    c = DurableClient(broker.host, broker.port)
    assert c.queue_exists("first") and c.queue_exists("last")
    c.close()
