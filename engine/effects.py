"""What the engine asks the adapters to do, as typed records (plain slotted
dataclasses: a frozen one costs a setattr call per field, and one is made
per committed state).

The engine appends to one `Effects` per process as it goes; the publisher
drains it when it hands a chunk's records to Kafka (agents.publisher): the
decisions and reports first, the states that made them after those are
acknowledged. A state is encoded the moment it is committed, as it then
stands: a later step in the same chunk may change the object again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from state.evaluate import Assessment
from state.kpis import Step
from state.model import UserState
from state.steps import Decision
from stream.codecs import encode_state


@dataclass(slots=True)
class Committed:
    """A user's new state (for the users table's changelog) and the
    decisions the step that made it took, in order."""

    partition: int
    user_id: str
    state: bytes  # stream.codecs.encode_state, at commit
    src_offset: int
    decisions: list[Decision]


@dataclass(slots=True)
class Reported:
    """A partition's population report (state.quantiles), for the
    population topic."""

    partition: int
    doc: dict


@dataclass(slots=True)
class Facts:
    """A partition's metric facts since its last record, and the watermark
    it was swept to (-1: none yet), below which every on-time step is in
    this record or an earlier one."""

    partition: int
    watermark: int
    steps: list[Step]


@dataclass(slots=True)
class TakenLater:
    """What became of an event the partition deferred (engine.partition.Taken
    or TooOld), with the adapter's message it came in."""

    partition: int
    source: Any
    user_id: str
    outcome: Any


@dataclass(slots=True)
class Effects:
    committed: list[Committed] = field(default_factory=list)
    reported: list[Reported] = field(default_factory=list)
    # user -> the latest assessment, for the membership cache (latest wins)
    assessed: dict[str, Assessment] = field(default_factory=dict)
    later: list[TakenLater] = field(default_factory=list)

    def commit(self, partition: int, user_id: str, state: UserState, decisions: list[Decision],
               assessment: Assessment | None) -> None:
        self.committed.append(Committed(partition, user_id, encode_state(state), state.src_offset, decisions))
        if assessment is not None:
            self.assessed[user_id] = assessment

    def report(self, partition: int, doc: dict) -> None:
        self.reported.append(Reported(partition, doc))

    def taken_later(self, partition: int, source: Any, user_id: str, outcome: Any) -> None:
        self.later.append(TakenLater(partition, source, user_id, outcome))

    def __bool__(self) -> bool:
        return bool(self.committed or self.reported or self.later)
