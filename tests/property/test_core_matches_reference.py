"""The fast core against the literal reference model of SPEC sections 2-4, record by record.

After every record, what the core has emitted (sessions, windows, late dead
letters) must equal what the reference emitted at that same moment: same
records, same totals, same close reasons, same emission step.
"""

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from helpers import decode, line, session_tuple, spec, window_tuple
from reference import Rec, RefSessions, Reference, RefWindows
from sessionizer.core.native import new_partition
from sessionizer.core.sessions import SessionRules
from sessionizer.core.windows import WindowRules


@st.composite
def session_rules(draw):
    return SessionRules(
        gap=draw(st.integers(0, 40)),
        grace=draw(st.integers(0, 30)),
        max_duration=draw(st.none() | st.integers(0, 60)),
        max_events=draw(st.none() | st.integers(1, 4)),
    )


@st.composite
def window_rules(draw):
    advance = draw(st.sampled_from([5, 10, 20]))
    return WindowRules(size=advance * draw(st.integers(1, 3)), advance=advance, grace=draw(st.integers(0, 30)))


@st.composite
def streams(draw, max_size=40):
    """Event times that mostly move forward, with jumps back (out of order, sometimes late)."""
    size = draw(st.integers(0, max_size))
    time = draw(st.integers(0, 50))
    recs = []
    for arrival in range(size):
        time = max(0, time + draw(st.integers(-25, 25)))
        recs.append(Rec(
            key=draw(st.sampled_from("abc")), time=time, arrival=arrival,
            stake=draw(st.integers(0, 3)) * 250_000, win=draw(st.integers(0, 2)) * 1_000_000,
            game=draw(st.sampled_from([None, "g1", "g2"])), channel=draw(st.sampled_from([None, "web", "app"])),
        ))
    return recs


def to_line(rec: Rec) -> bytes:
    return line(rec.key, rec.time, stake=f"{rec.stake / 1e6:.6f}", win=f"{rec.win / 1e6:.6f}",
                game=rec.game, channel=rec.channel)


def ref_tuple_session(s: dict) -> tuple:
    return (s["key"], s["start"], s["end"], s["count"], s["stake"], s["win"], s["game"], s["channel"], s["reason"])


def ref_tuple_window(w: dict) -> tuple:
    return (w["group"], w["start"], w["end"], w["count"], w["stake"], w["win"])


def core_step(outputs, rolling_count):
    sessions, windows, late = Counter(), [Counter() for _ in range(rolling_count)], Counter()
    for out in outputs:
        record = decode(out)
        if out.topic == "sessions-out":
            sessions[session_tuple(record)] += 1
        elif out.topic.startswith("rolling"):
            windows[int(out.topic[7:])][window_tuple(record)] += 1
        else:
            agg = record["aggregation"]
            name = agg if agg == "sessions" else f"rolling{agg[7:]}"
            late[(f"{name}:{record['error']}", record["source"]["line"] - 1)] += 1
    return sessions, windows, late


def check_same_as_reference(srules, wrules, recs):
    job = spec(srules, *wrules)
    part = new_partition(job)
    ref = Reference(RefSessions(srules) if srules else None, [RefWindows(w) for w in wrules])
    seen_s = seen_l = 0
    seen_w = [0] * len(wrules)

    def compare():
        nonlocal seen_s, seen_l
        sessions, windows, late = core_step(part.drain(), len(wrules))
        if srules:
            assert sessions == Counter(ref_tuple_session(s) for s in ref.sessions.emitted[seen_s:])
            seen_s = len(ref.sessions.emitted)
        for i, w in enumerate(ref.windows):
            assert windows[i] == Counter(ref_tuple_window(x) for x in w.emitted[seen_w[i]:])
            seen_w[i] = len(w.emitted)
        assert late == Counter(ref.late[seen_l:])
        seen_l = len(ref.late)

    for rec in recs:
        part.feed(to_line(rec), {"line": rec.arrival + 1})
        ref.feed(rec)
        compare()
        assert part.stream_time == ref.now
    part.end_of_input()
    ref.end()
    compare()


@given(session_rules(), st.lists(window_rules(), max_size=2), streams())
def test_core_emits_what_the_reference_emits_record_by_record(srules, wrules, recs):
    check_same_as_reference(srules, wrules, recs)


@given(session_rules(), streams(max_size=60))
def test_sessions_alone_match_the_reference_on_longer_streams(srules, recs):
    check_same_as_reference(srules, [], recs)
