"""The cost statement contract: what a producer may send to `tierstream.costs`.

A statement says what acquiring customers through one channel cost in one
period: `{"channel": "paid_search", "period": "2024-03", "amount": 1250.00}`.
The period is a day (`2024-03-05`), an ISO week (`2024-W10`) or a month
(`2024-03`) of the metrics' time zone. (channel, period) is the statement's
key: a later statement for the same key replaces the earlier one, so a
correction is simply the statement sent again with the right amount, and
sending the same statement twice changes nothing. Statements are not a
user's events: they have a topic of their own, read by the metrics
aggregator (agents.metrics_aggregator), never by the users' agents.

`parse_statement` never raises on bad input: a bad statement is a dead
letter with its reason, like a bad event.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator

from state.acquisition_report import grain_of
from state.calendar import parse_label
from stream.contract import Rejection, printable_name, field_errors, json_object

MAX_STATEMENT_BYTES = 1024


class InputStatement(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    channel: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    period: StrictStr
    amount: Decimal

    @field_validator("channel")
    @classmethod
    def _printable(cls, v: str) -> str:
        return printable_name(v, "channel")

    @field_validator("amount", mode="before")
    @classmethod
    def _amount_is_number(cls, v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            raise ValueError("amount must be a number or a decimal string")
        return v

    @field_validator("amount")
    @classmethod
    def _amount_sane(cls, v: Decimal) -> Decimal:
        if not v.is_finite() or v < 0:
            raise ValueError("amount must be a finite decimal >= 0 (send 0 to withdraw a statement)")
        if v > Decimal("1e12"):
            raise ValueError("amount is absurdly large (> 1e12)")
        return v


@dataclass(slots=True, frozen=True)
class CostStatement:
    channel: str
    grain: str  # day, week or month
    period: str  # its label, as sent
    cents: int

    @property
    def key(self) -> str:
        """What a later statement replaces this one by (the channel last:
        any printable channel fits)."""
        return f"{self.period}|{self.channel}"


def parse_statement(payload: bytes) -> CostStatement | Rejection:
    raw = json_object(payload, MAX_STATEMENT_BYTES, "statement")
    if isinstance(raw, Rejection):
        return raw
    try:
        s = InputStatement.model_validate(raw)
    except ValidationError as exc:
        return Rejection("invalid_cost", field_errors(exc))
    grain = grain_of(s.period)
    try:
        if grain is None:
            raise ValueError
        parse_label(grain, s.period)
    except ValueError:
        return Rejection("invalid_cost", [{"field": "period", "error": f"{s.period!r} is not a day (2024-03-05), "
                                           "an ISO week (2024-W10) or a month (2024-03)"}])
    cents = int((s.amount * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    return CostStatement(s.channel, grain, s.period, cents)


def encode_statement(channel: str, period: str, amount: Decimal | float | str) -> bytes:
    return orjson.dumps({"channel": channel, "period": period, "amount": str(amount)})


__all__ = ["CostStatement", "InputStatement", "encode_statement", "parse_statement"]
