import gc
import weakref

import pytest

from agents.gc_tuning import YOUNG_THRESHOLD, HeapFreezer, collect_less_often


@pytest.fixture(autouse=True)
def _unfreeze():
    yield
    gc.unfreeze()


def test_freezes_past_the_floor_then_each_time_users_double():
    freezer = HeapFreezer(floor_users=100)
    assert not freezer.maybe_freeze(99)
    assert gc.get_freeze_count() == 0
    assert freezer.maybe_freeze(100)
    frozen = gc.get_freeze_count()
    assert frozen > 0
    assert not freezer.maybe_freeze(199)  # not doubled yet
    keep = [[i] for i in range(1000)]  # new long-lived objects
    assert freezer.maybe_freeze(200)
    assert gc.get_freeze_count() >= frozen + len(keep)


def test_garbage_cycles_are_collected_before_freezing():
    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b  # a cycle: only the collector can free it
    assert gone() is not None
    HeapFreezer(floor_users=0).freeze(users=0)
    assert gone() is None  # collected, not frozen for good


@pytest.fixture
def thresholds():
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_the_young_generation_is_collected_less_often_and_the_older_ones_as_before(thresholds):
    gc.set_threshold(700, 10, 10)
    collect_less_often()
    assert gc.get_threshold() == (YOUNG_THRESHOLD, 10, 10)
    gc.set_threshold(10 * YOUNG_THRESHOLD, 5, 5)
    collect_less_often()  # never lowers a threshold someone raised further
    assert gc.get_threshold() == (10 * YOUNG_THRESHOLD, 5, 5)


def test_garbage_cycles_are_still_collected_without_asking(thresholds):
    class Node:
        pass

    collect_less_often()
    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    keep = [[i] for i in range(2 * YOUNG_THRESHOLD)]  # allocations past the threshold: a collection runs
    assert gone() is None and len(keep) == 2 * YOUNG_THRESHOLD
