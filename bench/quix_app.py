"""What a user would write instead: a Quix Streams application doing the
per-user RFM work tierstream does on each event, as bench.run's baseline
(section q). Optional: `pip install .[bench]`.

Per user, in Quix's RocksDB-backed state (with its changelog topic, as
tierstream's table has one): the order times of the last 365 days, net
revenue in them, the last order, the first event. Each event updates
them; R, F and M are scored with the shipped fixed thresholds and the
shipped tier rules pick the tier; a record goes out when the tier changes.
What it does not do, and tierstream does: wake silent users by timers
(dormancy, churn alerts), lifecycle stages, dead letters, idempotence by
event id, Redis, metrics. `tiers_offline` is the same logic over a list,
to check the application's output.

    BENCH_BROKER=127.0.0.1:9092 BENCH_TOPIC=t BENCH_OUT=t-out python -m bench.quix_app
"""

from __future__ import annotations

import os
from collections.abc import Iterable

DAY_MS = 86_400_000
WINDOW_MS = 365 * DAY_MS
# The shipped fixed thresholds (README, Rules): score 5 first.
RECENCY_DAYS = (7, 30, 90, 180)
FREQUENCY = (10, 5, 3, 2)
MONETARY = (2000.0, 1000.0, 500.0, 100.0)


def _score_at_least(value: float, limits: tuple) -> int:
    for n, limit in enumerate(limits):
        if value >= limit:
            return 5 - n
    return 1


def tier(state: dict, now: int) -> str:
    last = state["last_order"]
    if last is None:
        return "dormant" if now - state["first_seen"] >= 180 * DAY_MS else "low_value"
    days = (now - last) / DAY_MS
    if days >= 180:
        return "dormant"
    r = 5 - next((n for n, limit in enumerate(RECENCY_DAYS) if days <= limit), 4)
    f = _score_at_least(sum(1 for _, _, is_order in state["moves"] if is_order), FREQUENCY)
    m = _score_at_least(sum(amount for _, amount, _ in state["moves"]), MONETARY)
    if r >= 3 and f >= 4 and m >= 4:
        return "high_value"
    if r >= 4 and state["lifetime_orders"] in (1, 2):
        return "potential"
    return "mid_value" if r + f + m >= 8 else "low_value"


def step(state: dict | None, event: dict) -> tuple[dict, str | None]:
    """The user's new state, and the new tier if it changed. `moves`: the
    orders and refunds of the last 365 days, [ts, net amount, is an order]."""
    ts = event["ts"]
    if state is None:
        state = {"moves": [], "last_order": None, "first_seen": ts, "lifetime_orders": 0, "tier": None}
    if event["type"] == "order":
        state["moves"].append([ts, event.get("amount", 0.0), True])
        state["last_order"] = max(ts, state["last_order"] or ts)
        state["lifetime_orders"] += 1
    elif event["type"] == "refund":
        state["moves"].append([ts, -event.get("amount", 0.0), False])
    state["moves"] = [move for move in state["moves"] if move[0] > ts - WINDOW_MS]
    new = tier(state, ts)
    changed = new if new != state["tier"] else None
    state["tier"] = new
    return state, changed


def tiers_offline(events: Iterable[dict]) -> list[tuple[str, str]]:
    """(user, tier) records the application publishes, computed in a loop."""
    states: dict[str, dict] = {}
    out = []
    for event in events:
        states[event["user_id"]], changed = step(states.get(event["user_id"]), event)
        if changed:
            out.append((event["user_id"], changed))
    return out


def main() -> None:
    from quixstreams import Application, State

    app = Application(os.environ["BENCH_BROKER"], consumer_group=os.environ.get("BENCH_GROUP", "bench-quix"),
                      auto_offset_reset="earliest", state_dir=os.environ.get("BENCH_STATE_DIR", "quix-state"),
                      loglevel="WARNING")
    source = app.topic(os.environ["BENCH_TOPIC"], value_deserializer="json")
    out = app.topic(os.environ["BENCH_OUT"], value_serializer="json")

    def on_event(event: dict, state: State) -> dict | None:
        new_state, changed = step(state.get("u"), event)
        state.set("u", new_state)
        return {"user_id": event["user_id"], "tier": changed, "ts": event["ts"]} if changed else None

    sdf = app.dataframe(source).apply(on_event, stateful=True).filter(lambda row: row is not None)
    sdf.to_topic(out)
    app.run()


if __name__ == "__main__":
    main()
