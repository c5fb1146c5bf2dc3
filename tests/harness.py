"""Starting real servers for tests: the classes live in `brokertest` (brokertest/servers.py,
brokertest/waiting.py), which users' test suites get too; this module gives this suite its
names for them and the repository's root.

Every end-to-end test talks to a real server on 127.0.0.1, on a port the OS picks, with a
fresh data directory, through the real clients: `ServerThread` in-process, `ServerProcess` as
`python -m <name>` that a test may SIGTERM or SIGKILL. `wait_until(predicate, timeout)` waits
for a condition with a deadline: no sleep-and-hope. `resident_pages(path)` says which pages of a
file are in the page cache (the storage engine drops written pages behind the log end).
`confirms_of(conn, count)` collects a raw msgpack connection's publisher confirms.
`run_bench(module, args, json_path)` runs a `bench` module's command line for a smoke test.
"""

import json
import subprocess
import sys

from brokertest.servers import (LISTENING, ROOT, ServerProcess, ServerThread,  # noqa: F401
                                read_listening_port, read_listening_ports)
from brokertest.waiting import async_wait_until, wait_until  # noqa: F401


def resident_pages(path: str) -> list[bool]:
    """Which pages of the file at `path` are in the page cache now, one flag per page (mincore(2)
    on a read-only shared mapping, which faults nothing in). Linux only."""
    import ctypes
    import mmap
    import os
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    size = os.path.getsize(path)
    if size == 0:
        return []
    page = os.sysconf("SC_PAGE_SIZE")
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), f"mmap of {path} failed")
        try:
            vec = ctypes.create_string_buffer((size + page - 1) // page)
            if libc.mincore(ctypes.c_void_p(addr), size, vec) != 0:
                raise OSError(ctypes.get_errno(), f"mincore of {path} failed")
            return [bool(b & 1) for b in vec.raw]
        finally:
            libc.munmap(ctypes.c_void_p(addr), size)
    finally:
        os.close(fd)


def confirms_of(conn, count: int) -> dict:
    """Read a raw connection's `confirm` pushes until `count` publishes are settled; returns
    {sequence number: acked}, with `multiple` confirms spread over the numbers they cover."""
    confirms = {}

    def settled():
        conn.read(0.05)
        while conn.pushes:
            push = conn.pushes.popleft()
            if push.event == "confirm":
                _, ack, seq, multiple = push.body
                for s in (range(1, seq + 1) if multiple else [seq]):
                    confirms.setdefault(s, ack)
        return len(confirms) >= count
    wait_until(settled, message=f"{count} confirms")
    return confirms


def run_bench(module: str, args: list, json_path, with_output: bool = False):
    """Run `python -m bench.<module> *args --json json_path` from the repository's root, as a
    user would, and return the JSON it wrote (with `with_output`, and what it printed:
    `(result, stdout)`); fails the test with the bench's output if it exits non-zero or runs
    for two minutes. For the benches' smoke tests, which assert that a bench runs and
    delivers, never a speed."""
    proc = subprocess.run([sys.executable, "-m", f"bench.{module}", *map(str, args), "--json", str(json_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    with open(json_path) as f:
        result = json.load(f)
    return (result, proc.stdout) if with_output else result
