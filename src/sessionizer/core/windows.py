"""Rolling windows (SPEC section 4): epoch-aligned tumbling and hopping windows per group.

Windows are `[k*advance, k*advance + size)`, k >= 0. A window is closed once
stream time T >= its end + grace. Open windows live in buckets by start time,
so closing is "pop the oldest bucket while it is due": no per-key scan.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Callable

import msgspec

from .shapes import AggregateSpec, IdRegistry, add_value, aggregates_json, decode_state, empty_state, encode_state

# What `offer` says about a record.
ADDED = 0
LATE = 1  # none of its windows is open
PARTIALLY_LATE = 2  # some of its windows were closed, it was added to the others

_NEVER = 1 << 62


@dataclass(frozen=True)
class WindowRules:
    size: int
    advance: int
    grace: int = 0

    def __post_init__(self) -> None:
        if self.size <= 0 or self.advance <= 0 or self.size % self.advance:
            raise ValueError("size must be a positive multiple of advance")

    def starts_of(self, time: int) -> range:
        """Start times of the windows that contain `time`, newest first."""
        last = time - time % self.advance
        first = max(0, last - self.size + self.advance)
        return range(last, first - 1, -self.advance)

    def close_at(self, start: int) -> int:
        return start + self.size + self.grace


# Receives each closed window: group, start, end, count, stake, win.
Emit = Callable[[str, int, int, int, int, int], None]


class WindowStore:
    """All open windows of one rolling aggregation on one input partition."""

    def __init__(self, name: str, rules: WindowRules, track_changes: bool = False, shaped: bool = False,
                 aggregates: tuple[AggregateSpec, ...] = (), ids: IdRegistry | None = None) -> None:
        """`shaped`: the job uses SPEC section 7: a window's totals are then
        [count, stake, win, <one state per aggregate>..., [(key, record id), ...]]."""
        self.name = name  # the output topic; names the aggregation in dead letters
        self.rules = rules
        self.shaped = shaped
        self.aggregates = aggregates
        self._kinds = [spec.kind for spec in aggregates]
        self.ids = ids
        self.buckets: dict[int, dict[str, list[int]]] = {}  # start -> group -> [count, stake, win]
        self._starts: list[int] = []  # heap of bucket starts
        self.next_due = _NEVER  # the first stream time at which a window closes
        self._tumbling = rules.size if rules.size == rules.advance else 0
        self._close_after = rules.size + rules.grace  # a window closes at its start + this
        self.track_changes = track_changes
        self.changed: set[tuple[int, str]] = set()

    def offer(self, group: str, time: int, stake: int, win: int, now: int,
              extra: tuple[int, str, str | None, tuple] | None = None) -> int:
        """Add one record at stream time `now` to each of its open windows. `extra`, for a shaped
        store: (1 if it counts else 0, its key, its record id or None, its aggregate values)."""
        if extra is not None:
            return self._offer_shaped(group, time, stake, win, now, extra)
        size = self._tumbling
        if size:  # exactly one window: _add, inlined, since this runs for every record
            start = time - time % size
            if start + self._close_after <= now:
                return LATE
            bucket = self.buckets.get(start)
            totals = bucket.get(group) if bucket is not None else None
            if totals is None:
                self._add(start, group, stake, win)
            else:
                totals[0] += 1
                totals[1] += stake
                totals[2] += win
                if self.track_changes:
                    self.changed.add((start, group))
            return ADDED
        rules = self.rules
        added = missed = 0
        for start in rules.starts_of(time):
            if rules.close_at(start) <= now:
                missed += 1
            else:
                added += 1
                self._add(start, group, stake, win)
        if not added:
            return LATE
        return PARTIALLY_LATE if missed else ADDED

    def _offer_shaped(self, group: str, time: int, stake: int, win: int, now: int,
                      extra: tuple[int, str, str | None, tuple]) -> int:
        rules = self.rules
        weight, key, record_id, values = extra
        added = missed = 0
        for start in rules.starts_of(time):
            if rules.close_at(start) <= now:
                missed += 1
                continue
            added += 1
            bucket = self.buckets.get(start)
            if bucket is None:
                bucket = self.buckets[start] = {}
                heapq.heappush(self._starts, start)
                self.next_due = min(self.next_due, rules.close_at(start))
            totals = bucket.get(group)
            if totals is None:
                totals = bucket[group] = [0, 0, 0, *(empty_state(kind) for kind in self._kinds), []]
            totals[0] += weight
            totals[1] += stake
            totals[2] += win
            for index, value in enumerate(values):
                if value is not None:
                    totals[3 + index] = add_value(self._kinds[index], totals[3 + index], value, time)
            if record_id is not None:
                totals[-1].append((key, record_id))
                self.ids.hold(key, record_id)
            if self.track_changes:
                self.changed.add((start, group))
        if not added:
            return LATE
        return PARTIALLY_LATE if missed else ADDED

    def _add(self, start: int, group: str, stake: int, win: int) -> None:
        bucket = self.buckets.get(start)
        if bucket is None:
            bucket = self.buckets[start] = {}
            heapq.heappush(self._starts, start)
            close_at = start + self.rules.size + self.rules.grace
            if close_at < self.next_due:
                self.next_due = close_at
        totals = bucket.get(group)
        if totals is None:
            bucket[group] = [1, stake, win]
        else:
            totals[0] += 1
            totals[1] += stake
            totals[2] += win
        if self.track_changes:
            self.changed.add((start, group))

    def close_due(self, now: int, emit: Emit) -> None:
        """Emit and drop every window with end + grace <= `now`."""
        starts, rules = self._starts, self.rules
        while starts and rules.close_at(starts[0]) <= now:
            self._close_bucket(heapq.heappop(starts), emit)
        self.next_due = rules.close_at(starts[0]) if starts else _NEVER

    def close_all(self, emit: Emit) -> None:
        """End of input: emit every open window."""
        while self._starts:
            self._close_bucket(heapq.heappop(self._starts), emit)
        self.next_due = _NEVER

    def _close_bucket(self, start: int, emit: Emit) -> None:
        end = start + self.rules.size
        bucket = self.buckets.pop(start)
        for group in sorted(bucket):
            totals = bucket[group]
            if self.shaped:
                emit(group, start, end, totals[0], totals[1], totals[2],
                     aggregates_json(self.aggregates, totals[3:-1]))
                self._release(totals)
            else:
                count, stake, win = totals
                emit(group, start, end, count, stake, win)
            if self.track_changes:
                self.changed.add((start, group))

    def _release(self, totals: list) -> None:
        for key, record_id in totals[-1]:
            self.ids.release(key, record_id)

    @property
    def open_count(self) -> int:
        return sum(len(bucket) for bucket in self.buckets.values())

    def take_changes(self) -> list[tuple[str, bytes | None]]:
        """("<start>:<group>", encoded totals or None when closed) per window changed since the last call."""
        changes = []
        for start, group in sorted(self.changed):
            totals = self.buckets.get(start, {}).get(group)
            changes.append((f"{start}:{group}", None if totals is None else self._encode(totals)))
        self.changed.clear()
        return changes

    def encode_all(self) -> list[tuple[str, bytes]]:
        return [(f"{start}:{group}", self._encode(totals))
                for start, bucket in sorted(self.buckets.items()) for group, totals in sorted(bucket.items())]

    def _encode(self, totals: list) -> bytes:
        if not self.shaped:
            return _TOTALS.encode(totals)
        states = [encode_state(kind, state) for kind, state in zip(self._kinds, totals[3:-1])]
        return _TOTALS.encode([*totals[:3], states, [list(pair) for pair in totals[-1]]])

    def _decode(self, value: bytes) -> list:
        if not self.shaped:
            return list(_TOTALS_DECODER.decode(value))
        count, stake, win, *more = msgspec.msgpack.decode(value)
        if not more:  # written before the job was shaped
            return [count, stake, win, *(empty_state(kind) for kind in self._kinds), []]
        states, pairs = more
        pairs = [tuple(pair) for pair in pairs]
        for key, record_id in pairs:
            self.ids.hold(key, record_id)
        return [count, stake, win, *(decode_state(kind, state) for kind, state in zip(self._kinds, states)), pairs]

    def restore(self, key: str, value: bytes | None) -> None:
        """Load one window (a changelog record)."""
        start_text, _, group = key.partition(":")
        start = int(start_text)
        bucket = self.buckets.get(start)
        old = None if bucket is None else bucket.pop(group, None)
        if old is not None and self.shaped:
            self._release(old)
        if value is None:
            if bucket is not None and not bucket:
                del self.buckets[start]
            return
        self.buckets.setdefault(start, {})[group] = self._decode(value)

    def reschedule(self) -> None:
        self._starts = sorted(self.buckets)  # a sorted list is a valid heap
        self.next_due = self.rules.close_at(self._starts[0]) if self._starts else _NEVER


_TOTALS = msgspec.msgpack.Encoder()
_TOTALS_DECODER = msgspec.msgpack.Decoder(tuple[int, int, int])
