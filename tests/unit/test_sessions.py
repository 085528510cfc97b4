"""SPEC section 3: the session sweep, open and closed sessions, lateness and close reasons.

Times are small integers of milliseconds, so each rule's boundary is visible.
"""

from helpers import dead_letters, line, records, run, session_tuple, spec
from sessionizer.core.native import new_partition
from sessionizer.core.sessions import _STATE_DECODER
from sessionizer.core.sessions import SessionRules, sweep
from array import array


def sessions_of(rules: SessionRules, events, end=True):
    """[(key, start, end, count, reason)] for (key, time) events, in emission order."""
    out = run(spec(rules), [line(k, t) for k, t in events], end=end)
    return [(s[0], s[1], s[2], s[3], s[8]) for s in map(session_tuple, records(out, "sessions-out"))]


def late_lines(rules: SessionRules, events):
    out = run(spec(rules), [line(k, t) for k, t in events])
    return [d["source"]["line"] for d in dead_letters(out) if d["error"] == "late"]


# -- the sweep ----------------------------------------------------------------------

def test_records_exactly_gap_apart_share_a_session():
    assert sessions_of(SessionRules(gap=10), [("a", 0), ("a", 10), ("a", 20)]) == [
        ("a", 0, 20, 3, "end_of_input")]


def test_records_more_than_gap_apart_are_cut_for_inactivity():
    assert sessions_of(SessionRules(gap=10), [("a", 0), ("a", 11)]) == [
        ("a", 0, 0, 1, "inactivity"), ("a", 11, 11, 1, "end_of_input")]


def test_max_events_cuts_a_full_session():
    assert sessions_of(SessionRules(gap=100, max_events=2), [("a", 0), ("a", 1), ("a", 2)]) == [
        ("a", 0, 1, 2, "max_events"), ("a", 2, 2, 1, "end_of_input")]


def test_max_duration_boundary_is_inclusive():
    rules = SessionRules(gap=100, max_duration=10)
    assert sessions_of(rules, [("a", 0), ("a", 10)]) == [("a", 0, 10, 2, "end_of_input")]
    assert sessions_of(rules, [("a", 0), ("a", 5), ("a", 11)]) == [
        ("a", 0, 5, 2, "max_duration"), ("a", 11, 11, 1, "end_of_input")]


def test_cut_checks_run_in_order_max_events_then_inactivity_then_max_duration():
    rules = SessionRules(gap=5, max_duration=3, max_events=1)
    assert SessionRules.cut_reason(rules, 0, 0, 1, 100) == "max_events"
    rules = SessionRules(gap=5, max_duration=3, max_events=5)
    assert rules.cut_reason(0, 0, 1, 100) == "inactivity"
    assert rules.cut_reason(0, 2, 2, 4) == "max_duration"
    assert rules.cut_reason(0, 2, 2, 3) is None


def test_sweep_orders_by_time_then_arrival():
    assert sweep(array("q", [0, 0, 0, 5, 20]), SessionRules(gap=10, max_events=2)) == [0, 2, 4]


def test_sessions_are_per_key():
    assert sorted(sessions_of(SessionRules(gap=10), [("a", 0), ("b", 5), ("a", 8)])) == [
        ("a", 0, 8, 2, "end_of_input"), ("b", 5, 5, 1, "end_of_input")]


# -- open and closed ------------------------------------------------------------------

def test_a_session_closes_as_soon_as_stream_time_passes_end_plus_gap_plus_grace():
    rules = SessionRules(gap=10, grace=5)
    part = new_partition(spec(rules))
    part.feed(line("a", 0), 1)
    part.feed(line("b", 15), 2)  # T = 15 = end + gap + grace: not yet
    assert records(part.drain(), "sessions-out") == []
    part.feed(line("b", 16), 3)  # T = 16 > 15: closed, emitted now
    [closed] = records(part.drain(), "sessions-out")
    assert session_tuple(closed)[:4] == ("a", 0, 0, 1)
    assert closed["value"]["close_reason"] == "inactivity"


def test_a_full_session_closes_once_stream_time_passes_end_plus_grace():
    rules = SessionRules(gap=100, grace=5, max_events=2)
    part = new_partition(spec(rules))
    for n, (k, t) in enumerate([("a", 0), ("a", 1), ("b", 6)]):
        part.feed(line(k, t), n)
    assert records(part.drain(), "sessions-out") == []  # T = 6 = end + grace
    part.feed(line("b", 7), 9)
    [closed] = records(part.drain(), "sessions-out")
    assert (closed["value"]["event_count"], closed["value"]["close_reason"]) == (2, "max_events")


def test_a_closed_session_is_emitted_exactly_once_and_never_changes():
    rules = SessionRules(gap=10)
    out = run(spec(rules), [line("a", 0), line("a", 50), line("a", 5), line("a", 60)])
    emitted = [session_tuple(r)[:4] for r in records(out, "sessions-out")]
    assert emitted == [("a", 0, 0, 1), ("a", 50, 60, 2)]
    assert [d["error"] for d in dead_letters(out)] == ["late"]


def test_end_of_input_closes_open_sessions_with_reason_end_of_input():
    rules = SessionRules(gap=10, max_events=2)
    assert sessions_of(rules, [("a", 0), ("a", 1), ("b", 2)]) == [
        ("a", 0, 1, 2, "max_events"), ("b", 2, 2, 1, "end_of_input")]


def test_without_end_of_input_nothing_is_emitted_early():
    assert sessions_of(SessionRules(gap=10), [("a", 0), ("a", 5)], end=False) == []


# -- out of order and late --------------------------------------------------------------------

def test_out_of_order_record_within_gap_extends_an_open_session_with_grace_0():
    assert sessions_of(SessionRules(gap=10, grace=0), [("a", 20), ("a", 12)]) == [
        ("a", 12, 20, 2, "end_of_input")]


def test_two_sessions_bridged_by_a_record_within_grace_become_one():
    # a@0 and a@30 are two sessions (gap 20); a@15 arrives later, within 20 of both: one session.
    rules = SessionRules(gap=20, grace=30)
    assert sessions_of(rules, [("a", 0), ("a", 30), ("a", 15)]) == [("a", 0, 30, 3, "end_of_input")]


def test_bridging_is_refused_once_the_earlier_session_closed():
    rules = SessionRules(gap=20, grace=0)
    # T = 30 > 0 + 20 + 0 closes a@0, so a@15 cannot bridge into it; it joins a@30 instead.
    assert sessions_of(rules, [("a", 0), ("a", 30), ("a", 15)]) == [
        ("a", 0, 0, 1, "inactivity"), ("a", 15, 30, 2, "end_of_input")]


def test_record_at_or_before_the_end_of_the_latest_closed_session_is_late():
    rules = SessionRules(gap=1000, grace=100, max_events=2)
    # a@0,a@5 is full; a@150 opens the next and T=150 closes the first (150 > 5 + 100).
    # a@5 (line 4) is at that closed end: late, though it could join a@150 by the sweep.
    # a@6 (line 5) is after it and joins a@150.
    assert late_lines(rules, [("a", 0), ("a", 5), ("a", 150), ("a", 5), ("a", 6)]) == [4]


def test_record_whose_session_would_already_be_closed_is_late():
    rules = SessionRules(gap=10, grace=5)
    # T = 100; a lone a@50 would close at T > 65: late. a@90 would close at T > 105: on time.
    assert late_lines(rules, [("b", 100), ("a", 50), ("a", 90)]) == [2]


def test_max_events_reached_then_an_out_of_order_record_earlier_than_that_sessions_end():
    rules = SessionRules(gap=100, grace=50, max_events=3)
    # a@10,20,30 is full; a@40 opens the next. a@15 arrives: the sweep is 10,15,20 | 30,40.
    assert sessions_of(rules, [("a", 10), ("a", 20), ("a", 30), ("a", 40), ("a", 15)]) == [
        ("a", 10, 20, 3, "max_events"), ("a", 30, 40, 2, "end_of_input")]


def test_out_of_order_record_into_a_full_session_that_has_closed_is_late():
    rules = SessionRules(gap=100, grace=5, max_events=2)
    out = run(spec(rules), [line("a", 10), line("a", 20), line("a", 40), line("a", 15)])
    assert [session_tuple(r)[1:4] for r in records(out, "sessions-out")] == [(10, 20, 2), (40, 40, 1)]
    [letter] = dead_letters(out)
    assert (letter["error"], letter["aggregation"], letter["source"]) == ("late", "sessions", {"line": 4})


def test_an_out_of_order_record_that_shortens_a_full_session_may_close_it_at_once():
    # a@0,a@10 full (closes at T > 10 + grace 20 = 30). At T=25, a@1 arrives: sweep 0,1 | 10:
    # {0,1} is full and closes at T > 21: already passed, so a@1 is late and nothing changes.
    rules = SessionRules(gap=100, grace=20, max_events=2)
    out = run(spec(rules), [line("a", 0), line("a", 10), line("b", 25), line("a", 1)])
    assert [session_tuple(r)[1:4] for r in records(out, "sessions-out") if r["user_id"] == "a"] == [(0, 10, 2)]
    assert [d["source"]["line"] for d in dead_letters(out)] == [4]


# -- close reasons ------------------------------------------------------------------------

def test_close_reason_is_what_cut_the_session_when_a_record_follows():
    rules = SessionRules(gap=10, max_duration=15)
    assert sessions_of(rules, [("a", 0), ("a", 10), ("a", 16), ("a", 40)]) == [
        ("a", 0, 10, 2, "max_duration"), ("a", 16, 16, 1, "inactivity"), ("a", 40, 40, 1, "end_of_input")]


def test_close_reason_without_a_following_record_is_max_events_when_full_else_inactivity():
    rules = SessionRules(gap=10, max_events=2)
    part = new_partition(spec(rules))
    for n, (k, t) in enumerate([("a", 0), ("a", 1), ("c", 3), ("b", 100)]):
        part.feed(line(k, t), n)
    got = sorted((r["user_id"], r["value"]["close_reason"]) for r in records(part.drain(), "sessions-out"))
    assert got == [("a", "max_events"), ("c", "inactivity")]


def test_close_reason_skips_a_full_session_that_closes_sooner_in_the_same_batch():
    # [224] is cut from 226 by max_duration, but the full [226, 227] closes at T > 256, before
    # [224] at T > 276: when [224] closes, the record after it in the sweep is 276 or 277, an
    # inactivity cut, whether T passed 256 first (in order) or jumped to 277 (277 before 276).
    rules = SessionRules(gap=23, grace=29, max_duration=1, max_events=2)
    in_order = [("a", 0), ("a", 224), ("a", 226), ("a", 227), ("a", 276), ("a", 277)]
    arrived = in_order[:4] + [("a", 277), ("a", 276)]
    expected = [("a", 0, 0, 1, "inactivity"), ("a", 224, 224, 1, "inactivity"),
                ("a", 226, 227, 2, "max_events"), ("a", 276, 277, 2, "max_events")]
    assert sessions_of(rules, arrived) == expected
    assert sorted(sessions_of(rules, in_order)) == expected


# -- output fields ---------------------------------------------------------------------------

def test_session_totals_game_code_and_channel_of_the_last_record_that_has_one():
    lines = [
        line("a", 0, stake="1.5", win="0", game="g1", channel="web"),
        line("a", 1, stake="2", win="10", game="g2"),
        line("a", 2, stake="0.5"),
    ]
    [session] = records(run(spec(SessionRules(gap=10)), lines), "sessions-out")
    assert session["value"]["game_code"] == "g2"
    assert session["value"]["channel"] == "web"
    assert session_tuple(session)[4:6] == (4_000_000, 10_000_000)
    assert b'"net_total":6,' in run(spec(SessionRules(gap=10)), lines)[0].value


def test_session_envelope_fields_and_timestamp_start_or_end():
    from sessionizer.core.spec import JobSpec, SessionOutput

    lines = [line("a", 1767268800000), line("a", 1767268865000)]
    for stamp_end, expected in [(False, "2026-01-01 12:00:00"), (True, "2026-01-01 12:01:05")]:
        job = JobSpec(sessions=SessionOutput("s", SessionRules(gap=600_000), "sess", stamp_end))
        [record] = records(run(job, lines), "s")
        assert list(record) == ["event", "user_id", "timestamp", "value", "user_attributes"]
        assert record["event"] == "sess" and record["timestamp"] == expected
        assert record["user_attributes"] == {}
        assert list(record["value"]) == ["session_start_ms", "session_end_ms", "duration_ms", "event_count",
                                         "stake_total", "win_total", "net_total", "game_code", "channel",
                                         "close_reason"]
        assert record["value"]["duration_ms"] == 65000


def test_closed_end_is_kept_while_a_chain_of_late_records_could_reach_it():
    # Uncapped: a@0 closes; later a@18 and an out-of-order a@1 chain back to 0. a@0 is still
    # late (at or before the closed end), as the contract says, however long ago it closed.
    rules = SessionRules(gap=1, grace=16)
    assert late_lines(rules, [("a", 0), ("b", 17), ("a", 18), ("a", 1), ("a", 0)]) == [5]


def test_closed_end_of_a_capped_session_is_forgotten_once_it_cannot_matter():
    rules = SessionRules(gap=10, grace=0, max_duration=20)
    part = new_partition(spec(rules))

    def closed_ends():  # key -> end of its latest closed session, as the state says
        return {key: _STATE_DECODER.decode(value)[0] for key, value in part.snapshot()["sessions"] if key}

    part.feed(line("a", 0), 1)
    part.feed(line("b", 11), 2)  # closes a's session
    assert closed_ends() == {"a": 0, "b": -1}
    part.feed(line("b", 30), 3)
    assert closed_ends() == {"a": 0, "b": 11}
    part.feed(line("b", 31), 4)  # 31 = 0 + max_duration 20 + gap 10 + grace 0 + 1
    assert closed_ends() == {"b": 11}


def test_keys_closing_together_come_out_in_the_same_order_after_a_restore():
    """b's session closes before a's (a's later record moved its close time), but a's first record
    scheduled it as early as b's: without putting a back at its own close time when that entry
    came up, a came out first when uninterrupted and b first after a restore (which schedules
    each key at its own close time). Now both say b, then a: (close time, key) order."""
    job = spec(SessionRules(gap=1, grace=0))
    lines = [line("a", 0, "1"), line("b", 0, "1"), line("a", 1, "1"), line("p1", 1000, "1")]

    def keys_out(cut: int | None) -> list[str]:
        part, out = new_partition(job), []
        for n, raw in enumerate(lines):
            if n == cut:
                snapshot = part.snapshot()
                part = new_partition(job)
                for store, state in snapshot.items():
                    part.restore(store, state)
                part.finish_restore()
            part.feed(raw, n)
            out += [output.key for output in part.drain()]
        return out

    assert keys_out(None) == keys_out(3) == ["b", "a"]
