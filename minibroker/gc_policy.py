"""The command-line server's policy for Python's cyclic garbage collector: collect young objects
often while collections find garbage, rarely while they find only queued messages.

A young collection visits every object allocated since the last one that is still alive. In a
broker those are mostly the messages waiting in queues, which the collector can never free
(reference counting reclaims each once it is acked), and visiting them costs a quarter to half
a microsecond each, in one pause of 30 ms or more per 100,000. With the default thresholds
(700, 10, 10) the collector rescanned them every few thousand allocations (that tripled the
cost per message in bench/minibroker_wire.py); with a fixed count of 100,000 every message of
a backlog growing faster than that was still visited once, about a tenth of the server's CPU in
bench/minibroker_clients.py, where the producer runs ahead of the consumer. A fixed count of a
million would spare them, but then garbage cycles (an exception's traceback, a closed
connection) could pile up by a million objects: hundreds of MiB under a stream of bad requests
(tests/test_fuzz_requests.py bounds that growth).

So the threshold adapts (`_adapt`, run after each young collection): it starts at
BASE_THRESHOLD, doubles up to MAX_THRESHOLD while collections find less than GARBAGE_SHARE of
what they visit to be garbage, and drops back to BASE_THRESHOLD as soon as one finds more.
`sweep` (the server runs it every SWEEP_INTERVAL_S) collects once SWEEP_MIN young objects have
piled up, so garbage made slowly under a high threshold still goes within seconds.

`tune` is called by the command line (`__main__`), not by in-process servers, so a test
process keeps its own settings. Tested in tests/minibroker/test_gc_policy.py.
"""

import gc

BASE_THRESHOLD = 100_000      # net container allocations between young collections (default 700)
MAX_THRESHOLD = 1_000_000
GARBAGE_SHARE = 0.1           # a young collection that frees this share of what it visits: back to BASE
SWEEP_INTERVAL_S = 10.0
SWEEP_MIN = 100_000
OLDER_THRESHOLDS = (50, 1000)

_tuned = False
_young_at_start = 0


def tune() -> None:
    """Install the policy in this process."""
    global _tuned
    gc.set_threshold(BASE_THRESHOLD, *OLDER_THRESHOLDS)
    if not _tuned:
        gc.callbacks.append(_adapt)
    _tuned = True


def untune() -> None:
    """Take the policy out again (tests), leaving the thresholds to the caller."""
    global _tuned
    if _adapt in gc.callbacks:
        gc.callbacks.remove(_adapt)
    _tuned = False


def _adapt(phase: str, info: dict) -> None:
    global _young_at_start
    if info["generation"] != 0:
        return
    if phase == "start":
        _young_at_start = gc.get_count()[0]
        return
    threshold = gc.get_threshold()[0]
    collected = info["collected"]
    if collected and collected >= _young_at_start * GARBAGE_SHARE:
        wanted = BASE_THRESHOLD
    else:
        wanted = min(threshold * 2, MAX_THRESHOLD)
    if wanted != threshold:
        gc.set_threshold(wanted, *OLDER_THRESHOLDS)


def sweep() -> bool:
    """A young collection if SWEEP_MIN or more young objects are waiting (and the policy is
    installed). True if it ran."""
    if not _tuned or not gc.isenabled() or gc.get_count()[0] < SWEEP_MIN:
        return False
    gc.collect(0)
    return True
