"""A slow, literal reading of SPEC sections 2-4, to check the fast core against.

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


def ref_sweep(records: list[Rec], rules: SessionRules) -> list[tuple[list[Rec], str | None]]:
    """Sessions of records (already in sweep order) with the reason the next record cut each."""
    sessions: list[list[Rec]] = []
    reasons: list[str | None] = []
    for rec in records:
        if sessions:
            current = sessions[-1]
            reason = None
            if rules.max_events is not None and len(current) >= rules.max_events:
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


def is_closed(session: list[Rec], rules: SessionRules, now: int) -> bool:
    end = session[-1].time
    if rules.max_events is not None and len(session) == rules.max_events:
        return now > end + rules.grace
    return now > end + rules.gap + rules.grace


@dataclass
class RefSessions:
    rules: SessionRules
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
                for session, cut in closing:
                    if cut is not None:
                        reason = cut
                    elif self.rules.max_events is not None and len(session) == self.rules.max_events:
                        reason = "max_events"
                    else:
                        reason = "end_of_input" if end_of_input else "inactivity"
                    self.emitted.append(session_out(key, session, reason))
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


def session_out(key: str, session: list[Rec], reason: str) -> dict:
    games = [r.game for r in session if r.game is not None]
    channels = [r.channel for r in session if r.channel is not None]
    stake = sum(r.stake for r in session)
    win = sum(r.win for r in session)
    return {"key": key, "start": session[0].time, "end": session[-1].time, "count": len(session),
            "stake": stake, "win": win, "net": win - stake, "game": games[-1] if games else None,
            "channel": channels[-1] if channels else None, "reason": reason}


@dataclass
class RefWindows:
    rules: WindowRules
    open: dict[tuple[int, str], list[int]] = field(default_factory=dict)  # (start, group) -> [n, stake, win]
    emitted: list[dict] = field(default_factory=list)

    def close(self, now: int, end_of_input: bool = False) -> None:
        for start, group in sorted(self.open):
            if end_of_input or now >= start + self.rules.size + self.rules.grace:
                count, stake, win = self.open.pop((start, group))
                self.emitted.append({"group": group, "start": start, "end": start + self.rules.size,
                                     "count": count, "stake": stake, "win": win, "net": win - stake})

    def add(self, group: str, rec: Rec, now: int) -> str:
        """"added", "late" or "partially_late"."""
        size, advance, grace = self.rules.size, self.rules.advance, self.rules.grace
        starts = [s for s in range(0, rec.time + 1, advance) if s <= rec.time < s + size]
        open_starts = [s for s in starts if now < s + size + grace]
        for start in open_starts:
            totals = self.open.setdefault((start, group), [0, 0, 0])
            totals[0] += 1
            totals[1] += rec.stake
            totals[2] += rec.win
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

    def feed(self, rec: Rec) -> None:
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
