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


def test_compaction_is_amortised_not_a_scan_per_call():
    idx = DueIndex()
    idx.reset({0})
    scans = []

    def due(user):
        scans.append(user)
        return 10**9  # every entry below is stale

    for t in range(DueIndex.COMPACT_FLOOR):
        idx.schedule(0, t, "u")
    idx.maybe_compact(0, due)
    assert scans == []  # at the floor: no scan
    idx.schedule(0, 1, "u")
    idx.maybe_compact(0, due)
    assert len(scans) == DueIndex.COMPACT_FLOOR + 1 and len(idx) == 0
    scans.clear()
    for _ in range(10):
        idx.schedule(0, 2, "u")
        idx.maybe_compact(0, due)
    assert scans == []  # below the next threshold: no scan per call
