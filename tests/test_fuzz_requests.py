"""Fuzz both servers with mutated valid requests (tests/fuzz_requests.py), over the real wire.

Each server runs as a subprocess, as a user starts it. The run fails on any INTERNAL_ERROR reply,
on the server closing the connection or exiting, on a traceback or ERROR line in its log, and on
resident memory growing by more than `RSS_GROWTH_BOUND` between the end of the first round and
the end of the last: each round ends by deleting what the fuzz created, so memory must plateau.

Quick profile: 100,000 requests per server (a few seconds each). `HYPOTHESIS_PROFILE=deep`: 1M.
`FUZZ_SEED=N` replays a run; the seed is in the failure message.
"""

import os
import random
import time

import pytest

from fuzz_requests import (MINIBROKER_CLEANUP, MINIBROKER_CORPUS, MINILOG_CLEANUP, MINILOG_CORPUS,
                           FuzzSession, mutated_requests, rss_bytes)

DEEP = os.environ.get("HYPOTHESIS_PROFILE") == "deep"
REQUESTS = 1_000_000 if DEEP else 100_000
ROUNDS = 5
RSS_GROWTH_BOUND = 64 << 20     # bytes; a leak of ~700 bytes per request would pass 64 MiB at 100k

SERVERS = {
    "minibroker": (MINIBROKER_CORPUS, MINIBROKER_CLEANUP, ["--fsync", "never"]),
    "minilog": (MINILOG_CORPUS, MINILOG_CLEANUP, []),
}


def log_problems(text: str) -> list[str]:
    return [line for line in text.splitlines()
            if "Traceback" in line or " ERROR " in line or " CRITICAL " in line][:10]


@pytest.mark.parametrize("name", list(SERVERS))
def test_mutated_requests_cause_no_internal_error_crash_logged_exception_or_leak(name, spawn_server):
    corpus, cleanup, extra = SERVERS[name]
    seed = int(os.environ.get("FUZZ_SEED", random.randrange(1 << 32)))
    rng = random.Random(seed)
    server = spawn_server(name, extra_args=extra)
    where = f"{name}, FUZZ_SEED={seed}"
    per_round = REQUESTS // ROUNDS
    baseline = None
    started = time.monotonic()
    totals: dict[str, int] = {}
    for round_no in range(ROUNDS):
        session = FuzzSession(server.port)
        try:
            session.send_all(mutated_requests(rng, corpus, per_round))
            session.sync()
            session.send_all(cleanup)
            session.sync()
        finally:
            session.close()
        assert not session.internal_errors, f"{where}: INTERNAL_ERROR replies: {session.internal_errors[:5]}"
        assert server.proc.poll() is None, f"{where}: the server exited with {server.proc.returncode}"
        for code, n in session.codes.items():
            totals[code] = totals.get(code, 0) + n
        rss = rss_bytes(server.proc.pid)
        if baseline is None:
            baseline = rss
    elapsed = time.monotonic() - started
    growth = rss - baseline
    problems = log_problems(server.stderr_text())
    assert not problems, f"{where}: the server logged errors: {problems}"
    assert growth <= RSS_GROWTH_BOUND, f"{where}: RSS grew by {growth >> 20} MiB after the first round"
    assert totals.get("BAD_REQUEST", 0) > REQUESTS // 4, f"{where}: too few refusals, the mutations are not reaching the checks: {totals}"
    print(f"{where}: {REQUESTS} requests in {elapsed:.1f} s, RSS {baseline >> 20} -> {rss >> 20} MiB, errors {totals}")
