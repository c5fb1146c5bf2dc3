"""A server started from the command line reuses the memory its produce requests pass through.

Fixing glibc's mmap threshold (serverbase/cli.py, `pin_malloc_thresholds`) also froze its trim
threshold at 128 KiB, and the server then handed the top of its heap back to the kernel after
nearly every large produce request and faulted fresh pages in for the next one: about 1,000
page faults per MiB of 64 KiB records, 1.5-1.8 times the server CPU per record. The server's minor
page faults are counted, not timed.
"""

import os

from clients.log import Producer

RECORD = 64 << 10
MIB_SENT = 24


def minor_faults(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])   # field 10, minflt


def test_produce_requests_reuse_the_heap_instead_of_faulting_in_fresh_pages(spawn_server):
    server = spawn_server("minilog")
    producer = Producer({"bootstrap.servers": f"127.0.0.1:{server.port}", "linger.ms": 5})
    value = os.urandom(RECORD)

    def send(mib):
        for _ in range(mib * (1 << 20) // RECORD):
            producer.produce("big-records", value, partition=0)
        assert producer.flush(60) == 0

    send(4)   # the topic, its files and the first buffers: the steady state comes after
    before = minor_faults(server.proc.pid)
    send(MIB_SENT)
    per_mib = (minor_faults(server.proc.pid) - before) / MIB_SENT
    # Measured: about 1,000 per MiB with the trim threshold left at 128 KiB, under 1 with it raised.
    assert per_mib < 128, f"the server faulted in {per_mib:.0f} pages per MiB produced"
