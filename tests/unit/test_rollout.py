"""Rules roll-outs without a broker (state.rollout, engine.partition): the
outcome every worker settles from the partitions' reports; a roll-out
through the engine re-assesses every user once, at one event time on every
partition, and what it publishes equals a batch evaluation of the states it
started from; the same records however the partitions drift, and after a
crash at any step (tests.support.quantile_shop); the audit's history."""

import copy

import orjson
import pytest

from engine.partition import PartitionEngine
from state.config import ConfigDocument, Published, config_history, in_force
from state.evaluate import evaluate
from state.model import DAY_MS
from state.rollout import RolloutBook, fixed_changes, settle_history
from state.rules import fixed_threshold_rules_text
from tests.support.quantile_shop import QUANTILE_RULES, Crash, Rollout, run_shop, small_ticket_shop, tier_changes

DORMANT_45 = QUANTILE_RULES.replace('name = "dormant"\ndays_since_order_min = 180',
                                    'name = "dormant"\ndays_since_order_min = 45')
NEW = ConfigDocument(DORMANT_45, None).rules()
OLD_VERSION = ConfigDocument(QUANTILE_RULES, None).version


@pytest.fixture(scope="module")
def shop():
    bodies = small_ticket_shop(users=800, events=8000, days=90, seed=3)
    at = (min(b["ts"] for b in bodies) // DAY_MS + 50) * DAY_MS
    return bodies, at


def key_of(changes):
    return {k: orjson.dumps(v, option=orjson.OPT_SORT_KEYS) for k, v in changes.items()}


# -- the outcome, from the reports -----------------------------------------


def test_an_asked_time_is_accepted_only_if_every_partition_is_behind_it():
    book = RolloutBook(3, cadence_ms=None)
    assert book.propose("v2@5", "v2", 1000) == []
    assert book.report("v2@5", 0, 400) == [] and book.report("v2@5", 1, 999) == []
    assert book.report("v2@5", 0, 5000) == []  # a second report of a partition (after a crash) does not count
    [o] = book.report("v2@5", 2, 10)
    assert o.accepted and o.from_ms == 1000
    book.propose("v3@6", "v3", 2000)
    book.report("v3@6", 0, 1500)
    book.report("v3@6", 1, 2000)
    [o] = book.report("v3@6", 2, 1900)
    assert not o.accepted and "partitions [1]" in o.reason and book.latest_from() == 1000
    book.propose("v4@7", "v4", 900)  # before the version in force came into force
    for p in range(3):
        out = book.report("v4@7", p, 0)
    assert not out[0].accepted and "before the version in force" in out[0].reason


def test_without_a_time_it_comes_into_force_past_every_partition_on_the_next_boundary():
    book = RolloutBook(2, cadence_ms=DAY_MS)
    book.propose("v2@1", "v2", None)
    book.report("v2@1", 0, 3 * DAY_MS + 5)
    [o] = book.report("v2@1", 1, DAY_MS)
    assert o.from_ms == 4 * DAY_MS
    [o] = RolloutBook(2, DAY_MS).propose("x@1", "x", DAY_MS + 1)
    assert not o.accepted and "cadence boundary" in o.reason


def test_proposals_settle_in_order_whatever_order_the_topics_are_read_in():
    def settle(events):
        book = RolloutBook(2, cadence_ms=None)
        for e in events:
            if e[0] == "propose":
                book.propose(e[1], e[1], e[2])
            else:
                book.report(*e[1:])
        return book.outcomes()

    # The second proposal came after the first settled; reports on either
    # may be read before its proposal (two topics side by side), the
    # proposals in their order (one partition).
    proposals = [("propose", "a", 100), ("propose", "b", 300)]
    reports = [("report", "a", 0, 50), ("report", "a", 1, 60), ("report", "b", 0, 150), ("report", "b", 1, 200)]
    orders = [proposals + reports, reports + proposals, [reports[2], reports[0], proposals[0], reports[3],
                                                         proposals[1], reports[1]]]
    outcomes = [settle(o) for o in orders]
    assert outcomes[0] == outcomes[1] == outcomes[2]
    assert outcomes[0]["a"].from_ms == 100 and outcomes[0]["b"].from_ms == 300


def test_what_cannot_change_live_is_named():
    assert fixed_changes(QUANTILE_RULES, DORMANT_45) == []
    changed = fixed_changes(QUANTILE_RULES, QUANTILE_RULES.replace("cut_points = [0.2, 0.4, 0.6, 0.8]",
                                                                   "cut_points = [0.15, 0.4, 0.6, 0.8]"))
    assert changed == ["scores.cut_points: [0.2, 0.4, 0.6, 0.8] -> [0.15, 0.4, 0.6, 0.8]"]
    assert fixed_changes(QUANTILE_RULES, QUANTILE_RULES.replace("bucket_days = 30", "bucket_days = 7"))


def test_the_history_says_what_became_of_each_roll_out():
    base = Published(ConfigDocument(QUANTILE_RULES, None), "worker", 1, offset=0)
    accepted = Published(ConfigDocument(DORMANT_45, None), "ana", 2, True, 10 * DAY_MS, offset=1)
    refused = Published(ConfigDocument(QUANTILE_RULES, None), "bo", 3, True, 12 * DAY_MS, offset=2)
    still_open = Published(ConfigDocument(DORMANT_45.replace("= 45", "= 120"), None), "cy", 4, True, None, offset=3)
    versions = [base, accepted, refused, still_open]
    for v in versions:
        assert Published.decode(v.encode()).rollout == v.rollout  # the record says it is a roll-out
    reports = [(accepted.key, p, DAY_MS) for p in range(2)] + [(refused.key, p, 15 * DAY_MS) for p in range(2)]
    settled = settle_history(versions, reports, partitions=2, cadence_ms=DAY_MS)
    history = config_history(versions, settled)
    assert [v["rollout"]["status"] for v in history[:3]] == ["open", "refused", "in_force"]
    assert history[2]["rollout"]["in_force_from_ms"] == 10 * DAY_MS and "rollout" not in history[3]
    assert "past the time asked for" in history[1]["rollout"]["reason"]
    assert in_force(versions, settled) is accepted
    # The open one's changes count from the version in force, not from the refused one.
    assert history[0]["changes"] == ["tiers.dormant.days_since_order_min: 45 -> 120"]


# -- through the engine ----------------------------------------------------


def test_a_roll_out_re_assesses_every_user_once_as_a_batch_evaluation_says(shop, monkeypatch):
    bodies, at = shop
    started: dict[str, object] = {}
    switch = PartitionEngine._switch

    def recorded(self):
        # The users as they stand when the partition switches (swept to at - 1 under the old version).
        started.update({u: copy.deepcopy(s) for u, s in self.users.items()
                        if s.src_partition == self.partition and s.has_applied})
        switch(self)

    monkeypatch.setattr(PartitionEngine, "_switch", recorded)
    run, outputs = run_shop(bodies, chunk=40, seed=1, rollout=Rollout(step=30, rules=NEW, at_ms=at))
    changes = tier_changes(outputs)
    moved = {c["user_id"]: c for c in changes.values() if c.get("reason") == "rules_changed"}
    assert len(moved) == sum(c.get("reason") == "rules_changed" for c in changes.values())  # once each
    expected = {}
    for user_id, state in started.items():
        a = evaluate(state, at, run.engine.versions[Rollout(30, NEW).key], user_id)
        if (a.tier, a.stage) != (state.tier, state.stage):
            expected[user_id] = (state.tier, a.tier, state.stage, a.stage)
    assert len(expected) > 20
    assert {u: (c["from_tier"], c["to_tier"], c["from_stage"], c["to_stage"]) for u, c in moved.items()} == expected
    assert {c["at_ms"] for c in moved.values()} == {at}
    assert all((c["rules_version"] == NEW.version) == (c["at_ms"] >= at) for c in changes.values())
    # Every user was brought to the switch: evaluated there or later, under the new version.
    assert all(s.evaluated_ms >= at for s in run.store.values() if s.has_applied and s.first_seen_ms < at)
    assert all(e.rules.version == NEW.version and not e.switches and e.hold is None
               for e in run.engine.engines.values())


def test_the_same_records_however_the_partitions_drift_and_after_a_crash_at_any_step(shop):
    bodies, at = shop
    rollout = Rollout(step=30, rules=NEW, at_ms=at)
    _, outputs = run_shop(bodies, chunk=40, seed=1, rollout=rollout)
    reference = key_of(tier_changes(outputs))
    assert any(b'"rules_changed"' in v for v in reference.values())
    _, in_order = run_shop(bodies, rollout=Rollout(step=2000, rules=NEW, at_ms=at))
    assert key_of(tier_changes(in_order)) == reference
    _, drifted = run_shop(bodies, chunk=40, seed=4, rollout=rollout)
    assert key_of(tier_changes(drifted)) == reference
    # The sweep a few users per step, events arriving between (as the worker does it, in chunks).
    run, chunked = run_shop(bodies, chunk=40, seed=1, rollout=rollout, switch_chunk=7)
    assert key_of(tier_changes(chunked)) == reference and not run.engine.switching
    # Where the switch falls in the crash run's steps: kill around it, the
    # changelog lagging the outputs by one to three steps.
    # The switch falls in step 84 of 106: kill just before it, in the steps
    # whose changelog records were lost with it, and further off.
    for crash_at in (60, 84, 85, 86, 87, 95):
        lag = 1 + crash_at % 3
        _, crashed = run_shop(bodies, chunk=40, seed=1, rollout=rollout, switch_chunk=50 if crash_at % 2 else None,
                              crash=Crash(at=crash_at, changelog_lag=lag, commit_lag=1))
        assert key_of(tier_changes(crashed)) == reference, (crash_at, lag)


def test_a_refused_roll_out_changes_nothing_and_a_default_one_switches_on_one_boundary(shop):
    bodies, at = shop
    _, plain = run_shop(bodies, chunk=40, seed=1)
    behind = (min(b["ts"] for b in bodies) // DAY_MS + 3) * DAY_MS
    run, refused = run_shop(bodies, chunk=40, seed=1, rollout=Rollout(step=60, rules=NEW, at_ms=behind))
    assert key_of(tier_changes(refused)) == key_of(tier_changes(plain))
    assert not run.engine.rollouts.outcomes()[Rollout(60, NEW).key].accepted
    dormant_20 = ConfigDocument(DORMANT_45.replace("= 45", "= 20"), None).rules()  # some move on day 44 too
    run, default = run_shop(bodies, chunk=40, seed=1, rollout=Rollout(step=80, rules=dormant_20))
    [outcome] = run.engine.rollouts.outcomes().values()
    assert outcome.from_ms % DAY_MS == 0
    reports = run.engine.rollouts.proposals[outcome.key].reports
    assert len(reports) == 4 and outcome.from_ms > max(reports.values())
    moved = [c for c in tier_changes(default).values() if c.get("reason") == "rules_changed"]
    assert moved and {c["at_ms"] for c in moved} == {outcome.from_ms}


def test_with_fixed_thresholds_too():
    old = ConfigDocument(fixed_threshold_rules_text(), None).rules()
    new = ConfigDocument(fixed_threshold_rules_text().replace("days_since_order_min = 180",
                                                             "days_since_order_min = 45"), None).rules()
    assert new.version != old.version and not old.scores.from_population
    bodies = [dict(b, amount=b["amount"] * 100) if "amount" in b else b
              for b in small_ticket_shop(users=500, events=5000, days=90, seed=9)]
    at = min(b["ts"] for b in bodies) + 50 * DAY_MS + 12345  # any time will do without cadence
    rollout = Rollout(step=20, rules=new, at_ms=at)
    _, outputs = run_shop(bodies, chunk=40, seed=2, rules=old, rollout=rollout)
    reference = key_of(tier_changes(outputs))
    moved = [c for c in tier_changes(outputs).values() if c.get("reason") == "rules_changed"]
    assert moved and {c["at_ms"] for c in moved} == {at}
    for crash_at in (60, 70, 80):
        _, crashed = run_shop(bodies, chunk=40, seed=2, rules=old, rollout=rollout,
                              crash=Crash(at=crash_at, changelog_lag=2, commit_lag=1))
        assert key_of(tier_changes(crashed)) == reference, crash_at


def test_a_withdrawal_settles_a_proposal_only_where_it_comes_before_a_report():
    book = RolloutBook(3, cadence_ms=None)
    book.propose("v2@1", "v2", None)
    book.report("v2@1", 0, 10)
    # Partitions 0 and 1 share a stream of reports: 0 answered before the withdrawal, 1 did not.
    assert book.withdraw("v2@1", {0, 1}, "ana") == []
    book.report("v2@1", 1, 20)  # after the withdrawal in its stream: does not count
    [o] = book.report("v2@1", 2, 30)
    assert not o.accepted and "withdrawn by ana" in o.reason and "[1]" in o.reason
    # Every partition answered first: the withdrawal is too late, as in every worker.
    book = RolloutBook(2, cadence_ms=None)
    book.propose("v3@2", "v3", None)
    book.report("v3@2", 0, 10)
    [o] = book.report("v3@2", 1, 20)
    assert book.withdraw("v3@2", {0, 1}, "ana") == [] and o.accepted


def test_a_partition_that_never_answers_holds_the_others_until_the_proposal_is_withdrawn():
    from tests.support.engine import EngineRun
    from tests.support.factories import raw
    from stream import topics

    old = ConfigDocument(fixed_threshold_rules_text(), None).rules()
    new = ConfigDocument(fixed_threshold_rules_text().replace("days_since_order_min = 180",
                                                             "days_since_order_min = 20"), None).rules()
    history = [(f"u{i % 9}", "order" if i % 3 else "login", i) for i in range(60)]

    def run(withdrawn: bool):
        r = EngineRun(old, partitions={0, 1})
        for user, kind, day in history[:30]:
            r.event(raw(user, kind, day, amount=40), partition=int(user[1:]) % 2)
        if withdrawn:
            c = r.coordinator
            c.enable_rollouts(3)  # a third partition, whose worker is down
            wall = r.wall
            assert c.propose("v@1", new, None, wall) == []
            for p in (0, 1):
                assert c.rollout_report("v@1", p, c.engines[p].hold, wall) == []
            assert all(c.engines[p].hold is not None for p in (0, 1))
        for user, kind, day in history[30:]:
            r.event(raw(user, kind, day, amount=40), partition=int(user[1:]) % 2)
        if withdrawn:
            assert r.coordinator.engines[0].deferred  # held: nothing decided past where they reported
            held = len(r.records(topics.TIER_CHANGES))
            [o] = r.coordinator.rollout_withdrawn("v@1", {2}, "ana", r.wall)
            assert not o.accepted and "withdrawn by ana" in o.reason
            assert not r.coordinator.engines[0].deferred and len(r.records(topics.TIER_CHANGES)) == held
            r.resume()
        return {c["change_id"]: orjson.dumps(c, option=orjson.OPT_SORT_KEYS) for c in r.records(topics.TIER_CHANGES)}

    # Withdrawn, the deferred events are taken and the run decides what it
    # would have without the proposal (the partitions' records interleave otherwise).
    plain = run(False)
    assert plain and run(True) == plain
