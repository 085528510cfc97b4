"""What the status page shows, kept by the main loop about once a second.

The HTTP thread only reads these plain values (replaced whole, never changed in place),
so it never touches a core or a Kafka client.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PartitionRow:
    partition: int
    lag: int | None  # records not consumed yet; None while unknown
    stream_time_ms: int  # -1 before any record
    behind_s: float | None  # wall clock - stream time
    open_sessions: int
    open_windows: dict[str, int]  # rolling aggregation -> open (group, window) pairs
    records_read: int  # committed


@dataclass(frozen=True)
class Snapshot:
    taken_at: float = field(default_factory=time.time)
    partitions: tuple[PartitionRow, ...] = ()
    producer_queue: int = 0
    transactions: dict[str, int] = field(default_factory=dict)  # by result
    last_commit_at: float | None = None  # wall clock
    rewinds: int = 0
    restores: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)  # by code (committed)
    extra: dict[str, Any] = field(default_factory=dict)  # other figures to show, by label


class Throughput:
    """Records per second over the last minutes, from a running total sampled every `step_s`."""

    def __init__(self, step_s: float = 10.0, keep_s: float = 900.0, clock=time.time) -> None:
        self.step_s, self._clock = step_s, clock
        self._samples: deque[tuple[float, int]] = deque(maxlen=int(keep_s / step_s) + 1)

    def sample(self, total: int) -> None:
        now = self._clock()
        if not self._samples or now - self._samples[-1][0] >= self.step_s:
            self._samples.append((now, total))

    def rates(self) -> list[tuple[float, float]]:
        """(time, records/s over the step that ended then), oldest first."""
        samples = list(self._samples)
        return [(t1, (n1 - n0) / (t1 - t0)) for (t0, n0), (t1, n1) in zip(samples, samples[1:]) if t1 > t0]

    def rate_over(self, seconds: float) -> float | None:
        samples = list(self._samples)
        if len(samples) < 2:
            return None
        newest = samples[-1]
        oldest = next((s for s in samples if newest[0] - s[0] <= seconds), samples[0])
        if newest[0] <= oldest[0]:
            return None
        return (newest[1] - oldest[1]) / (newest[0] - oldest[0])
