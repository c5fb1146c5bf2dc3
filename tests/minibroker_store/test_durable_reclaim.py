"""Deleting or purging a durable queue gives its disk back within seconds, and a kill -9 at any
moment of that (the early seal of the active segment, the compaction copies, the deletion of
the old segment) loses no confirmed message.

The server runs in a subprocess with 32 MiB journal segments, so a 24 MiB queue fits in the
active segment: the case that freed nothing before `MessageJournal._reclaim_active`.
"""

import os
import random
import time

import pytest

from harness import wait_until
from store_wire import DurableClient

SEGMENT = 32 << 20
BODY = 1024


def data_dir_bytes(path) -> int:
    """Disk blocks the data directory holds (what `du` counts, preallocated space included)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                pass      # deleted while we looked
    return total


def publish_confirmed(c: DurableClient, queue: str, count: int, tag: bytes, batch: int = 500) -> list:
    bodies = [tag + b"-%08d-" % i + b"." * (BODY - 18) for i in range(count)]
    for i in range(0, count, batch):
        c.publish_batch(queue, bodies[i:i + batch])
        if c.seq - c._confirmed_upto > 4 * batch:
            c.wait_confirms(c.seq - 4 * batch, timeout=120)
    c.wait_confirms(timeout=120)
    assert not c.nacked
    return bodies


def fill(server, keep_count, big_mib, interleave):
    """A live queue `keep` and a 24 MiB queue `big` in the active segment; returns keep's bodies."""
    c = DurableClient(server.host, server.port)
    c.queue("keep")
    c.queue("big")
    c.confirm_select()
    keep = []
    big_count = big_mib * 1024 * 1024 // BODY
    rounds = 8 if interleave else 1
    for r in range(rounds):
        keep += publish_confirmed(c, "keep", keep_count // rounds, b"k%d" % r)
        publish_confirmed(c, "big", big_count // rounds, b"b%d" % r)
    return c, keep


def empty(c, how):
    if how == "delete":
        c.conn.call("queue_delete", {"queue": "big"})
    else:
        assert c.conn.call("queue_purge", {"queue": "big"})["message_count"] > 0


def check_keep(server, keep):
    c = DurableClient(server.host, server.port)
    got = [b for b, _ in c.drain("keep")]
    c.close()
    assert len(got) == len(set(got)), "a message came back twice"
    assert sorted(got) == sorted(keep), f"{len(set(keep) - set(got))} confirmed messages lost"


@pytest.mark.parametrize("how", ["delete", "purge"])
def test_deleting_or_purging_a_queue_frees_its_disk_within_seconds(spawn_server, tmp_path, how):
    data = tmp_path / "data"
    server = spawn_server("minibroker", data_dir=data, extra_args=["--journal-segment-bytes", str(SEGMENT)])
    c, keep = fill(server, 200, 24, interleave=False)
    full = data_dir_bytes(data)
    assert full >= 24 << 20
    empty(c, how)
    wait_until(lambda: data_dir_bytes(data) < 8 << 20, timeout=20, interval=0.05,
               message=f"the data dir to shrink from {full} bytes")
    assert c.conn.call("server_info")["store"]["live_messages"] == 200
    c.close()
    server.kill()          # what is left on disk is all a restart has
    server.start()
    check_keep(server, keep)


@pytest.mark.parametrize("how,seed", [("delete", 1), ("purge", 2), ("delete", 3)])
def test_kill_9_while_a_deleted_queue_is_reclaimed_loses_no_confirmed_message(spawn_server, tmp_path, how, seed):
    rng = random.Random(seed)
    data = tmp_path / "data"
    server = spawn_server("minibroker", data_dir=data, extra_args=["--journal-segment-bytes", str(SEGMENT)])
    # keep's 4,000 messages sit among big's, so reclaiming copies them forward (compaction).
    c, keep = fill(server, 4000, 20, interleave=True)
    empty(c, how)
    # Somewhere in the seconds the journal takes to seal, compact and delete (maintenance runs
    # every second; the seal waits for one quiet pass).
    deadline = time.monotonic() + rng.uniform(0.5, 4.0)
    while time.monotonic() < deadline:
        time.sleep(0.01)
    server.kill()
    server.start()
    check_keep(server, keep)
    c = DurableClient(server.host, server.port)
    if how == "purge":
        assert c.queue("big")["message_count"] == 0
    else:
        assert not c.queue_exists("big")
    c.close()
