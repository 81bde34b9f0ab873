"""The partition engine driven directly (tests.support.engine): no adapter,
no Kafka, no Redis. Watermarks and silent users, the live and replay clocks,
redelivery, ownership, recovery re-deriving what a crash lost, and what the
effects hold. Quantile periods and crash sweeps at many moments:
tests/unit/test_quantiles.py; every output of a two-year history:
tests/unit/test_golden.py."""

from datetime import datetime

from engine.clock import LiveClock, ReplayClock, clock_for
from engine.partition import Taken, TooOld
from state.model import DAY_MS
from stream import topics
from stream.codecs import decode_state, encode_state
from tests.support.engine import EngineRun
from tests.support.factories import T0, raw
from tests.support.fixed_rules import fixed_rules

RULES = fixed_rules()


def alerts(run):
    return [(a["user_id"], a["level"]) for a in run.records(topics.CHURN_ALERTS)]


def test_the_clocks_differ_only_in_whether_the_wall_clock_moves_time():
    assert ReplayClock().latest(5, 100) == 5 and LiveClock().latest(5, 100) == 100
    assert LiveClock().latest(500, 100) == 500
    assert isinstance(clock_for("live"), LiveClock) and not clock_for("replay").live
    try:
        clock_for("lunar")
    except ValueError as exc:
        assert "live or replay" in str(exc)
    else:
        raise AssertionError("an unknown clock must be refused")


def test_redelivered_offsets_are_skipped_but_new_offsets_apply():
    run = EngineRun(RULES)
    body = raw("u1", "login", 1)
    assert run.event(body, offset=10) is Taken.APPLIED
    version = run.users["u1"].version
    assert run.event(raw("u1", "login", 2), offset=10) is Taken.REDELIVERED  # after a restart
    assert run.event(body, offset=11) is Taken.DUPLICATE  # same event id again: a producer duplicate
    assert run.users["u1"].version == version


def test_silent_users_are_aged_by_other_users_events_in_event_time():
    run = EngineRun(RULES)
    run.event(raw("quiet", "order", 0, amount=20), partition=1)
    run.event(raw("busy", "login", 45), partition=1)
    run.event(raw("busy", "login", 90), partition=1)
    assert ("quiet", "at_risk") in alerts(run) and ("quiet", "churned") in alerts(run)
    # the sweep's states are written to the user's own partition's changelog
    assert {p for p, _, _ in run.committed} == {1}


def test_the_live_clock_ages_users_without_any_event():
    run = EngineRun(RULES, clock="live", wall=T0)
    run.event(raw("quiet", "login", 0), partition=0)
    run.tick(T0 + 31 * DAY_MS)
    assert alerts(run) == [("quiet", "at_risk")]


def test_the_replay_clock_never_moves_on_the_wall_clock_alone():
    run = EngineRun(RULES, clock="replay", wall=T0)
    run.event(raw("quiet", "login", 0), partition=0)
    run.tick(T0 + 400 * DAY_MS)
    assert alerts(run) == []


def test_revoked_partitions_are_not_swept():
    run = EngineRun(RULES, clock="live", wall=T0)
    run.event(raw("quiet", "login", 0), partition=0)
    run.coordinator.on_partitions_revoked({0})
    run.tick(T0 + 100 * DAY_MS)
    assert alerts(run) == [] and not run.coordinator.owns(0) and run.coordinator.owns(1)


def test_a_rebalance_rebuilds_the_due_index_from_the_table():
    run = EngineRun(RULES, clock="live", wall=T0)
    run.event(raw("quiet", "login", 0), partition=1)
    run.coordinator.on_active_partitions({1})
    assert run.coordinator.owned() == [1]
    run.tick(T0 + 100 * DAY_MS)
    assert [level for _, level in alerts(run)] == ["at_risk", "churned"]


def _recovered(states: dict, committed=None) -> EngineRun:
    """A new process over a copy of `states` (as the changelog gave them back)."""
    users = {u: decode_state(encode_state(s)) for u, s in states.items()}
    return EngineRun(RULES, users=users, partitions={0}, committed=committed)


def test_recovery_sweeps_users_the_recovered_watermark_has_passed():
    """A crash after a sweep's decisions were acked but before its changelog
    records were: the recovered state is behind the recovered watermark, and
    the same decisions come again at once, with the same ids."""
    run = EngineRun(RULES)
    run.event(raw("quiet", "login", 0))
    run.event(raw("clock", "login", 100))
    published = run.records(topics.CHURN_ALERTS)
    assert [a["level"] for a in published] == ["at_risk", "churned"]
    before_sweep = EngineRun(RULES)
    before_sweep.event(raw("quiet", "login", 0))
    # "clock" as after its event, "quiet" as before the sweep that alerted
    again = _recovered({"clock": run.users["clock"], "quiet": before_sweep.users["quiet"]})
    assert [a["alert_id"] for a in again.records(topics.CHURN_ALERTS)] == [a["alert_id"] for a in published]


def test_a_recovered_watermark_counts_only_states_behind_the_committed_input():
    """The worker died writing a batch's changelog records: "clock"'s went
    out, "quiet"'s did not, and the batch's input was not committed. Its
    watermark must not come back from "clock" (that would sweep "quiet"
    ahead of the events about to be re-read); the re-read event moves it,
    in order, and the same decisions come, with the same ids."""
    run = EngineRun(RULES)
    quiet_event, clock_event = raw("quiet", "login", 0), raw("clock", "login", 100)
    run.event(quiet_event, offset=0)
    run.event(clock_event, offset=1)
    published = [a["alert_id"] for a in run.records(topics.CHURN_ALERTS)]
    assert len(published) == 2
    before_sweep = EngineRun(RULES)
    before_sweep.event(quiet_event, offset=0)
    states = {"clock": run.users["clock"], "quiet": before_sweep.users["quiet"]}

    ahead = _recovered(states, committed={0: 1})  # "clock"'s event is to be read again
    assert ahead.records(topics.CHURN_ALERTS) == []  # nothing swept ahead of it
    assert ahead.event(clock_event, offset=1) is Taken.REDELIVERED  # already applied, but it moves the clock
    assert [a["alert_id"] for a in ahead.records(topics.CHURN_ALERTS)] == published
    behind = _recovered(states, committed={0: 2})  # committed past it: the watermark comes back at once
    assert [a["alert_id"] for a in behind.records(topics.CHURN_ALERTS)] == published


def _iso_ms(text):
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def test_a_1990s_history_in_order_and_a_new_customers_old_backfill_are_taken():
    run = EngineRun(RULES)
    start = _iso_ms("1991-03-01T00:00:00+00:00")
    for day in range(0, 3000, 97):  # eight years of one customer, in order
        run.event({"event_id": f"o{day}", "user_id": "old", "type": "order", "ts": start + day * DAY_MS, "amount": 20})
    # Another customer's whole history, sent after, twelve years behind the
    # watermark: a per-customer backfill, not a bug (they have no first event yet).
    taken = [run.event({"event_id": "n1", "user_id": "new", "type": "signup", "ts": start - 4000 * DAY_MS}),
             run.event({"event_id": "n2", "user_id": "new", "type": "order", "ts": start - 3990 * DAY_MS,
                        "amount": 20})]
    assert taken == [Taken.APPLIED, Taken.APPLIED]
    assert run.users["old"].lifetime_orders + len(run.users["old"].held) == 31


def test_an_implausibly_old_event_for_a_known_customer_is_refused_with_its_reason():
    run = EngineRun(RULES)
    run.event(raw("u1", "signup", 1))
    run.event(raw("u1", "order", 30, amount=50))
    taken = run.event({"event_id": "bad", "user_id": "u1", "type": "login", "ts": "1970-01-02T00:00:00Z"})
    assert isinstance(taken, TooOld) and "TIERSTREAM_MAX_EVENT_AGE_DAYS" in taken


def test_a_committed_state_is_the_state_as_it_stood_when_committed():
    """The changelog record is encoded at the commit: a later step of the
    same chunk that changes the user again does not rewrite the earlier
    record (its own commit writes its own)."""
    run = EngineRun(RULES)
    run.event(raw("ann", "order", 0, amount=20))
    [(_, _, first)] = [c for c in run.committed if c[1] == "ann"]
    run.event(raw("ann", "order", 1, amount=900))
    versions = [decode_state(b).version for _, u, b in run.committed if u == "ann"]
    assert decode_state(first).version == versions[0] < versions[-1]


def test_a_partition_waiting_for_cut_points_defers_its_events_and_holds_its_commits_before_them():
    """Quantile scores: partition 0 reaches a day boundary before partition 1
    has reported on it, so its watermark is held there. What comes for it
    meanwhile waits, in order, untouched, and its input may not be committed
    past the first such event; once partition 1 reports and the cuts settle,
    the events are taken as if they had come then."""
    from state.rules import parse_rules, population_rules_text

    rules = parse_rules(population_rules_text())
    run = EngineRun(rules, lateness_ms=0)
    run.coordinator.loop_back(2)
    zero = run.partition(0)
    run.event(raw("a", "order", 0.5, amount=20), partition=0, offset=0)
    run.event(raw("b", "order", 0.5, amount=20), partition=1, offset=0)
    run.resume()  # both reported their first watermark: the first cuts are settled
    assert not zero.deferred and run.users["a"].lifetime_orders == 1
    # Two boundaries on: the cuts in force from day 2 need every partition's
    # report on day 1, and partition 1 has not got that far.
    assert run.event(raw("a", "login", 2.5), partition=0, offset=1) is Taken.APPLIED
    assert zero.waiting is not None and zero.watermark(run.wall) < zero.raw_watermark(run.wall)
    late = raw("a", "order", 0.6, amount=30)  # later than the lateness, behind the held watermark too
    assert run.event(late, partition=0, offset=2) is Taken.DEFERRED
    assert run.event(raw("c", "signup", 2.6), partition=0, offset=3) is Taken.DEFERRED
    assert zero.commit_limit() == 2 and run.coordinator.commit_limit(0) == 2
    assert run.users["a"].lifetime_orders == 1 and "c" not in run.users
    # How far its decisions trail what it has read: the deferred signup's
    # time (2.6 days) against the held watermark (the end of day 1 or 2).
    assert zero.behind_ms(run.wall) == T0 + int(2.6 * DAY_MS) - zero.watermark(run.wall) > 0
    assert run.coordinator.behind(run.wall)[0] == zero.behind_ms(run.wall)
    assert not zero.follow(10 * DAY_MS)  # its own events will move it: never idle while it defers
    run.event(raw("b", "login", 2.5), partition=1, offset=1)  # partition 1 reports: the cuts settle
    run.resume()
    assert not zero.deferred
    # Taken, but their decisions and changelog records are not with the
    # producer yet: a commit now (Faust flushes the producer after choosing
    # the offsets) could pass events no changelog record holds.
    assert zero.commit_limit() == 2
    sealed = run.coordinator.seal_unsent()  # the publisher drains their records
    assert sealed == {0: 2} and zero.commit_limit() == 2 and run.coordinator.seal_unsent() == {}
    run.coordinator.sent(sealed)  # ... and hands the last of them to the producer
    assert zero.commit_limit() is None
    assert run.users["a"].lifetime_orders == 2 and "c" in run.users
    assert zero.behind_ms(run.wall) == 0  # every event it read is decided on
    assert [(t.partition, t.user_id, t.outcome) for t in run.later] == [(0, "a", Taken.APPLIED), (0, "c", Taken.APPLIED)]
    changes = [c for c in run.records(topics.TIER_CHANGES) if c["user_id"] == "a"]
    assert changes and changes[-1]["correction"]  # judged late against the watermark it then had
