"""An index of when each silent user must be looked at again.

A min-heap of (due time, user id) per partition with lazy deletion: a user
re-scheduled leaves a stale entry behind that is skipped when popped (the
caller checks it against the user's current due time). Popping what is due
costs O(k log n) for k due users, never a scan of every user.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator


class DueIndex:
    def __init__(self) -> None:
        self._heaps: dict[int, list[tuple[int, str]]] = {}

    def schedule(self, partition: int, due_ms: int | None, user_id: str) -> None:
        if due_ms is None:
            return
        heapq.heappush(self._heaps.setdefault(partition, []), (due_ms, user_id))

    def pop_due(
        self, partition: int, until_ms: int, current_due: Callable[[str], int | None]
    ) -> Iterator[tuple[int, str]]:
        """Yield (due, user) for entries due at or before `until_ms`, oldest
        first, skipping entries that no longer match the user's due time."""
        heap = self._heaps.get(partition)
        while heap and heap[0][0] <= until_ms:
            due, user_id = heapq.heappop(heap)
            if current_due(user_id) == due:
                yield due, user_id

    def reset(self, partitions: set[int]) -> None:
        """Forget every partition, then track exactly `partitions` (empty)."""
        self._heaps = {p: [] for p in partitions}

    def owns(self, partition: int) -> bool:
        return partition in self._heaps

    def partitions(self) -> list[int]:
        return sorted(self._heaps)

    def __len__(self) -> int:
        return sum(len(h) for h in self._heaps.values())

    def compact(self, partition: int, current_due: Callable[[str], int | None]) -> None:
        """Drop stale entries once they outnumber live ones (keeps memory ~O(users))."""
        heap = self._heaps.get(partition)
        if not heap:
            return
        live = [(d, u) for d, u in heap if current_due(u) == d]
        if len(live) * 2 < len(heap):
            heapq.heapify(live)
            self._heaps[partition] = live
