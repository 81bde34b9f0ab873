"""The Redis flusher's two paces: every redis_flush_ms while the worker
keeps up with its input, once a redis_catch_up_flush_ms while some owned
partition has more than a batch of events still to take."""

from types import SimpleNamespace

from faust.types import TP

from agents.wiring import catching_up

EVENTS = "tierstream.events"


def worker(highwaters: dict[TP, int | None], done: dict[TP, int | None], owned: set[int]):
    consumer = SimpleNamespace(assignment=lambda: set(highwaters), highwater=highwaters.get,
                               commit_point=done.get)
    pipeline = SimpleNamespace(engine=SimpleNamespace(owns=lambda p: p in owned))
    return SimpleNamespace(consumer=consumer), pipeline


def test_behind_by_more_than_a_batch_on_an_owned_partition_is_catching_up():
    p0, p1 = TP(EVENTS, 0), TP(EVENTS, 1)
    app, pipeline = worker({p0: 10_000, p1: 5_000}, {p0: 9_000, p1: 2_999}, {0, 1})
    assert catching_up(app, pipeline, EVENTS, records=2000)  # p1: 2,001 to take
    app, pipeline = worker({p0: 10_000, p1: 5_000}, {p0: 9_000, p1: 3_000}, {0, 1})
    assert not catching_up(app, pipeline, EVENTS, records=2000)  # a batch or less everywhere: keeping up


def test_nothing_committed_yet_counts_from_the_start_and_an_unknown_end_counts_as_not_behind():
    p0 = TP(EVENTS, 0)
    app, pipeline = worker({p0: 2_001}, {p0: None}, {0})
    assert catching_up(app, pipeline, EVENTS, records=2000)
    app, pipeline = worker({p0: None}, {p0: None}, {0})  # no fetch answered yet
    assert not catching_up(app, pipeline, EVENTS, records=2000)


def test_other_topics_and_partitions_not_owned_do_not_count():
    changelog, revoked = TP("tierstream-users-changelog", 0), TP(EVENTS, 3)
    app, pipeline = worker({changelog: 10**6, revoked: 10**6}, {changelog: 0, revoked: 0}, {0})
    assert not catching_up(app, pipeline, EVENTS, records=2000)
