"""SPEC section 7 (event types, duplicates, extra aggregates) against the literal reference,
record by record: per-type fields, records that do not count (and `max_events`), negation,
duplicates while the first copy is held and after its windows close, every aggregate kind
under bridging and cuts. Then: a restore in the middle of a stream changes nothing."""

from collections import Counter
from decimal import Decimal

import orjson
from hypothesis import given
from hypothesis import strategies as st

from helpers import decode, micros
from reference import RefAggregate, Rec, RefSessions, Reference, RefWindows
from sessionizer.core.events import InputFields
from sessionizer.core.native import new_partition
from sessionizer.core.sessions import SessionRules
from sessionizer.core.shapes import AggregateSpec, TypeFields
from sessionizer.core.spec import JobSpec, RollingOutput, SessionOutput
from sessionizer.core.windows import WindowRules

TYPES = (
    TypeFields("BET", stake="value.stake", win="", game_code="value.game_code", channel="value.channel"),
    TypeFields("WIN", stake="", win="value.win", game_code="value.game_code", channel="value.channel", counts=False),
    TypeFields("RB", stake="value.stake", win="", game_code="value.game_code", channel="value.channel",
               counts=False, negate=True),
)
AGGREGATES = (
    ("total_v", "sum", "v", None), ("bets", "count", None, {"BET"}), ("low_v", "min", "v", None),
    ("high_win_v", "max", "v", {"WIN"}), ("first_g", "first", "g", None), ("last_g", "last", "g", None),
    ("distinct_g", "count_distinct", "g", None),
)

# Aggregates over the very paths each type reads its stake, win, game_code and channel from, and counts:
# the compiled core derives their values from what a session keeps, rather than a copy per record, for
# every type row (BET, WIN, RB, and records of no known type), negated ones included.
DERIVABLE_AGGREGATES = (
    ("stakes", "sum", "value.stake", {"BET", "RB"}), ("low_stake", "min", "value.stake", {"BET", "RB"}),
    ("top_refund", "max", "value.stake", {"RB"}), ("top_win", "max", "value.win", {"WIN"}),
    ("wins", "count", None, {"WIN"}), ("first_g", "first", "value.game_code", None),
    ("last_c", "last", "value.channel", None), ("distinct_g", "count_distinct", "value.game_code", None),
)


def core_aggregates(aggregates=AGGREGATES) -> tuple[AggregateSpec, ...]:
    return tuple(AggregateSpec(name, kind, field, None if types is None else frozenset(types))
                 for name, kind, field, types in aggregates)


def ref_aggregates() -> tuple[RefAggregate, ...]:
    return tuple(RefAggregate(name, kind, field, None if types is None else frozenset(types))
                 for name, kind, field, types in AGGREGATES)


def job(srules: SessionRules | None, wrules: list[WindowRules], aggregates=AGGREGATES) -> JobSpec:
    fields = InputFields(event="type", id="id", types=TYPES)
    return JobSpec(
        fields=fields,
        sessions=SessionOutput("sessions-out", srules, aggregates=core_aggregates(aggregates)) if srules else None,
        rolling=tuple(RollingOutput(f"rolling{i}", r, aggregates=core_aggregates(aggregates))
                      for i, r in enumerate(wrules)),
    )


# Ids whose (key, id) text just fits in the native registry's slot (36 bytes, with a one-letter
# key) and two that do not: those are kept apart from the slot, and moved by its rebuilds.
EDGE_IDS = ["i" * 35, "6f1c2a9e-8d4b-4c7e-9a1f-2b3c4d5e6f70", "u" * 200]


@st.composite
def session_rules(draw):
    return SessionRules(gap=draw(st.integers(0, 40)), grace=draw(st.integers(0, 30)),
                        max_duration=draw(st.none() | st.integers(0, 60)),
                        max_events=draw(st.none() | st.integers(1, 4)), all_count=False)


@st.composite
def window_rules(draw):
    advance = draw(st.sampled_from([5, 10, 20]))
    return WindowRules(size=advance * draw(st.integers(1, 3)), advance=advance, grace=draw(st.integers(0, 30)))


@st.composite
def streams(draw, max_size=40):
    """Typed records, event times mostly moving forward; ids from a small pool, so copies
    (duplicates, or later copies once the first is closed) are common."""
    size = draw(st.integers(0, max_size))
    time = draw(st.integers(0, 50))
    recs = []
    for arrival in range(size):
        time = max(0, time + draw(st.integers(-25, 25)))
        kind = draw(st.sampled_from(["BET", "BET", "WIN", "RB", None]))
        stake, win = draw(st.integers(0, 3)) * 250_000, draw(st.integers(0, 2)) * 1_000_000
        if kind == "BET" or kind == "RB":
            win = 0
        elif kind == "WIN":
            stake = 0
        recs.append(Rec(
            key=draw(st.sampled_from("ab")), time=time, arrival=arrival, stake=stake, win=win,
            game=draw(st.sampled_from([None, "g1", "g2"])), channel=None, kind=kind,
            counts=kind not in ("WIN", "RB"), negate=kind == "RB",
            rid=draw(st.sampled_from([None, None, "t1", "t2", "t3", "7", *EDGE_IDS])),
            v=draw(st.none() | st.integers(-3, 3)), g=draw(st.sampled_from([None, "x", "y", 1, "1"])),
        ))
    return recs


def to_line(rec: Rec) -> bytes:
    body = {"user_id": rec.key, "timestamp": rec.time,
            "value": {"stake": orjson.Fragment(f"{rec.stake / 1e6:.6f}"), "win": orjson.Fragment(f"{rec.win / 1e6:.6f}")}}
    if rec.game is not None:
        body["value"]["game_code"] = rec.game
    if rec.kind is not None:
        body["type"] = rec.kind
    if rec.rid is not None:  # "7" is written as the integer 7: an integer id compares as its decimal string
        body["id"] = 7 if rec.rid == "7" else rec.rid
    if rec.v is not None:
        body["v"] = rec.v
    if rec.g is not None:
        body["g"] = rec.g
    return orjson.dumps(body)


def aggregate_values(value: dict) -> tuple:
    return tuple(value[name] for name, *_ in AGGREGATES)


def as_exact(values: tuple) -> tuple:
    """Reference values (whole units) as the output's exact decimals compare with them."""
    return tuple(Decimal(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in values)


def outputs_of(part) -> tuple[Counter, list[Counter], Counter]:
    sessions, windows, letters = Counter(), [Counter(), Counter()], Counter()
    for out in part.drain():
        record = decode(out)
        value = record.get("value")
        if out.topic == "sessions-out":
            sessions[(record["user_id"], value["session_start_ms"], value["session_end_ms"], value["event_count"],
                      micros(value["stake_total"]), micros(value["win_total"]), value["game_code"],
                      value["close_reason"], aggregate_values(value))] += 1
        elif out.topic.startswith("rolling"):
            windows[int(out.topic[7:])][(record["user_id"], value["window_start_ms"], value["event_count"],
                                         micros(value["stake_total"]), micros(value["win_total"]),
                                         aggregate_values(value))] += 1
        else:
            aggregation = record["aggregation"]
            name = "none" if aggregation is None else aggregation if aggregation == "sessions" \
                else f"rolling{aggregation[7:]}"
            letters[(f"{name}:{record['error']}", record["source"]["line"] - 1)] += 1
    return sessions, windows, letters


def expected_sessions(emitted: list[dict]) -> Counter:
    return Counter((s["key"], s["start"], s["end"], s["count"], s["stake"], s["win"], s["game"], s["reason"],
                    as_exact(s["aggregates"])) for s in emitted)


def expected_windows(emitted: list[dict]) -> Counter:
    return Counter((w["group"], w["start"], w["count"], w["stake"], w["win"], as_exact(w["aggregates"]))
                   for w in emitted)


@given(session_rules(), st.lists(window_rules(), max_size=2), streams())
def test_shaped_core_emits_what_the_reference_emits_record_by_record(srules, wrules, recs):
    part = new_partition(job(srules, wrules))
    ref = Reference(RefSessions(srules, ref_aggregates()), [RefWindows(w, ref_aggregates()) for w in wrules])
    seen_s, seen_l, seen_w = 0, 0, [0, 0]

    def compare():
        nonlocal seen_s, seen_l
        sessions, windows, letters = outputs_of(part)
        assert sessions == expected_sessions(ref.sessions.emitted[seen_s:])
        seen_s = len(ref.sessions.emitted)
        for index, windows_ref in enumerate(ref.windows):
            assert windows[index] == expected_windows(windows_ref.emitted[seen_w[index]:])
            seen_w[index] = len(windows_ref.emitted)
        assert letters == Counter(ref.late[seen_l:])
        seen_l = len(ref.late)

    for rec in recs:
        part.feed(to_line(rec), {"line": rec.arrival + 1})
        ref.feed(rec)
        compare()
        assert part.stream_time == ref.now
    part.end_of_input()
    ref.end()
    compare()


@given(session_rules(), st.lists(window_rules(), max_size=2), streams(max_size=50), st.integers(0, 50))
def test_a_restore_midway_changes_nothing_duplicates_included(srules, wrules, recs, cut):
    """The open state, remembered ids included, survives a restart: restoring it from what
    `take_changes` wrote (a changelog) and going on gives what one uninterrupted run gives."""
    spec = job(srules, wrules)
    whole = new_partition(spec)
    for rec in recs:
        whole.feed(to_line(rec), {"line": rec.arrival + 1})
    whole.end_of_input()

    first = new_partition(spec, track_changes=True)
    changelog: dict[str, list] = {}
    for rec in recs[:cut]:
        first.feed(to_line(rec), {"line": rec.arrival + 1})
        for store, records in first.take_changes().items():
            changelog.setdefault(store, []).extend(records)
    before = first.drain()
    second = new_partition(spec, track_changes=True)
    for store, records in changelog.items():
        second.restore(store, records)
    second.finish_restore()
    for rec in recs[cut:]:
        second.feed(to_line(rec), {"line": rec.arrival + 1})
    second.end_of_input()
    assert Counter(before + second.drain()) == Counter(whole.drain())
