"""Helpers the minilog client tests share (kept out of conftest.py so imports are unambiguous)."""

import time


def drain(consumer, count, timeout=10.0):
    """Consume until `count` data messages arrived (errors fail the test), or the deadline."""
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"got {len(out)} of {count} messages within {timeout} s")
        for m in consumer.consume(count - len(out), min(left, 0.5)):
            if m.error() is not None:
                raise AssertionError(f"unexpected error message: {m.error()!r}")
            out.append(m)
    return out


def counted(obj, name) -> list:
    """Wrap `obj.name` to record each call's arguments; returns the list they go into."""
    calls = []
    inner = getattr(obj, name)

    def counting(*args, **kwargs):
        calls.append(args)
        return inner(*args, **kwargs)
    setattr(obj, name, counting)
    return calls
