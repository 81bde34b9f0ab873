"""`tierstream replay FILE`: feed a history into tierstream.events in event-time order.

The file is never loaded whole: rows are read as a stream, sorted in chunks
that are spilled to temporary files, and merged back (an external merge
sort), so memory stays bounded by the chunk size whatever the file size.

JSON lines are taken as they are (the event contract). CSV rows are mapped
to the contract with --map (e.g. user_id=CustomerID,ts=InvoiceDate,
amount=Total); rows without a type become --type (default: order), and a
negative amount makes an order row a refund of that amount. Rows whose time
cannot be read are still sent, last, so the worker dead-letters them with
the reason instead of them vanishing here.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import heapq
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from stream import topics
from stream.admin import ensure_topics
from stream.contract import parse_ts
from stream.connection import kafka_access
from stream.settings import Settings

CONTRACT_FIELDS = ("event_id", "user_id", "type", "ts", "amount", "order_id")


class ReplayError(ValueError):
    """The replay cannot start; the message says what to fix."""


@dataclass(frozen=True)
class CsvMapping:
    columns: dict[str, str]  # contract field -> CSV column
    default_type: str = "order"
    tz: str = "UTC"
    ts_format: str | None = None

    @classmethod
    def parse(cls, spec: str, **kwargs: Any) -> CsvMapping:
        columns = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            field, sep, column = part.partition("=")
            if not sep or not column:
                raise ReplayError(f"--map entry {part!r} must look like field=Column")
            if field not in CONTRACT_FIELDS:
                raise ReplayError(f"--map field {field!r} is not one of {', '.join(CONTRACT_FIELDS)}")
            columns[field] = column
        for needed in ("user_id", "ts"):
            if needed not in columns:
                raise ReplayError(f"--map must name the column for {needed}")
        return cls(columns, **kwargs)


def parse_time_arg(text: str) -> int:
    """An --until/--as-of value: epoch milliseconds or ISO-8601 with offset."""
    try:
        return parse_ts(int(text) if text.lstrip("-").isdigit() else text)
    except ValueError as exc:
        raise ReplayError(str(exc)) from exc


def _csv_time(value: str, mapping: CsvMapping) -> int:
    value = value.strip()
    if value.lstrip("-").isdigit():
        return int(value)
    if mapping.ts_format:
        parsed = datetime.strptime(value, mapping.ts_format)
    else:
        parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=ZoneInfo(mapping.tz))
    return int(parsed.timestamp() * 1000)


def _csv_rows(path: Path, mapping: CsvMapping) -> Iterator[tuple[int | None, bytes, bytes | None]]:
    cols = mapping.columns
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in cols.values() if c not in (reader.fieldnames or [])]
        if missing:
            raise ReplayError(f"{path}: no column(s) {missing}; the header has {reader.fieldnames}")
        for number, row in enumerate(reader, start=2):
            body: dict[str, Any] = {field: row[column] for field, column in cols.items()}
            body.setdefault("type", mapping.default_type)
            # A stable id when the file has none: the same row gives the same
            # id on every replay, so a second replay is recognised as such.
            raw_row = "\x1f".join(row.get(k) or "" for k in reader.fieldnames or [])
            body.setdefault("event_id", hashlib.blake2b(f"{number}\x1e{raw_row}".encode(), digest_size=10).hexdigest())
            ts: int | None
            try:
                ts = _csv_time(body["ts"], mapping)
                body["ts"] = ts
            except (ValueError, TypeError):
                ts = None
            if "amount" in body:
                try:
                    amount = Decimal(str(body["amount"]).strip())
                    if amount < 0 and body["type"] == "order":
                        body["type"], amount = "refund", -amount
                    body["amount"] = str(amount)
                except InvalidOperation:
                    pass  # sent as is: the worker dead-letters it with the reason
            if not body.get("order_id"):
                body.pop("order_id", None)
            key = str(body.get("user_id") or "").encode() or None
            yield ts, orjson.dumps(body), key


def _jsonl_rows(path: Path) -> Iterator[tuple[int | None, bytes, bytes | None]]:
    with path.open("rb") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            ts: int | None = None
            key: bytes | None = None
            try:
                body = orjson.loads(line)
                ts = parse_ts(body["ts"])
                key = body["user_id"].encode()
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                pass
            yield ts, line, key


def rows(path: Path, mapping: CsvMapping | None) -> Iterator[tuple[int | None, bytes, bytes | None]]:
    if mapping is not None or path.suffix.lower() == ".csv":
        if mapping is None:
            raise ReplayError(f"{path} is CSV: say which columns are which with --map user_id=...,ts=...")
        return _csv_rows(path, mapping)
    return _jsonl_rows(path)


@dataclass
class Sorted:
    """Rows in event-time order (ties in file order), plus what could not be timed."""

    chunks: list[Path]
    untimed: Path
    count: int
    untimed_count: int
    skipped_after_until: int

    def __iter__(self) -> Iterator[tuple[bytes, bytes | None]]:
        handles = [p.open("rb") for p in self.chunks]
        try:
            merged = heapq.merge(*(map(orjson.loads, h) for h in handles))
            for _ts, _seq, key, value in merged:
                yield value.encode(), (key.encode() if key is not None else None)
            with self.untimed.open("rb") as h:
                for line in h:
                    _, _, key, value = orjson.loads(line)
                    yield value.encode(), (key.encode() if key is not None else None)
        finally:
            for h in handles:
                h.close()


def sort_by_event_time(
    source: Iterator[tuple[int | None, bytes, bytes | None]], workdir: Path, *, until_ms: int | None,
    chunk_rows: int = 200_000,
) -> Sorted:
    chunks: list[Path] = []
    untimed = workdir / "untimed.jsonl"
    buffer: list[tuple[int, int, str | None, str]] = []
    count = untimed_count = skipped = 0

    def spill() -> None:
        buffer.sort()
        path = workdir / f"chunk-{len(chunks):05d}.jsonl"
        with path.open("wb") as out:
            for row in buffer:
                out.write(orjson.dumps(row) + b"\n")
        chunks.append(path)
        buffer.clear()

    with untimed.open("wb") as untimed_out:
        for seq, (ts, value, key) in enumerate(source):
            text_key = key.decode(errors="replace") if key is not None else None
            if ts is None:
                untimed_out.write(orjson.dumps([0, seq, text_key, value.decode(errors="replace")]) + b"\n")
                untimed_count += 1
                continue
            if until_ms is not None and ts > until_ms:
                skipped += 1
                continue
            buffer.append((ts, seq, text_key, value.decode(errors="replace")))
            count += 1
            if len(buffer) >= chunk_rows:
                spill()
    if buffer:
        spill()
    return Sorted(chunks, untimed, count, untimed_count, skipped)


async def send_all(settings: Settings, ordered: Sorted, *, rate: float | None, progress: bool) -> float:
    """Produce in order; returns the seconds it took."""
    kafka = kafka_access(settings)
    await ensure_topics(kafka, settings.partitions)
    producer = kafka.producer(linger_ms=5, max_batch_size=1 << 20, acks="all")
    await producer.start()
    total = ordered.count + ordered.untimed_count
    started = time.perf_counter()
    bar = Progress(TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   disable=not progress, transient=False)
    try:
        with bar:
            task = bar.add_task("replay", total=total)
            pending = []
            for n, (value, key) in enumerate(ordered, start=1):
                if rate:
                    delay = started + n / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                pending.append(await producer.send(topics.EVENTS, value, key=key))
                if len(pending) >= 5000:
                    await asyncio.gather(*pending)
                    pending.clear()
                    bar.update(task, completed=n)
            await asyncio.gather(*pending)
            bar.update(task, completed=total)
    finally:
        await producer.stop()
    return time.perf_counter() - started


def replay(
    settings: Settings, path: Path, *, mapping: CsvMapping | None, until_ms: int | None,
    rate: float | None, progress: bool = True,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tierstream-replay-") as tmp:
        ordered = sort_by_event_time(rows(path, mapping), Path(tmp), until_ms=until_ms)
        seconds = asyncio.run(send_all(settings, ordered, rate=rate, progress=progress))
    return {
        "sent": ordered.count + ordered.untimed_count,
        "untimed": ordered.untimed_count,
        "skipped_after_until": ordered.skipped_after_until,
        "seconds": seconds,
    }


__all__ = ["CsvMapping", "ReplayError", "parse_time_arg", "replay", "rows", "sort_by_event_time"]
