"""A slow, literal reading of SPEC sections 2-4 and 7, to check the fast core against.

Nothing here is shared with `sessionizer.core` except the rule objects
(plain settings). Every step recomputes the sweep from scratch: after each
record, stream time advances, every session and window whose close time has
passed is closed, then the record is judged late or added, then anything its
addition made due is closed too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sessionizer.core.sessions import SessionRules
from sessionizer.core.windows import WindowRules


@dataclass
class Rec:
    key: str
    time: int
    arrival: int
    stake: int
    win: int
    game: str | None = None
    channel: str | None = None
    # SPEC section 7 (a record of a plain job keeps these defaults)
    kind: str | None = None  # its type
    counts: bool = True
    negate: bool = False  # stake and win above are as written; the reference subtracts them
    rid: str | None = None
    v: int | None = None  # the value at the aggregates' number field (whole units)
    g: str | int | None = None  # the value at the aggregates' label field


@dataclass(frozen=True)
class RefAggregate:
    name: str
    kind: str  # sum, count, min, max, first, last, count_distinct
    field: str | None  # "v", "g" or None (count)
    types: frozenset[str] | None = None

    def value(self, records: list[Rec]):
        """Over records in sweep order (event time, then arrival), literally as SPEC 7.3 says."""
        fed = [r for r in records if self.types is None or r.kind in self.types]
        if self.kind == "count":
            return len(fed)
        present = [(r, getattr(r, self.field)) for r in fed if getattr(r, self.field) is not None]
        if self.kind == "sum":
            return sum(-value if r.negate else value for r, value in present)
        values = [value for _, value in present]
        if self.kind == "count_distinct":
            return len({str(value) for value in values})
        if not values:
            return None
        return {"min": min, "max": max, "first": lambda v: v[0], "last": lambda v: v[-1]}[self.kind](values)


def sweep_order(records: list[Rec]) -> list[Rec]:
    return sorted(records, key=lambda r: (r.time, r.arrival))


def signed(rec: Rec) -> tuple[int, int]:
    return (-rec.stake, -rec.win) if rec.negate else (rec.stake, rec.win)


def ref_sweep(records: list[Rec], rules: SessionRules) -> list[tuple[list[Rec], str | None]]:
    """Sessions of records (already in sweep order) with the reason the next record cut each."""
    sessions: list[list[Rec]] = []
    reasons: list[str | None] = []
    for rec in records:
        if sessions:
            current = sessions[-1]
            reason = None
            if rules.max_events is not None and counting(current) >= rules.max_events and rec.counts:
                reason = "max_events"
            elif rec.time - current[-1].time > rules.gap:
                reason = "inactivity"
            elif rules.max_duration is not None and rec.time - current[0].time > rules.max_duration:
                reason = "max_duration"
            if reason is None:
                current.append(rec)
                continue
            reasons[-1] = reason
        sessions.append([rec])
        reasons.append(None)
    return list(zip(sessions, reasons))


def counting(session: list[Rec]) -> int:
    return sum(1 for r in session if r.counts)


def is_full(session: list[Rec], rules: SessionRules) -> bool:
    return rules.max_events is not None and counting(session) == rules.max_events


def close_time(session: list[Rec], rules: SessionRules) -> int:
    """The first stream time at which the session is closed."""
    end = session[-1].time
    if is_full(session, rules):
        return end + rules.grace + 1
    return end + rules.gap + rules.grace + 1


def is_closed(session: list[Rec], rules: SessionRules, now: int) -> bool:
    return now >= close_time(session, rules)


@dataclass
class RefSessions:
    rules: SessionRules
    aggregates: tuple[RefAggregate, ...] = ()
    open: dict[str, list[Rec]] = field(default_factory=dict)
    closed_end: dict[str, int] = field(default_factory=dict)
    emitted: list[dict] = field(default_factory=list)

    def _order(self, records: list[Rec]) -> list[Rec]:
        return sorted(records, key=lambda r: (r.time, r.arrival))

    def close(self, now: int, end_of_input: bool = False) -> None:
        changed = True
        while changed:
            changed = False
            for key in sorted(self.open):
                records = self._order(self.open[key])
                swept = ref_sweep(records, self.rules)
                closing = [(s, r) for s, r in swept if end_of_input or is_closed(s, self.rules, now)]
                if closing and not end_of_input:
                    # Sessions close in order of close time, each leaving the sweep before the
                    # next closes: a stream time that jumps past several closes like one that
                    # steps through them (the loop re-sweeps and closes the next).
                    soonest = min(close_time(s, self.rules) for s, _ in closing)
                    closing = [(s, r) for s, r in closing if close_time(s, self.rules) == soonest]
                for session, cut in closing:
                    if is_full(session, self.rules):  # SPEC 7.1: whatever follows
                        reason = "max_events"
                    elif cut is not None:
                        reason = cut
                    else:
                        reason = "end_of_input" if end_of_input else "inactivity"
                    self.emitted.append(session_out(key, session, reason, self.aggregates))
                    self.closed_end[key] = max(self.closed_end.get(key, -1), session[-1].time)
                    ids = {id(r) for r in session}
                    self.open[key] = [r for r in self.open[key] if id(r) not in ids]
                    changed = True
                if not self.open[key]:
                    del self.open[key]

    def is_late(self, rec: Rec, now: int) -> bool:
        if rec.time <= self.closed_end.get(rec.key, -1):
            return True
        records = self._order(self.open.get(rec.key, []) + [rec])
        for session, _ in ref_sweep(records, self.rules):
            if any(r is rec for r in session):
                return is_closed(session, self.rules, now)
        raise AssertionError("record not in its own sweep")

    def add(self, rec: Rec) -> None:
        self.open.setdefault(rec.key, []).append(rec)


def session_out(key: str, session: list[Rec], reason: str, aggregates: tuple[RefAggregate, ...] = ()) -> dict:
    games = [r.game for r in session if r.game is not None]
    channels = [r.channel for r in session if r.channel is not None]
    stake = sum(signed(r)[0] for r in session)
    win = sum(signed(r)[1] for r in session)
    return {"key": key, "start": session[0].time, "end": session[-1].time, "count": counting(session),
            "stake": stake, "win": win, "net": win - stake, "game": games[-1] if games else None,
            "channel": channels[-1] if channels else None, "reason": reason,
            "aggregates": tuple(a.value(session) for a in aggregates)}


@dataclass
class RefWindows:
    rules: WindowRules
    aggregates: tuple[RefAggregate, ...] = ()
    open: dict[tuple[int, str], list[Rec]] = field(default_factory=dict)  # (start, group) -> its records
    emitted: list[dict] = field(default_factory=list)

    def close(self, now: int, end_of_input: bool = False) -> None:
        for start, group in sorted(self.open):
            if end_of_input or now >= start + self.rules.size + self.rules.grace:
                records = sweep_order(self.open.pop((start, group)))
                stake = sum(signed(r)[0] for r in records)
                win = sum(signed(r)[1] for r in records)
                self.emitted.append({"group": group, "start": start, "end": start + self.rules.size,
                                     "count": counting(records), "stake": stake, "win": win, "net": win - stake,
                                     "aggregates": tuple(a.value(records) for a in self.aggregates)})

    def add(self, group: str, rec: Rec, now: int) -> str:
        """"added", "late" or "partially_late"."""
        size, advance, grace = self.rules.size, self.rules.advance, self.rules.grace
        starts = [s for s in range(0, rec.time + 1, advance) if s <= rec.time < s + size]
        open_starts = [s for s in starts if now < s + size + grace]
        for start in open_starts:
            self.open.setdefault((start, group), []).append(rec)
        if not open_starts:
            return "late"
        return "partially_late" if len(open_starts) < len(starts) else "added"


@dataclass
class Reference:
    """One partition: stream time plus the aggregations, fed decoded records."""

    sessions: RefSessions | None
    windows: list[RefWindows]
    now: int = -1
    late: list[tuple[str, int]] = field(default_factory=list)  # (aggregation, arrival) per dead letter

    def holds(self, key: str, rid: str) -> bool:
        """SPEC 7.2: an open session or window holds an accepted record of this key with this id."""
        held = list(self.sessions.open.get(key, [])) if self.sessions is not None else []
        for windows in self.windows:
            held.extend(r for records in windows.open.values() for r in records)
        return any(r.key == key and r.rid == rid for r in held)

    def feed(self, rec: Rec) -> None:
        if rec.rid is not None and self.holds(rec.key, rec.rid):
            self.late.append(("none:duplicate", rec.arrival))
            return
        if rec.time > self.now:
            self.now = rec.time
            self._close()
        if self.sessions is not None:
            if self.sessions.is_late(rec, self.now):
                self.late.append(("sessions:late", rec.arrival))
            else:
                self.sessions.add(rec)
                self.sessions.close(self.now)
        for index, windows in enumerate(self.windows):
            outcome = windows.add(rec.key, rec, self.now)
            if outcome != "added":
                self.late.append((f"rolling{index}:{outcome}", rec.arrival))

    def _close(self) -> None:
        if self.sessions is not None:
            self.sessions.close(self.now)
        for windows in self.windows:
            windows.close(self.now)

    def end(self) -> None:
        if self.sessions is not None:
            self.sessions.close(self.now, end_of_input=True)
        for windows in self.windows:
            windows.close(self.now, end_of_input=True)
