"""Sending at a steady rate from a process that sleeps between sends (the latency benches).

A latency bench's producer sends one record every 1/rate seconds and sleeps in between: a
spinning producer would take the CPU the server and the consumer need on a 2-vCPU machine.
But Linux lets a sleeping thread's timer fire late by the thread's *timer slack*, 50 µs by
default, so that wake-ups can be merged. On this VM `time.sleep(75e-6)` returned after ~163
µs (p50), not ~113 (75 plus the ~38 µs a wake-up takes here): at 10,000 records/s every
sleep overran most of the next interval, and the "paced" producer sent its records in pairs,
~30 µs apart, every ~200 µs. The second record of a pair then queued behind the first in the
server and in the consumer, and that, not the path one record takes, was what the latency
bench's p50 mostly measured (docs/clients-minilog.md, "An even 10,000 records/s").

`paced` asks the kernel for a timer slack of 1 ns first (`PR_SET_TIMERSLACK`, Linux only;
elsewhere the sleeps stay as they are), so each record goes at its own time.
"""

from __future__ import annotations

import ctypes
import sys
import time

_PR_SET_TIMERSLACK = 29   # <linux/prctl.h>
_PR_GET_TIMERSLACK = 30


def tighten_timer_slack() -> int | None:
    """Set this thread's timer slack to 1 ns; return it as it is now (ns), None where it
    cannot be set (not Linux, no libc)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0)
        return libc.prctl(_PR_GET_TIMERSLACK, 0, 0, 0, 0)
    except (OSError, AttributeError):
        return None


def paced(records: int, rate: float, start: float | None = None):
    """Yield 0..records-1, each once it is due at `rate` per second from `start`
    (`time.perf_counter`, now by default). Sleeps (not spins) until then, with the timer slack
    tightened; a record that is already due (the process ran late) goes at once."""
    tighten_timer_slack()
    interval = 1.0 / rate
    clock = time.perf_counter
    if start is None:
        start = clock()
    for i in range(records):
        wait = start + i * interval - clock()
        if wait > 0:
            time.sleep(wait)
        yield i
