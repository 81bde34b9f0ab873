"""`tierstream rules preview NEW.toml`: every user under the rules in force
and under NEW, at the same event time, from the users table's changelog;
counts, the flow matrix and the campaigns that would fire (state.preview).
Publishes nothing."""

from __future__ import annotations

import sys
import time
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from cli.io import collector_paused, decode_states, read_population, read_users_changelog
from state.preview import preview
from state.rules import Rules
from stream.codecs import iso
from stream.settings import Settings


async def run_preview(settings: Settings, old: Rules, new: Rules, at_ms: int | None) -> dict[str, Any]:
    started = time.monotonic()
    latest = await read_users_changelog(settings)
    states = decode_states(latest.items())
    read_s = time.monotonic() - started
    seen = [s.last_seen_ms for _, s in states if s.has_applied]
    if at_ms is None:
        # The latest event time any user's state has seen: no state is
        # ahead of it, and a caught-up worker has decided everything due by it.
        at_ms = max(seen, default=0)
    elif seen and max(seen) > at_ms:
        raise ValueError(f"{sum(1 for t in seen if t > at_ms)} users have events after {iso(at_ms)}; "
                         "a preview evaluates users as they stand now: leave --at out, or give a later time")
    if old.scores.from_population:
        old, _ = await read_population(settings, old)
    if new.scores.from_population:
        new, _ = await read_population(settings, new)  # the same reports, cut as the new rules say
    with collector_paused():
        result = preview(states, at_ms, old, new).doc(old, new)
    result["seconds"] = {"read": round(read_s, 2), "total": round(time.monotonic() - started, 2)}
    return result


async def save(settings: Settings, doc: dict[str, Any], by: str, source: str) -> None:
    """Keep the preview in Redis for the API (store.previews)."""
    from store.previews import PreviewStore
    from stream.connection import redis_access

    redis = redis_access(settings).client()
    try:
        await PreviewStore(redis, settings.redis_prefix).save(
            {**doc, "saved_by": by, "saved_at_ms": int(time.time() * 1000), "rules_source": source})
    finally:
        await redis.aclose()


def render(doc: dict[str, Any], fmt: str, console: Console) -> None:
    if fmt == "json":
        sys.stdout.write(orjson.dumps(doc).decode() + "\n")
        return
    console.print(f"{doc['users']:,} users at {iso(doc['at_ms'])}: rules version {doc['old_version']} in force → "
                  f"{doc['new_version']} previewed; {doc['tier_moves']:,} would change tier and "
                  f"{doc['stage_moves']:,} stage. Nothing was published.")
    for kind in ("tiers", "stages"):
        table = Table(title=f"{kind}: members now and under the new rules", header_style="bold")
        for title in (kind[:-1], "now", "new", "change"):
            table.add_column(title, justify="left" if title == kind[:-1] else "right")
        for name, c in doc[kind].items():
            table.add_row(name, f"{c['old']:,}", f"{c['new']:,}", f"{c['new'] - c['old']:+,}")
        console.print(table)
    targets = sorted({f["to"] for f in doc["flows"]})
    matrix = Table(title="Tier flows: now (rows) → under the new rules (columns)", header_style="bold")
    matrix.add_column("now")
    for t in targets:
        matrix.add_column(t, justify="right")
    for src, row in doc["matrix"].items():
        matrix.add_row(src, *(f"{row.get(t, 0):,}" for t in targets))
    console.print(matrix)
    if doc["campaigns"]:
        table = Table(title="Campaigns whose trigger the moves would meet", header_style="bold")
        for title in ("campaign", "triggered", "eligible now"):
            table.add_column(title, justify="left" if title == "campaign" else "right")
        for name, c in doc["campaigns"].items():
            table.add_row(name, f"{c['triggered']:,}", f"{c['eligible']:,}")
        console.print(table)
    console.print(f"[dim]read the users in {doc['seconds']['read']} s, {doc['seconds']['total']} s in all[/dim]")
