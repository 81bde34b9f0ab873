"""Periods of the operator's calendar: days, ISO weeks and months in one time zone.

Periods are numbered so that consecutive periods differ by one: a day is
the count of local days since 1970-01-01, a week the count of ISO weeks
(Monday to Sunday) since the week of 1970-01-01, a month `year * 12 +
month - 1`. Labels are what operators read: `2024-01-05`, `2024-W01`,
`2024-01`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from state.model import DAY_MS

GRAINS = ("day", "week", "month")
_EPOCH = date(1970, 1, 1)
_EPOCH_ORDINAL = _EPOCH.toordinal()
_SLOT_MS = 15 * 60_000


class Calendar:
    def __init__(self, timezone: str = "UTC") -> None:
        self.timezone = timezone
        self._zone = ZoneInfo(timezone)
        self._utc = timezone in ("UTC", "Etc/UTC")
        # Bound per instance: lru_cache on a method would share one cache
        # across calendars of different time zones.
        self._offset = lru_cache(maxsize=8192)(self._offset_of_slot)
        self.start_ms = lru_cache(maxsize=8192)(self._start_ms)  # type: ignore[method-assign]

    # -- from event time -------------------------------------------------

    def day(self, ms: int) -> int:
        if self._utc:
            return ms // DAY_MS
        # UTC offsets change on a quarter hour at most (real zones change at
        # :00, :30 or :45), so one offset per 15-minute slot is exact.
        return (ms + self._offset(ms // _SLOT_MS)) // DAY_MS

    def _offset_of_slot(self, slot: int) -> int:
        offset = datetime.fromtimestamp(slot * _SLOT_MS / 1000, self._zone).utcoffset()
        assert offset is not None
        return int(offset.total_seconds() * 1000)

    def periods(self, ms: int) -> tuple[int, int, int]:
        d = self.day(ms)
        return d, week_of_day(d), month_of_day(d)

    # -- period arithmetic ----------------------------------------------

    def _start_ms(self, grain: str, index: int) -> int:
        """UTC milliseconds of the period's first local instant."""
        first = first_day(grain, index)
        if self._utc:
            return first * DAY_MS
        local = datetime.combine(_EPOCH + timedelta(days=first), datetime.min.time(), self._zone)
        return int(local.astimezone(UTC).timestamp() * 1000)

    def start_ms(self, grain: str, index: int) -> int:  # replaced by a cached bound method in __init__
        return self._start_ms(grain, index)

    def end_ms(self, grain: str, index: int) -> int:
        """UTC milliseconds where the period ends (the next one's start)."""
        return self.start_ms(grain, index + 1)


@lru_cache(maxsize=65536)
def month_of_day(day: int) -> int:
    d = _EPOCH + timedelta(days=day)
    return d.year * 12 + d.month - 1


def week_of_day(day: int) -> int:
    # 1970-01-01 was a Thursday: day 0 is the fourth day of week 0.
    return (day + 3) // 7


def first_day(grain: str, index: int) -> int:
    if grain == "day":
        return index
    if grain == "week":
        return index * 7 - 3
    year, month = divmod(index, 12)
    return date(year, month + 1, 1).toordinal() - _EPOCH_ORDINAL


def days_in(grain: str, index: int) -> range:
    return range(first_day(grain, index), first_day(grain, index + 1))


@lru_cache(maxsize=65536)
def label(grain: str, index: int) -> str:
    if grain == "day":
        return (_EPOCH + timedelta(days=index)).isoformat()
    if grain == "week":
        monday = _EPOCH + timedelta(days=index * 7 - 3)
        year, week, _ = monday.isocalendar()
        return f"{year}-W{week:02d}"
    year, month = divmod(index, 12)
    return f"{year}-{month + 1:02d}"


def parse_label(grain: str, text: str) -> int:
    """The period index of a label, or of the period containing a date
    (`2024-01-05` names a day, its week or its month). ValueError otherwise."""
    text = text.strip()
    if grain == "week" and "-W" in text:
        year, _, week = text.partition("-W")
        monday = date.fromisocalendar(int(year), int(week), 1)
        return week_of_day(monday.toordinal() - _EPOCH_ORDINAL)
    if grain == "month" and len(text) == 7:
        year, _, month = text.partition("-")
        if not (1 <= int(month) <= 12):
            raise ValueError(f"no month {month} in {text!r}")
        return int(year) * 12 + int(month) - 1
    day = date.fromisoformat(text).toordinal() - _EPOCH_ORDINAL
    if grain == "day":
        return day
    if grain == "week":
        return week_of_day(day)
    if grain == "month":
        return month_of_day(day)
    raise ValueError(f"unknown grain {grain!r}; use one of {', '.join(GRAINS)}")
