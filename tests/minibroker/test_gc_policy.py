"""The command-line server's garbage-collector policy (minibroker/gc_policy.py): the young
threshold rises while collections find only live objects (queued messages), falls back as soon
as one finds garbage, and a timed sweep still collects what piles up under a high threshold."""

import gc
import weakref

import pytest

from minibroker import gc_policy


class Node:
    pass


def garbage_cycles(n):
    """n unreachable self-referencing objects; a weak reference to the last one."""
    for _ in range(n):
        node = Node()
        node.me = node
    return weakref.ref(node)


@pytest.fixture
def policy():
    saved = gc.get_threshold()
    gc.collect()
    gc_policy.tune()
    try:
        yield
    finally:
        gc_policy.untune()
        gc.set_threshold(*saved)


def test_live_objects_raise_the_threshold_and_garbage_brings_it_back(policy):
    assert gc.get_threshold()[0] == gc_policy.BASE_THRESHOLD
    live = []
    while gc.get_threshold()[0] < gc_policy.MAX_THRESHOLD:
        live += [[] for _ in range(gc_policy.BASE_THRESHOLD)]   # a growing backlog
        gc.collect(0)
        assert len(live) <= 20 * gc_policy.BASE_THRESHOLD, gc.get_threshold()
    gc.collect(0)                                               # nothing young: stays up
    assert gc.get_threshold()[0] == gc_policy.MAX_THRESHOLD
    last = garbage_cycles(gc_policy.SWEEP_MIN)                  # a stream of bad requests
    gc.collect(0)
    assert last() is None
    assert gc.get_threshold()[0] == gc_policy.BASE_THRESHOLD
    del live


def test_the_sweep_collects_garbage_that_piled_up_under_a_high_threshold(policy):
    gc.set_threshold(gc_policy.MAX_THRESHOLD, *gc_policy.OLDER_THRESHOLDS)
    last = garbage_cycles(10)
    assert gc_policy.sweep() is False      # few young objects: not worth a collection yet
    assert last() is not None
    live = [[] for _ in range(gc_policy.SWEEP_MIN)]
    assert last() is not None              # far below the count threshold
    assert gc_policy.sweep() is True
    assert last() is None
    del live


def test_the_sweep_does_nothing_where_the_policy_is_not_installed():
    saved = gc.get_threshold()
    gc.set_threshold(gc_policy.MAX_THRESHOLD)    # the count alone would allow a sweep
    try:
        gc.collect()
        live = [[] for _ in range(gc_policy.SWEEP_MIN)]
        assert gc.get_count()[0] >= gc_policy.SWEEP_MIN
        assert gc_policy.sweep() is False
        del live
    finally:
        gc.set_threshold(*saved)
