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
    # Below this many entries a partition's heap is never worth compacting.
    COMPACT_FLOOR = 4096

    def __init__(self) -> None:
        self._heaps: dict[int, list[tuple[int, str]]] = {}
        self._compact_at: dict[int, int] = {}

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
        self._compact_at = {}

    def owns(self, partition: int) -> bool:
        return partition in self._heaps

    def partitions(self) -> list[int]:
        return sorted(self._heaps)

    def __len__(self) -> int:
        return sum(len(h) for h in self._heaps.values())

    def maybe_compact(self, partition: int, current_due: Callable[[str], int | None]) -> None:
        """Compact only once the heap has doubled since the last compaction:
        a check per call, a scan only every so often (amortised O(1))."""
        heap = self._heaps.get(partition)
        if heap is not None and len(heap) > self._compact_at.get(partition, self.COMPACT_FLOOR):
            self.compact(partition, current_due)

    def compact(self, partition: int, current_due: Callable[[str], int | None]) -> None:
        """Drop stale entries (keeps memory ~O(users), not O(events))."""
        heap = self._heaps.get(partition)
        if not heap:
            return
        live = [(d, u) for d, u in heap if current_due(u) == d]
        heapq.heapify(live)
        self._heaps[partition] = live
        self._compact_at[partition] = max(self.COMPACT_FLOOR, 2 * len(live))
