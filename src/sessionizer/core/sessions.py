"""Capped sessions per key (SPEC section 3): the sweep, open/closed, lateness, close reasons.

State per key is the key's *open* records in sweep order (event time, then
arrival), kept compactly, plus the end of its latest closed session. Open
sessions are derived from those records by the sweep, so an out-of-order record
can join, extend or bridge open sessions exactly as the contract says, and
nothing closed is ever touched again.

Records that arrive in order (the common case) only look at the last open
session; only an out-of-order record re-sweeps the key's open records.
Closing is driven by a heap of per-key due times, never by scanning keys.
"""

from __future__ import annotations

import heapq
import sys
from array import array
from bisect import bisect_right
from dataclasses import dataclass
from typing import Callable, Iterator

import msgspec

from .shapes import AggregateSpec, IdRegistry, aggregates_json, fold

# Close reasons (the `close_reason` field).
MAX_EVENTS = "max_events"
INACTIVITY = "inactivity"
MAX_DURATION = "max_duration"
END_OF_INPUT = "end_of_input"

NO_CLOSED_END = -1  # event times are >= 0
Label = tuple["str | None", "str | None"]  # (game_code, channel) of a record
_NEVER = 1 << 62  # a cap that is never reached


@dataclass(frozen=True)
class SessionRules:
    """The `[sessions]` settings that decide cuts and closes (all in milliseconds)."""

    gap: int
    grace: int = 0
    max_duration: int | None = None
    max_events: int | None = None
    all_count: bool = True  # False: some records do not count towards max_events (SPEC 7.1)

    def cut_reason(self, start: int, end: int, count: int, time: int) -> str | None:
        """Why a record at `time` cannot join a session (start, end, count); None if it joins."""
        if self.max_events is not None and count >= self.max_events:
            return MAX_EVENTS
        if time - end > self.gap:
            return INACTIVITY
        if self.max_duration is not None and time - start > self.max_duration:
            return MAX_DURATION
        return None

    def close_at(self, end: int, count: int) -> int:
        """The first stream time at which a session (end, count) is closed."""
        if count == self.max_events:
            return end + self.grace + 1
        return end + self.gap + self.grace + 1

    def forget_at(self, closed_end: int) -> int | None:
        """From this stream time on, a record at or before `closed_end` would be late even
        without the "at or before the last closed end" rule, so that end can be forgotten.

        A session reaching back to `closed_end` ends at most `reach` after it: max_duration,
        or (max_events - 1) gaps. Uncapped, out-of-order records can chain a session back
        arbitrarily far, so the end is kept for good (None).
        """
        reach = self.max_duration
        if self.max_events is not None and self.all_count:  # records that do not count are not capped
            by_count = (self.max_events - 1) * self.gap
            reach = by_count if reach is None else min(reach, by_count)
        return None if reach is None else closed_end + reach + self.gap + self.grace + 1


class KeySessions:
    """One key's open records (sweep order) and where its open sessions start."""

    __slots__ = ("times", "amounts", "labels", "starts", "closed_end", "due", "extras", "counting")

    def __init__(self, shaped: bool = False) -> None:
        self.times = array("q")  # event times, sorted; ties keep arrival order
        self.amounts = array("q")  # stake, win micros, interleaved per record
        self.labels: list[Label | None] = []  # (game_code, channel) or None, per record
        self.starts: list[int] = []  # record index where each open session starts
        self.closed_end = NO_CLOSED_END
        self.due = 0  # the due time of this key's live heap entry
        # SPEC section 7 only: per record (counts, record id or None, values of the session aggregates)
        self.extras: list[tuple[bool, str | None, tuple]] | None = [] if shaped else None
        # ... and whether each counts, 1 or 0, beside them: a session's count is a count of 1s in C,
        # not a pass over tuples in Python (a harsh feed re-counts long sessions at every record).
        self.counting: bytearray | None = bytearray() if shaped else None

    def __len__(self) -> int:
        return len(self.times)

    def sessions(self) -> Iterator[tuple[int, int]]:
        """(first, stop) record index ranges of the open sessions."""
        starts = self.starts
        for i, first in enumerate(starts):
            yield first, starts[i + 1] if i + 1 < len(starts) else len(self.times)


def sweep(times: array, rules: SessionRules, begin: int = 0, known: frozenset[int] = frozenset(),
          shift: int = 0, weights: list[int] | None = None) -> list[int]:
    """Session start indexes for sorted event times from index `begin` (a session start): the
    contract's sweep (SessionRules.cut_reason, inlined).

    `known` is an earlier sweep's starts beyond the changed spot, each `shift` places back:
    once the sweep starts a session where one started before, the rest is the same, so it
    stops there and reuses them.
    """
    max_events = rules.max_events or _NEVER
    max_duration = _NEVER if rules.max_duration is None else rules.max_duration
    gap = rules.gap
    if weights is not None:
        return _weighted_sweep(times, weights, begin, known, shift, gap, max_events, max_duration)
    starts = [begin]
    start = end = times[begin]
    count = 1
    for index in range(begin + 1, len(times)):
        time = times[index]
        if count >= max_events or time - end > gap or time - start > max_duration:
            if index - shift in known:
                starts.extend(sorted(old + shift for old in known if old + shift >= index))
                return starts
            starts.append(index)
            start, count = time, 0
        end = time
        count += 1
    return starts


def _weighted_sweep(times: array, weights: bytearray, begin: int, known: frozenset[int], shift: int, gap: int,
                    max_events: int, max_duration: int) -> list[int]:
    """The sweep when some records do not count (weight 0): only a counting record is cut by
    `max_events` (SPEC 7.1). `known` and `shift` as in `sweep`."""
    starts = [begin]
    start = end = times[begin]
    count = weights[begin]
    for index in range(begin + 1, len(times)):
        time, weight = times[index], weights[index]
        if (weight and count >= max_events) or time - end > gap or time - start > max_duration:
            if index - shift in known:
                starts.extend(sorted(old + shift for old in known if old + shift >= index))
                return starts
            starts.append(index)
            start, count = time, 0
        end = time
        count += weight
    return starts


# Receives each closed session: key, start, end, count, stake, win, game_code, channel, reason.
Emit = Callable[[str, int, int, int, int, int, "str | None", "str | None", str], None]


class SessionStore:
    """All open sessions of one input partition.

    `keys` holds the keys with open records. `closed_ends` holds, for keys with
    none, the end of their latest closed session, for as long as it can still
    make a record late (see `SessionRules.forget_at`).
    """

    name = "sessions"

    def __init__(self, rules: SessionRules, track_changes: bool = False, shaped: bool = False,
                 aggregates: tuple[AggregateSpec, ...] = (), ids: IdRegistry | None = None) -> None:
        """`shaped`: the job uses SPEC section 7, so each record keeps its extras (see KeySessions);
        `ids` holds the record ids this store's open records hold."""
        self.rules = rules
        self.shaped = shaped
        self.aggregates = aggregates
        self.ids = ids
        self.keys: dict[str, KeySessions] = {}
        self.closed_ends: dict[str, int] = {}
        self._due: list[tuple[int, str]] = []  # (due time, key) for `keys`
        self._forget: list[tuple[int, str]] = []  # (forget time, key) for `closed_ends`
        self.next_due = _NEVER  # no stream time before this one has anything to close or forget
        self._labels: dict[Label, Label] = {}  # shares equal (game, channel) pairs
        self.track_changes = track_changes
        self.changed: set[str] = set()
        # The rules as plain ints for the in-order path (no cap = a cap never reached).
        self._gap, self._grace = rules.gap, rules.grace
        self._max_events = rules.max_events or _NEVER
        self._max_duration = _NEVER if rules.max_duration is None else rules.max_duration

    # -- records in -----------------------------------------------------------

    def offer(self, key: str, time: int, stake: int, win: int, game: str | None, channel: str | None,
              now: int, emit: Emit, extra: tuple[bool, str | None, tuple] | None = None) -> bool:
        """Add one record at stream time `now`; False when it is late (nothing changes).
        An out-of-order record can move other sessions' bounds so that they close at once:
        those go to `emit`. `extra`: (counts, record id, aggregate values), for a shaped store."""
        if extra is not None:
            return self._offer_shaped(key, time, stake, win, game, channel, now, emit, extra)
        state = self.keys.get(key)
        if state is None:
            closed_end = self.closed_ends.get(key, NO_CLOSED_END)
            if time <= closed_end or self.rules.close_at(time, 1) <= now:
                return False
            state = self.keys[key] = KeySessions()
            state.closed_end = self.closed_ends.pop(key, NO_CLOSED_END)
            cut, count = True, 0
        elif time <= state.closed_end:
            return False
        else:
            times = state.times
            last = times[-1]
            if time < last:
                if not self._insert_out_of_order(key, state, time, stake, win, game, channel, now, emit):
                    return False
                if self.track_changes:
                    self.changed.add(key)
                return True
            # In order: join the last open session or open a new one. This is
            # SessionRules.cut_reason and close_at, inlined: it runs for most records.
            first = state.starts[-1]
            count = len(times) - first
            cut = (count >= self._max_events or time - last > self._gap
                   or time - times[first] > self._max_duration)
        new_count = 1 if cut else count + 1
        due = time + self._grace + 1 if new_count == self._max_events else time + self._gap + self._grace + 1
        if due <= now:  # (a new key was checked above, so there is nothing to undo)
            return False
        times = state.times
        if cut:
            state.starts.append(len(times))
        times.append(time)
        amounts = state.amounts
        amounts.append(stake)
        amounts.append(win)
        state.labels.append(self._label(game, channel) if game is not None or channel is not None else None)
        if count == 0 or due < state.due:
            self._schedule(key, state, due)
        if self.track_changes:
            self.changed.add(key)
        return True

    def _insert_out_of_order(self, key: str, state: KeySessions, time: int, stake: int, win: int,
                             game: str | None, channel: str | None, now: int, emit: Emit) -> bool:
        """Insert before the key's last record and re-sweep; undo if its session is closed."""
        rules = self.rules
        at = bisect_right(state.times, time)
        state.times.insert(at, time)
        state.amounts[2 * at:2 * at] = array("q", (stake, win))
        state.labels.insert(at, self._label(game, channel))
        old_starts = state.starts
        # Sessions before the one holding the record just before `at` cannot change.
        keep = bisect_right(old_starts, at - 1) - 1 if at else 0
        stop = old_starts[keep + 1] if keep + 1 < len(old_starts) else len(state.times) - 1
        if 0 < at and old_starts[keep] < at < stop and stop - old_starts[keep] < self._max_events:
            # Inside a session that has room: its time checks hold as before (the record lies
            # between two of its records), so no bound moves; later ones shift by one.
            state.starts = old_starts[:keep + 1] + [first + 1 for first in old_starts[keep + 1:]]
        else:
            state.starts = old_starts[:keep] + sweep(state.times, rules, old_starts[keep],
                                                     frozenset(old_starts[keep + 1:]), shift=1)
        session = bisect_right(state.starts, at) - 1
        first = state.starts[session]
        stop = state.starts[session + 1] if session + 1 < len(state.starts) else len(state.times)
        if rules.close_at(state.times[stop - 1], stop - first) <= now:
            del state.times[at]
            del state.amounts[2 * at:2 * at + 2]
            del state.labels[at]
            state.starts = old_starts
            return False
        # The re-sweep may have moved other sessions' bounds: settle them now.
        self._settle(key, state, now, emit)
        return True

    def _offer_shaped(self, key: str, time: int, stake: int, win: int, game: str | None, channel: str | None,
                      now: int, emit: Emit, extra: tuple[bool, str | None, tuple]) -> bool:
        """`offer` for SPEC section 7: records that may not count, and ids. An out-of-order record
        re-sweeps the key's open records (this path favours clarity; the compiled core is the fast one)."""
        rules, weight = self.rules, 1 if extra[0] else 0
        state = self.keys.get(key)
        if state is None:
            closed_end = self.closed_ends.get(key, NO_CLOSED_END)
            if time <= closed_end or rules.close_at(time, weight) <= now:
                return False
            state = self.keys[key] = KeySessions(shaped=True)
            state.closed_end = self.closed_ends.pop(key, NO_CLOSED_END)
            self._append(state, time, stake, win, game, channel, extra, cut=True)
            self._schedule(key, state, rules.close_at(time, weight))
        elif time <= state.closed_end:
            return False
        elif time >= state.times[-1]:  # in order: join the last open session or open a new one
            times = state.times
            first = state.starts[-1]
            count = self._count(state, first, len(times))
            cut = ((weight and count >= self._max_events) or time - times[-1] > self._gap
                   or time - times[first] > self._max_duration)
            due = rules.close_at(time, weight if cut else count + weight)
            if due <= now:
                return False
            self._append(state, time, stake, win, game, channel, extra, cut)
            if due < state.due:
                self._schedule(key, state, due)
        else:
            at = bisect_right(state.times, time)
            old_starts = state.starts
            state.times.insert(at, time)
            state.amounts[2 * at:2 * at] = array("q", (stake, win))
            state.labels.insert(at, self._label(game, channel))
            state.extras.insert(at, extra)
            state.counting.insert(at, weight)
            # As `_insert_out_of_order`: sessions before the one holding the record just before `at`
            # cannot change; strictly inside a session, a record that does not count, or one that
            # leaves it within max_events, moves no bound (later starts shift by one); else re-sweep
            # from that session, stopping where the sweep meets an old start again.
            keep = bisect_right(old_starts, at - 1) - 1 if at else 0
            stop = old_starts[keep + 1] if keep + 1 < len(old_starts) else len(state.times) - 1
            if 0 < at and old_starts[keep] < at < stop and (
                    not weight or self._count(state, old_starts[keep], stop + 1) - weight < self._max_events):
                state.starts = old_starts[:keep + 1] + [first + 1 for first in old_starts[keep + 1:]]
            else:
                state.starts = old_starts[:keep] + self._resweep(state, old_starts[keep],
                                                                 frozenset(old_starts[keep + 1:]), shift=1)
            session = bisect_right(state.starts, at) - 1
            first = state.starts[session]
            stop = state.starts[session + 1] if session + 1 < len(state.starts) else len(state.times)
            if rules.close_at(state.times[stop - 1], self._count(state, first, stop)) <= now:
                del state.times[at]
                del state.amounts[2 * at:2 * at + 2]
                del state.labels[at]
                del state.extras[at]
                del state.counting[at]
                state.starts = old_starts
                return False
            self._settle(key, state, now, emit)
        if extra[1] is not None:
            self.ids.hold(key, extra[1])
        if self.track_changes:
            self.changed.add(key)
        return True

    def _append(self, state: KeySessions, time: int, stake: int, win: int, game: str | None, channel: str | None,
                extra: tuple, cut: bool) -> None:
        if cut:
            state.starts.append(len(state.times))
        state.times.append(time)
        state.amounts.append(stake)
        state.amounts.append(win)
        state.labels.append(self._label(game, channel))
        state.extras.append(extra)
        state.counting.append(1 if extra[0] else 0)

    def _resweep(self, state: KeySessions, begin: int = 0, known: frozenset[int] = frozenset(),
                 shift: int = 0) -> list[int]:
        """A shaped key's session starts from `begin` (`known`, `shift`: as `sweep`'s)."""
        weights = None if self.rules.all_count else state.counting
        return sweep(state.times, self.rules, begin, known, shift, weights=weights)

    def _count(self, state: KeySessions, first: int, stop: int) -> int:
        """The records of [first, stop) that count towards event_count and max_events."""
        if state.counting is None or self.rules.all_count:
            return stop - first
        return state.counting.count(1, first, stop)

    def _release(self, key: str, extras: list[tuple[bool, str | None, tuple]]) -> None:
        """The ids of records that leave this store."""
        ids = self.ids
        if ids is not None:
            for extra in extras:
                if extra[1] is not None:
                    ids.release(key, extra[1])

    def _label(self, game: str | None, channel: str | None) -> Label | None:
        if game is None and channel is None:
            return None
        pair = (game, channel)
        shared = self._labels.get(pair)
        if shared is None:
            if len(self._labels) >= 65536:  # only sharing is lost; bounded against hostile input
                self._labels.clear()
            shared = self._labels[pair] = pair
        return shared

    # -- closing --------------------------------------------------------------

    def close_due(self, now: int, emit: Emit) -> None:
        """Close every session whose close time stream time `now` has reached."""
        due = self._due
        while due and due[0][0] <= now:
            when, key = heapq.heappop(due)
            state = self.keys.get(key)
            if state is None or state.due != when:
                continue  # superseded by an earlier due time, or key gone
            close_time = self._close_time(state)
            if close_time != when:
                # Scheduled before later records moved the key's close time: back into the heap at
                # its own time, so that keys close in (close time, key) order, as after a restore.
                self._schedule(key, state, close_time)
                continue
            self._settle(key, state, now, emit)
        forget, closed_ends, forget_at = self._forget, self.closed_ends, self.rules.forget_at
        while forget and forget[0][0] <= now:
            when, key = heapq.heappop(forget)
            closed_end = closed_ends.get(key)
            if closed_end is not None and forget_at(closed_end) == when:
                del closed_ends[key]
                if self.track_changes:
                    self.changed.add(key)
        self._update_next_due()

    def _update_next_due(self) -> None:
        self.next_due = min(self._due[0][0] if self._due else _NEVER, self._forget[0][0] if self._forget else _NEVER)

    def close_all(self, emit: Emit) -> None:
        """End of input: close every open session (reason end_of_input where it would be inactivity)."""
        for key in sorted(self.keys):
            state = self.keys[key]
            total = len(state.times)
            sessions = [(first, stop, stop if stop < total else None) for first, stop in state.sessions()]
            self._close_sessions(key, state, sessions, emit, end_of_input=True)
        self.keys.clear()
        self.closed_ends.clear()
        self._due.clear()
        self._forget.clear()
        self.next_due = _NEVER

    def _settle(self, key: str, state: KeySessions, now: int, emit: Emit) -> None:
        """Close this key's sessions that are due at `now`, then reschedule it."""
        times = state.times
        if len(state.starts) == 1:  # the common case: one open session
            due = self._close_time(state)
            if due > now:
                self._schedule(key, state, due)
                return
            self._emit_session(key, state, 0, len(times), None, emit, end_of_input=False)
            if self.track_changes:
                self.changed.add(key)
            if state.extras:
                self._release(key, state.extras)
            self._drop_empty(key, state, now)  # the whole key closed: no records to remove
            return
        sessions = list(state.sessions())
        close_times = [self._session_close_time(state, first, stop) for first, stop in sessions]
        closing = _with_followers(sessions, close_times, now)
        if closing:
            self._close_sessions(key, state, closing, emit, end_of_input=False)
            if self.track_changes:
                self.changed.add(key)
        if state.times:
            self._schedule(key, state, self._close_time(state))
        else:
            self._drop_empty(key, state, now)

    def _drop_empty(self, key: str, state: KeySessions, now: int) -> None:
        """A key without open records keeps only its closed end, while that can still matter."""
        del self.keys[key]
        if state.closed_end == NO_CLOSED_END:
            return
        forget_at = self.rules.forget_at(state.closed_end)
        if forget_at is None or forget_at > now:
            self.closed_ends[key] = state.closed_end
            if forget_at is not None:
                heapq.heappush(self._forget, (forget_at, key))
                if forget_at < self.next_due:
                    self.next_due = forget_at

    def _close_sessions(self, key: str, state: KeySessions, closing: list[tuple[int, int, int | None]],
                        emit: Emit, end_of_input: bool) -> None:
        """Emit the sessions (first, stop, follower) and drop their records (not at end of input)."""
        for first, stop, follower in closing:
            self._emit_session(key, state, first, stop, follower, emit, end_of_input)
        if end_of_input:
            return
        # Drop the closed records. The contract re-sweeps the rest, but removing whole sessions
        # moves no other bound (what cut a session from the next cuts it from any later
        # record too), so the remaining starts just shift down.
        times, amounts, labels = state.times, state.amounts, state.labels
        total = len(times)
        closed_starts = {first for first, _, _ in closing}
        removed = 0
        starts: list[int] = []
        for index, first in enumerate(state.starts):
            if first in closed_starts:
                stop = state.starts[index + 1] if index + 1 < len(state.starts) else total
                removed += stop - first
            else:
                starts.append(first - removed)
        for first, stop, _ in reversed(closing):
            del times[first:stop]
            del amounts[2 * first:2 * stop]
            del labels[first:stop]
            if state.extras is not None:
                self._release(key, state.extras[first:stop])
                del state.extras[first:stop]
                del state.counting[first:stop]
        state.starts = starts

    def _emit_session(self, key: str, state: KeySessions, first: int, stop: int, follower: int | None,
                      emit: Emit, end_of_input: bool) -> None:
        """Emit the session of records [first, stop) and remember its end as closed.

        `follower` is the index of the record that follows it in the sweep as it closes (None: none).
        """
        rules = self.rules
        times, amounts, labels = state.times, state.amounts, state.labels
        count = self._count(state, first, stop)
        start, end = times[first], times[stop - 1]
        if count == rules.max_events:  # a full session closes as such, whatever follows (SPEC 7.1)
            reason = MAX_EVENTS
        elif follower is not None:
            cut = rules.cut_reason(start, end, count, times[follower])
            assert cut is not None  # what cut the session from its next record cuts it from any later one
            reason = cut
        else:
            reason = END_OF_INPUT if end_of_input else INACTIVITY
        game: str | None = None
        channel: str | None = None
        for index in range(stop - 1, first - 1, -1):  # the last record that has one, for each
            label = labels[index]
            if label is not None:
                if game is None:
                    game = label[0]
                if channel is None:
                    channel = label[1]
                if game is not None and channel is not None:
                    break
        stake, win = sum(amounts[2 * first:2 * stop:2]), sum(amounts[2 * first + 1:2 * stop:2])
        if state.extras is None:
            emit(key, start, end, count, stake, win, game, channel, reason)
        else:
            extras = state.extras
            states = fold(self.aggregates, [(times[i], extras[i][2]) for i in range(first, stop)])
            emit(key, start, end, count, stake, win, game, channel, reason, aggregates_json(self.aggregates, states))
        if end > state.closed_end:
            state.closed_end = end

    def _close_time(self, state: KeySessions) -> int:
        """When the first of a key's open sessions closes."""
        if len(state.starts) == 1:
            return self._session_close_time(state, 0, len(state.times))
        return min(self._session_close_time(state, first, stop) for first, stop in state.sessions())

    def _session_close_time(self, state: KeySessions, first: int, stop: int) -> int:
        """When the session of records [first, stop) closes."""
        return self.rules.close_at(state.times[stop - 1], self._count(state, first, stop))

    def _schedule(self, key: str, state: KeySessions, due: int) -> None:
        state.due = due
        heapq.heappush(self._due, (due, key))
        if due < self.next_due:
            self.next_due = due

    # -- introspection and state ------------------------------------------------

    @property
    def open_count(self) -> int:
        return sum(len(state.starts) for state in self.keys.values())

    def take_changes(self) -> list[tuple[str, bytes | None]]:
        """(key, encoded state or None when gone) for each key changed since the last call."""
        changes = [(key, self.encode(key)) for key in sorted(self.changed)]
        self.changed.clear()
        return changes

    def encode_all(self) -> list[tuple[str, bytes | None]]:
        return [(key, self.encode(key)) for key in sorted([*self.keys, *self.closed_ends])]

    def encode(self, key: str) -> bytes | None:
        state = self.keys.get(key)
        if state is None:
            closed_end = self.closed_ends.get(key)
            return None if closed_end is None else _STATE.encode((closed_end, b"", b"", []))
        labels = [list(label) if label else None for label in state.labels]
        if state.extras is None:
            return _STATE.encode((state.closed_end, _le_bytes(state.times), _le_bytes(state.amounts), labels))
        return _STATE.encode((state.closed_end, _le_bytes(state.times), _le_bytes(state.amounts), labels,
                              [[counts, record_id, list(values)] for counts, record_id, values in state.extras]))

    def restore(self, key: str, value: bytes | None) -> None:
        """Load one key's state (a changelog record); call `reschedule` after the last one."""
        old = self.keys.pop(key, None)
        if old is not None and old.extras:
            self._release(key, old.extras)
        self.closed_ends.pop(key, None)
        if value is None:
            return
        if self.shaped:
            closed_end, times, amounts, labels, *more = msgspec.msgpack.decode(value)
            labels = [None if label is None else tuple(label) for label in labels]
        else:
            closed_end, times, amounts, labels = _STATE_DECODER.decode(value)
        if not times:
            self.closed_ends[key] = closed_end
            return
        state = KeySessions(self.shaped)
        state.closed_end = closed_end
        state.times = _from_le_bytes(times)
        state.amounts = _from_le_bytes(amounts)
        shared = self._labels
        state.labels = [None if label is None else shared.setdefault(label, label) for label in labels]
        if self.shaped:
            plain = (True, None, (None,) * len(self.aggregates))  # a state written before the job was shaped
            state.extras = [(counts, record_id, tuple(values)) for counts, record_id, values in more[0]] if more \
                else [plain] * len(state.times)
            state.counting = bytearray(1 if counts else 0 for counts, _, _ in state.extras)
            for _, record_id, _ in state.extras:
                if record_id is not None:
                    self.ids.hold(key, record_id)
            state.starts = self._resweep(state)
        else:
            state.starts = [0] if len(state.times) == 1 else sweep(state.times, self.rules)
        self.keys[key] = state

    def reschedule(self) -> None:
        """Rebuild the due-time heaps from the keys' state (after a restore)."""
        rules = self.rules
        due = []
        for key, state in self.keys.items():
            state.due = self._close_time(state)
            due.append((state.due, key))
        heapq.heapify(due)
        self._due = due
        self._forget = [(when, key) for key, end in self.closed_ends.items()
                        if (when := rules.forget_at(end)) is not None]
        heapq.heapify(self._forget)
        self._update_next_due()


_STATE = msgspec.msgpack.Encoder()
_STATE_DECODER = msgspec.msgpack.Decoder(tuple[int, bytes, bytes, list[tuple[str | None, str | None] | None]])


def _with_followers(sessions: list[tuple[int, int]], close_times: list[int],
                    now: int) -> list[tuple[int, int, int | None]]:
    """The sessions due at `now`, each with the record that follows it in the sweep as it closes.

    Sessions close in order of close time, and a closed session's records leave the sweep: a
    full session can close before an earlier one that is not full, so a session that closes
    strictly sooner in the same batch is not what follows (SPEC 3 close reason: the result
    does not depend on whether stream time reached both close times at once).
    """
    # The nearest later session that closes no sooner, for each, from the right with a stack (one
    # pass: a hot key can hold thousands of sessions). A session popped here for closing sooner than
    # this one is never the answer for an earlier one either: this one is nearer and closes later.
    followers: list[int | None] = [None] * len(sessions)
    later: list[int] = []  # indexes; close times not decreasing from the top
    for index in range(len(sessions) - 1, -1, -1):
        while later and close_times[later[-1]] < close_times[index]:
            later.pop()
        if later:
            followers[index] = sessions[later[-1]][0]
        later.append(index)
    return [(first, stop, followers[index]) for index, (first, stop) in enumerate(sessions)
            if close_times[index] <= now]


def _le_bytes(values: array) -> bytes:
    """Array contents as little-endian bytes, whatever this machine's byte order."""
    if sys.byteorder == "little":
        return values.tobytes()
    copy = array(values.typecode, values)
    copy.byteswap()
    return copy.tobytes()


def _from_le_bytes(data: bytes) -> array:
    values = array("q", data)
    if _BIG_ENDIAN:
        values.byteswap()
    return values


_BIG_ENDIAN = sys.byteorder != "little"
