"""Waiting for a condition with a deadline, never sleep-and-hope.

`wait_until(predicate, timeout)` polls until `predicate()` is truthy and returns its value, or
fails the test (AssertionError) at the deadline; `async_wait_until` is the same inside a
coroutine.
"""

import asyncio
import time


def _poll(predicate, timeout, message):
    """Yields while `predicate` is falsy; returns its value; fails the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        yield


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.005, message: str = "condition"):
    """Poll `predicate` until it returns something truthy; fail the test at the deadline."""
    poll = _poll(predicate, timeout, message)
    while True:
        try:
            next(poll)
        except StopIteration as done:
            return done.value
        time.sleep(interval)


async def async_wait_until(predicate, timeout: float = 10.0, interval: float = 0.005, message: str = "condition"):
    poll = _poll(predicate, timeout, message)
    while True:
        try:
            next(poll)
        except StopIteration as done:
            return done.value
        await asyncio.sleep(interval)
