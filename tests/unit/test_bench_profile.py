"""bench.profile's reading of py-spy's raw stacks: each stack counted once,
in the first area any of its frames belongs to."""

from bench.profile import OTHER, WAITING, area_of, by_area, table

LOOP = "BaseEventLoop._run_once (asyncio/base_events.py:1922);Handle._run (asyncio/events.py:80)"
RAW = "\n".join([
    # a step, through the population reader (short paths, as py-spy writes them)
    f"{LOOP};PopulationReader._round (agents/population.py:119);Coordinator.resume (engine/coordinator.py:10);"
    "evaluate (state/evaluate.py:239) 30",
    # the same reader publishing: the record's codec reads the assessment (state/), still publishing
    f"{LOOP};PopulationReader._round (agents/population.py:121);Publisher.publish (agents/publisher.py:93);"
    "tier_change_record (stream/codecs.py:131);Assessment.expected_orders (/work/x/state/evaluate.py:56) 12",
    # the metrics aggregator's Redis script: the aggregator's, not Redis membership's
    f"{LOOP};MetricsAggregator._round (agents/metrics_aggregator.py:143);"
    "Redis.execute_command (redis/asyncio/client.py:998) 7",
    f"{LOOP};install.<locals>.flush_to_redis (agents/wiring.py:251);redis_round (agents/wiring.py:127) 5",
    "BaseEventLoop._run_once (asyncio/base_events.py:1884);EpollSelector.select (selectors.py:468) 9",
    "_find_and_load (<frozen importlib._bootstrap>:1176);<module> (scipy/__init__.py:3) 4",
    f"{LOOP};Timeout.reschedule (asyncio/timeouts.py:71) 2",
    "process 123:\"python -m cli.main worker\";thread (0x7f) ",  # an idle thread's line: no count
    "",
])


def test_each_stack_counts_once_in_the_first_area_it_belongs_to():
    counts = by_area(RAW)
    assert counts == {"steps (engine, state)": 30, "records out (decisions, changelog, producer)": 12,
                      "operator metrics aggregation": 7, "Redis (membership, live feed)": 5, WAITING: 9,
                      "start-up (imports)": 4, OTHER: 2}
    assert area_of(["select (selectors.py:468)"]) == WAITING
    assert area_of(["EpollSelector.select (selectors.py:468)", "foo (engine/partition.py:1)"]) != WAITING


def test_the_table_gives_each_area_s_extra_and_its_share_of_the_busy_extra():
    fixed = by_area(RAW)
    shipped = by_area(RAW.replace(" 30\n", " 130\n").replace(" 9\n", " 59\n"))  # 1 s more steps, 0.5 s more waiting
    lines = table({"fixed": fixed, "shipped": shipped}, rate=100).splitlines()
    assert lines[2] == "| steps (engine, state) | 0.3 | 1.3 | +1.0 | 100% |"
    assert f"| {WAITING} | 0.1 | 0.6 | +0.5 |  |" in lines  # waiting is shown, never counted as busy
    assert lines[-1] == "| **busy, all areas but waiting** | 0.6 | 1.6 | +1.0 | 100% |"
