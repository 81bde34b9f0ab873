"""How the score shares and the tiers come out in a shop where most
customers buy once, with equal figures scored alike (the default) and with
ties split by a hash of the user id (`split_ties = true`).

The same generated history goes through the pipeline (no I/O, its own
population reports looped back, as one process owning every partition)
with the shipped default rules, once each way; every customer is then
evaluated at the last watermark.

    python -m bench.tie_scores --customers 20000 --once 0.6
"""

from __future__ import annotations

import argparse
import random
from collections import Counter

from bench.offline_pipeline import through_pipeline
from state.evaluate import evaluate
from state.model import DAY_MS
from state.rules import parse_rules, population_rules_text

START_MS = 1_704_067_200_000  # 2024-01-01


def shop(customers: int, once: float, days: int = 270, seed: int = 5) -> list[dict]:
    """Signups spread over `days`; a share `once` of customers orders once,
    the rest 2 to 12 times (fewer more likely), amounts log-normal."""
    rnd = random.Random(seed)
    bodies = []
    for c in range(customers):
        user = f"c{c:06d}"
        t = START_MS + rnd.randrange(days * DAY_MS)
        bodies.append({"event_id": f"{user}-s", "user_id": user, "type": "signup", "ts": t})
        orders = 1 if rnd.random() < once else min(12, 2 + int(rnd.expovariate(0.6)))
        for n in range(orders):
            t += rnd.randrange(DAY_MS // 24, 40 * DAY_MS)
            if t >= START_MS + days * DAY_MS:
                break
            amount = round(rnd.lognormvariate(3.5, 0.8), 2)
            bodies.append({"event_id": f"{user}-o{n}", "user_id": user, "type": "order", "ts": t, "amount": amount})
    return sorted(bodies, key=lambda b: (b["ts"], b["event_id"]))


def run(bodies: list[dict], rules_text: str) -> tuple[Counter, Counter, Counter, float]:
    p, elapsed = through_pipeline(bodies, parse_rules(rules_text))
    end = min(e.swept_to for e in p.engine.engines.values() if e.swept_to is not None)
    f_scores, tiers, f_by_orders = Counter(), Counter(), Counter()
    for user_id, state in p.store.items():
        a = evaluate(state, end, p.rules, user_id)
        tiers[a.tier] += 1
        if a.frequency > 0:
            f_scores[a.f] += 1
            f_by_orders[(a.frequency, a.f)] += 1
    return f_scores, tiers, f_by_orders, elapsed


def _shares(counts: Counter) -> str:
    total = sum(counts.values()) or 1
    return "  ".join(f"{k}: {100 * n / total:5.1f}%" for k, n in sorted(counts.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--once", type=float, default=0.6, help="share of customers who order once")
    args = parser.parse_args()
    bodies = shop(args.customers, args.once)
    print(f"{args.customers} customers, {len(bodies)} events, {args.once:.0%} ordering once")
    shipped = population_rules_text()
    assert "\nsplit_ties = false\n" in shipped
    for label, text in (("equal figures, equal scores (default)", shipped),
                        ("split_ties = true", shipped.replace("\nsplit_ties = false\n", "\nsplit_ties = true\n"))):
        f_scores, tiers, f_by_orders, elapsed = run(bodies, text)
        print(f"\n{label}  ({elapsed:.1f} s)")
        print(f"  F score shares (buyers in the window): {_shares(f_scores)}")
        one = {f: n for (orders, f), n in f_by_orders.items() if orders == 1}
        print(f"  customers with one order in the window, by F: {dict(sorted(one.items()))}")
        print(f"  tiers: {_shares(tiers)}")


if __name__ == "__main__":
    main()
