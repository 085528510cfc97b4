"""SPEC section 4: rolling windows, tumbling and hopping; SPEC section 2: stream time."""

import pytest

from helpers import dead_letters, line, records, run, session_tuple, spec, window_tuple
from sessionizer.core.native import new_partition
from sessionizer.core.sessions import SessionRules
from sessionizer.core.spec import JobSpec, RollingOutput
from sessionizer.core.windows import WindowRules


def windows_of(rules: WindowRules, events, end=True):
    out = run(spec(None, rules), [line(k, t, stake=s) for k, t, s in events], end=end)
    return [window_tuple(r)[:4] for r in records(out, "rolling0")], dead_letters(out)


def test_windows_are_aligned_to_the_epoch():
    got, _ = windows_of(WindowRules(size=10, advance=10), [("a", 13, "1"), ("a", 19, "1"), ("a", 20, "1")])
    assert got == [("a", 10, 20, 2), ("a", 20, 30, 1)]


def test_window_membership_start_inclusive_end_exclusive():
    rules = WindowRules(size=10, advance=10)
    assert list(rules.starts_of(10)) == [10]
    assert list(rules.starts_of(19)) == [10]
    assert list(rules.starts_of(0)) == [0]


def test_hopping_window_membership():
    rules = WindowRules(size=30, advance=10)
    assert list(rules.starts_of(25)) == [20, 10, 0]
    assert list(rules.starts_of(30)) == [30, 20, 10]
    # None starts before 0.
    assert list(rules.starts_of(5)) == [0]
    assert list(rules.starts_of(15)) == [10, 0]
    got, _ = windows_of(rules, [("a", 25, "1")])
    assert got == [("a", 0, 30, 1), ("a", 10, 40, 1), ("a", 20, 50, 1)]


def test_size_must_be_a_multiple_of_advance():
    with pytest.raises(ValueError):
        WindowRules(size=25, advance=10)


def test_a_window_closes_once_stream_time_reaches_end_plus_grace():
    part = new_partition(spec(None, WindowRules(size=10, advance=10, grace=5)))
    part.feed(line("a", 3), 1)
    part.feed(line("b", 14), 2)  # T = 14 < 10 + 5
    assert records(part.drain(), "rolling0") == []
    part.feed(line("b", 15), 3)  # T = 15 >= 15: closed now
    assert [window_tuple(r)[:4] for r in records(part.drain(), "rolling0")] == [("a", 0, 10, 1)]


def test_one_record_per_group_and_window_with_at_least_one_record():
    got, _ = windows_of(WindowRules(size=10, advance=10),
                        [("a", 1, "1"), ("b", 2, "2"), ("a", 3, "3"), ("a", 35, "1")])
    assert got == [("a", 0, 10, 2), ("b", 0, 10, 1), ("a", 30, 40, 1)]


def test_window_totals_and_envelope():
    out = run(spec(None, WindowRules(size=120_000, advance=120_000)),
              [line("a", 1767268800000, stake="0.1", win="0"), line("a", 1767268801000, stake="0.2", win="1")])
    [record] = records(out, "rolling0")
    assert list(record) == ["event", "user_id", "timestamp", "value", "user_attributes"]
    assert record["event"] == "session_summary" and record["timestamp"] == "2026-01-01 12:00:00"
    assert list(record["value"]) == ["window_start_ms", "window_end_ms", "event_count", "stake_total",
                                     "win_total", "net_total"]
    assert b'"stake_total":0.3,"win_total":1,"net_total":0.7}' in out[0].value


def test_record_none_of_whose_windows_is_open_is_late():
    got, letters = windows_of(WindowRules(size=10, advance=10), [("a", 25, "1"), ("a", 5, "1")])
    assert got == [("a", 20, 30, 1)]
    [letter] = letters
    assert (letter["error"], letter["aggregation"]) == ("late", "rolling0")


def test_record_that_missed_some_hopping_windows_is_partially_late_and_counts_in_the_others():
    # T = 30 closes [0,20) (end 20 + grace 0 <= 30) but not [10,30)... (30 <= 30 closes it too)
    # so use T = 25: [0,20) closed, [10,30) open; a@15 belongs to both.
    got, letters = windows_of(WindowRules(size=20, advance=10), [("a", 25, "1"), ("a", 15, "2")])
    assert ("a", 10, 30, 2) in got and ("a", 0, 20, 1) not in got
    [letter] = letters
    assert (letter["error"], letter["aggregation"]) == ("partially_late", "rolling0")


def test_group_by_another_field_and_missing_group():
    job = JobSpec(rolling=(RollingOutput("per-room", WindowRules(10, 10), group_by="value.room"),))
    out = run(job, [b'{"user_id":"a","timestamp":1,"value":{"room":"r1"}}',
                    b'{"user_id":"b","timestamp":2,"value":{"room":"r1"}}',
                    b'{"user_id":"c","timestamp":3}',
                    b'{"user_id":"d","timestamp":4,"value":{"room":""}}',
                    b'{"user_id":"e","timestamp":5,"value":{"room":42}}',
                    b'{"user_id":"f","timestamp":6,"value":{"room":4.2}}',
                    b'{"user_id":"g","timestamp":7,"value":{"room":null}}'])
    assert [window_tuple(r)[:4] for r in records(out, "per-room")] == [("42", 0, 10, 1), ("r1", 0, 10, 2)]
    letters = dead_letters(out)
    assert [(d["error"], d["aggregation"], d["source"]["line"]) for d in letters] == [
        ("missing_group", "per-room", n) for n in (3, 4, 6, 7)]
    assert letters[0]["detail"].startswith("value.room: absent")


def test_missing_group_is_checked_before_lateness():
    job = JobSpec(rolling=(RollingOutput("per-game", WindowRules(10, 10), group_by="value.game_code"),))
    out = run(job, [line("a", 100, game="g"), line("b", 1)])  # b@1 would be late, but has no group
    assert [d["error"] for d in dead_letters(out)] == ["missing_group"]


def test_end_of_input_flushes_open_windows():
    got, _ = windows_of(WindowRules(size=10, advance=10, grace=100), [("a", 1, "1"), ("a", 50, "1")])
    assert got == [("a", 0, 10, 1), ("a", 50, 60, 1)]


# -- stream time (SPEC section 2) -------------------------------------------------------------

def test_stream_time_is_the_largest_valid_event_time_and_ignores_invalid_records():
    part = new_partition(spec(SessionRules(gap=10)))
    for n, raw in enumerate([line("a", 50), line("a", 20), b'{"user_id":"a","timestamp":999,"value":{"stake":-1}}',
                             b"garbage"]):
        part.feed(raw, n)
    assert part.stream_time == 50


def test_event_times_outside_1970_to_9999_are_bad_time_in_any_format():
    out = run(spec(SessionRules(gap=10)), [
        b'{"user_id":"a","timestamp":253402300800000}', b'{"user_id":"a","timestamp":-1}',
        b'{"user_id":"a","timestamp":"1969-12-31T23:59:59Z"}'])
    assert [d["error"] for d in dead_letters(out)] == ["bad_time"] * 3


def test_a_record_late_for_sessions_can_be_on_time_for_a_rolling_window():
    # Sessions: gap 10, grace 0: at T=100, a@60 alone would close at T > 70: late.
    # Rolling: 60 s windows with 60 grace: [0,60) ... a@60 is in [60,120), open.
    job = spec(SessionRules(gap=10), WindowRules(size=60, advance=60, grace=60))
    out = run(job, [line("a", 100), line("a", 60)])
    letters = dead_letters(out)
    assert [(d["error"], d["aggregation"]) for d in letters] == [("late", "sessions")]
    assert [window_tuple(r)[:4] for r in records(out, "rolling0")] == [("a", 60, 120, 2)]
    assert [session_tuple(r)[3] for r in records(out, "sessions-out")] == [1]


def test_late_for_two_aggregations_yields_two_dead_letters():
    job = spec(SessionRules(gap=10), WindowRules(size=10, advance=10))
    out = run(job, [line("a", 100), line("a", 5)])
    assert sorted((d["error"], d["aggregation"]) for d in dead_letters(out)) == [
        ("late", "rolling0"), ("late", "sessions")]


def test_advance_moves_stream_time_without_a_record_and_closes_what_is_due():
    part = new_partition(spec(SessionRules(gap=10), WindowRules(size=10, advance=10)))
    part.feed(line("a", 3), 1)
    part.advance(5)
    assert part.drain() == []
    part.advance(14)  # > 3 + 10: session closed; >= 10: window closed
    topics = sorted(o.topic for o in part.drain())
    assert topics == ["rolling0", "sessions-out"]
    part.advance(2)  # stream time never goes back
    assert part.stream_time == 14
