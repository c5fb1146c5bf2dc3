"""Helpers shared by the storage tests: example counts and batch builders."""

import os

from hypothesis import HealthCheck, settings

from clients.record_batch import build_batch

DEEP = os.environ.get("HYPOTHESIS_PROFILE") == "deep"


def examples(n: int, **kw) -> settings:
    """Hypothesis settings with ``n`` examples (x25 under HYPOTHESIS_PROFILE=deep), no deadline."""
    return settings(max_examples=n * 25 if DEEP else n, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture], **kw)


def batch_of(values, timestamp=1_000, key=None) -> bytes:
    """A batch whose records carry ``values`` and timestamps ``timestamp``, ``timestamp+1`` ..."""
    return build_batch([(key, v, timestamp + i, None) for i, v in enumerate(values)])


def append_unchecked(log, batch: bytes) -> int:
    """Append ``batch`` below ``PartitionLog.append``'s checks, as a broker that did not check
    record bodies would have stored it; returns its base offset."""
    from clients.record_batch import read_header, set_base_offset
    segment = log.active_segment
    data = bytearray(batch)
    base = segment.next_offset
    set_base_offset(data, base)
    segment.append(memoryview(data), [read_header(data)])
    return base
