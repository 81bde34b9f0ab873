"""`tierstream rules apply NEW.toml`: a new version of the rules proposed
on the config topic, in force from one event time on every worker once
every partition has reported on it (state.rollout); the command waits for
that outcome and says it. Also where the tools read the outcomes of the
roll-outs so far."""

from __future__ import annotations

import asyncio
import time

import orjson

from cli.io import rollout_outcomes as outcomes
from state.config import ConfigDocument, Published, in_force
from state.rollout import Outcome, fixed_changes
from stream import topics
from stream.config_topic import history, publish
from stream.connection import kafka_access
from stream.settings import Settings


class RolloutError(ValueError):
    """A roll-out refused before anything was published, or by the workers."""


def open_rollout(versions: list[Published], settled: dict[str, Outcome]) -> Published | None:
    """A roll-out proposed since the last version published whole that has not settled yet."""
    for v in reversed(versions):
        if not v.rollout:
            return None
        if v.key not in settled:
            return v
    return None


async def apply(settings: Settings, document: ConfigDocument, by: str, at_ms: int | None,
                wait_s: float) -> tuple[Published, Outcome | None, float]:
    """Check the proposal, publish it and wait up to `wait_s` for its
    outcome (None: still open when the wait ended; the workers settle it
    without the command); with the seconds from publishing to the outcome."""
    kafka = kafka_access(settings)
    versions = await history(kafka)
    if not versions:
        raise RolloutError("no configuration is in force yet: start a worker first (it publishes its own)")
    settled = await outcomes(settings, versions)
    still_open = open_rollout(versions, settled)
    if still_open is not None:
        raise RolloutError(f"the roll-out of version {still_open.document.version} (by {still_open.by or '?'}) "
                           "has not settled yet; one at a time (are all the workers running?)")
    current = in_force(versions, settled) or versions[-1]
    if current.document.version == document.version:
        raise RolloutError(f"version {document.version} is already in force")
    fixed = fixed_changes(current.document.rules_text, document.rules_text)
    if fixed:
        raise RolloutError("these settings change how users' states are kept, how scores are computed or how "
                           "metrics are booked, and cannot change live: " + "; ".join(fixed)
                           + ". Stop the workers, `tierstream config publish`, and replay the history "
                           "(docs/config.md)")
    rules = document.rules()
    if at_ms is not None and rules.scores.from_population and at_ms % rules.cadence_ms:
        raise RolloutError(f"with quantile scores a version comes into force on a cadence boundary "
                           f"(every {rules.scores.cadence_days} day(s) at 00:00 UTC): {at_ms} is not one")
    published = await publish(kafka, document, by, rollout=True, rollout_at_ms=at_ms)
    started = time.monotonic()
    while True:
        outcome = (await outcomes(settings, await history(kafka))).get(published.key)
        if outcome is not None or time.monotonic() >= started + wait_s:
            return published, outcome, time.monotonic() - started
        await asyncio.sleep(0.2)


async def withdraw(settings: Settings, by: str, wait_s: float) -> tuple[Published, Outcome | None]:
    """Withdraw the open roll-out: a withdrawal in every partition of the
    population topic, after whatever reports are there (state.rollout); the
    partitions that had not answered yet then never will, and it is refused.
    Partitions that all answered first settle it as they would have."""
    kafka = kafka_access(settings)
    versions = await history(kafka)
    still_open = open_rollout(versions, await outcomes(settings, versions))
    if still_open is None:
        raise RolloutError("no roll-out is open")
    producer = kafka.producer(acks="all")
    await producer.start()
    try:
        for q in range(settings.partitions):
            await producer.send_and_wait(topics.POPULATION, orjson.dumps({"withdraw": still_open.key, "q": q, "by": by}),
                                         key=b"withdraw", partition=q)
    finally:
        await producer.stop()
    started = time.monotonic()
    while True:
        outcome = (await outcomes(settings, await history(kafka))).get(still_open.key)
        if outcome is not None or time.monotonic() >= started + wait_s:
            return still_open, outcome
        await asyncio.sleep(0.2)
