"""The golden run (tests.support.golden): a fixed two-year history through
the worker's per-partition code gives, record for record, what it gave when
tests/golden/ was written, with and without a crash on the way. A refactor
changes nothing here; a change of behaviour on purpose rewrites the file in
its own commit and says why."""

import orjson
import pytest

from tests.support import golden


@pytest.mark.parametrize("run", sorted(golden.RUNS))
def test_the_golden_history_gives_the_recorded_outputs(run):
    got = orjson.loads(orjson.dumps(golden.outcome(golden.RUNS[run]), option=orjson.OPT_SORT_KEYS))
    want = golden.expected()
    # Not vacuous: the history exercises every kind of output.
    assert {len(want["records"][t]) > 0 for t in want["records"]} == {True}
    assert len(want["records"]) == 6 and want["closed_periods"] and want["snapshot"]
    assert golden.differences(want, got) == []
