from state.due_index import DueIndex


def test_pops_only_due_and_current_entries_in_time_order():
    idx = DueIndex()
    idx.reset({0, 1})
    due = {"a": 30, "b": 10, "c": 20}
    for user, t in due.items():
        idx.schedule(0, t, user)
    idx.schedule(0, 5, "a")  # stale: a is due at 30 now
    idx.schedule(1, 1, "z")
    assert list(idx.pop_due(0, 25, due.get)) == [(10, "b"), (20, "c")]
    assert list(idx.pop_due(0, 100, due.get)) == [(30, "a")]


def test_unowned_partitions_are_never_swept():
    idx = DueIndex()
    idx.reset({1})
    idx.schedule(1, 1, "x")
    idx.reset({2})  # partition 1 was revoked
    assert not idx.owns(1) and list(idx.pop_due(1, 10, lambda u: 1)) == []


def test_compaction_drops_stale_entries():
    idx = DueIndex()
    idx.reset({0})
    for t in range(100):
        idx.schedule(0, t, "u")
    idx.compact(0, lambda u: 99)
    assert len(idx) == 1
