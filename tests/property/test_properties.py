"""Properties of the core that must hold for every input (hypothesis)."""

from collections import Counter

from hypothesis import assume, given
from hypothesis import strategies as st

from helpers import decode, line, session_tuple, spec, window_tuple
from sessionizer.core.native import new_partition
from sessionizer.core.sessions import SessionRules
from sessionizer.core.windows import WindowRules
from test_core_matches_reference import session_rules, to_line, window_rules, streams


def run_lines(job, lines, drains=(), track_changes=False):
    part = new_partition(job, track_changes=track_changes)
    out = []
    for n, raw in enumerate(lines):
        part.feed(raw, {"line": n + 1})
        if n in drains:
            out += part.drain()
    part.end_of_input()
    return out + part.drain()


def as_multiset(outputs):
    return Counter((o.topic, o.key, o.value) for o in outputs)


def per_topic(outputs):
    """Each topic's records in order (the order that matters: within a topic)."""
    topics: dict[str, list] = {}
    for o in outputs:
        topics.setdefault(o.topic, []).append((o.key, o.value))
    return topics


# (a) -------------------------------------------------------------------------------------

@given(session_rules(), st.lists(window_rules(), max_size=2), streams(), st.sets(st.integers(0, 40)))
def test_output_does_not_depend_on_batches_or_when_emission_is_asked_for(srules, wrules, recs, drains):
    job = spec(srules, *wrules)
    lines = [to_line(r) for r in recs]
    assert per_topic(run_lines(job, lines)) == per_topic(run_lines(job, lines, drains=drains))


@given(session_rules(), st.lists(window_rules(), max_size=2), streams(), st.sets(st.integers(0, 40)))
def test_restoring_from_the_changelog_at_any_point_gives_the_same_output(srules, wrules, recs, cuts):
    """What the Kafka runtime relies on: a compacted changelog of `take_changes` restores a partition."""
    job = spec(srules, *wrules)
    lines = [to_line(r) for r in recs]
    expected = run_lines(job, lines)
    changelog: dict[str, dict[str, bytes]] = {}
    part = new_partition(job, track_changes=True)
    out = []
    for n, raw in enumerate(lines):
        part.feed(raw, {"line": n + 1})
        for store, changes in part.take_changes().items():
            for key, value in changes:
                if value is None:
                    changelog.setdefault(store, {}).pop(key, None)
                else:
                    changelog.setdefault(store, {})[key] = value
        out += part.drain()
        if n in cuts:  # the process dies here; a new one restores from the compacted changelog
            part = new_partition(job, track_changes=True)
            for store, records in changelog.items():
                part.restore(store, records.items())
            part.finish_restore()
    part.end_of_input()
    assert as_multiset(out + part.drain()) == as_multiset(expected)


@given(session_rules(), st.lists(window_rules(), max_size=2), streams(), st.integers(0, 40))
def test_a_snapshot_restores_the_same_state(srules, wrules, recs, cut):
    job = spec(srules, *wrules)
    lines = [to_line(r) for r in recs]
    expected = run_lines(job, lines)
    part = new_partition(job)
    out = []
    for n, raw in enumerate(lines):
        part.feed(raw, {"line": n + 1})
        if n == cut:
            out += part.drain()
            snapshot = part.snapshot()
            part = new_partition(job)
            for store, records in snapshot.items():
                part.restore(store, records)
            part.finish_restore()
            assert part.snapshot() == snapshot
    part.end_of_input()
    assert as_multiset(out + part.drain()) == as_multiset(expected)


# (b) -------------------------------------------------------------------------------------

@st.composite
def bounded_disorder(draw):
    """Distinct event times, each arriving at most `grace` after it happened."""
    grace = draw(st.integers(0, 40))
    times = sorted(draw(st.sets(st.integers(0, 400), max_size=40)))
    keys = [draw(st.sampled_from("ab")) for _ in times]
    delays = [draw(st.integers(0, grace)) for _ in times]
    arrival = sorted(range(len(times)), key=lambda i: (times[i] + delays[i], i))
    return grace, [(keys[i], times[i]) for i in range(len(times))], [(keys[i], times[i]) for i in arrival]


@given(st.integers(0, 40), st.none() | st.integers(0, 80), st.none() | st.integers(1, 5), st.sampled_from([5, 10]),
       st.integers(1, 3), bounded_disorder())
def test_with_distinct_times_and_no_record_later_than_grace_arrival_order_does_not_matter(
        gap, max_duration, max_events, advance, hops, disorder):
    grace, in_order, arrived = disorder
    job = spec(SessionRules(gap, grace, max_duration, max_events), WindowRules(advance * hops, advance, grace))
    expected = run_lines(job, [line(k, t, stake="1") for k, t in in_order])
    got = run_lines(job, [line(k, t, stake="1") for k, t in arrived])
    assert not [o for o in got if o.topic == "xp-dead-letter"]
    assert as_multiset(got) == as_multiset(expected)


# (c) and (d) ------------------------------------------------------------------------------

@given(session_rules(), st.sampled_from([5, 10, 20]), st.integers(0, 30), streams(max_size=60))
def test_totals_are_conserved_every_accepted_record_in_exactly_one_session_and_one_tumbling_window(
        srules, size, wgrace, recs):
    job = spec(srules, WindowRules(size, size, wgrace))
    out = run_lines(job, [to_line(r) for r in recs])
    late = {agg: set() for agg in ("sessions", "rolling0")}
    for o in out:
        if o.topic == "xp-dead-letter":
            letter = decode(o)
            late[letter["aggregation"]].add(letter["source"]["line"] - 1)
    for agg, topic, as_tuple in (("sessions", "sessions-out", session_tuple), ("rolling0", "rolling0", window_tuple)):
        kept = [r for r in recs if r.arrival not in late[agg]]
        emitted = [as_tuple(decode(o)) for o in out if o.topic == topic]
        count_at = 3
        assert sum(e[count_at] for e in emitted) == len(kept)
        assert sum(e[4] for e in emitted) == sum(r.stake for r in kept)
        assert sum(e[5] for e in emitted) == sum(r.win for r in kept)
        per_key = Counter(e[0] for e in emitted for _ in range(e[count_at]))
        assert per_key == Counter(r.key for r in kept)


@given(st.integers(1, 4), st.integers(0, 30), streams(max_size=60))
def test_in_order_records_count_in_every_hopping_window_that_contains_them(hops, grace, recs):
    assume(recs)
    recs = sorted(recs, key=lambda r: r.time)
    rules = WindowRules(10 * hops, 10, grace)
    out = run_lines(spec(None, rules), [to_line(r) for r in recs])
    windows = [window_tuple(decode(o)) for o in out if o.topic == "rolling0"]
    assert sum(w[3] for w in windows) == sum(len(rules.starts_of(r.time)) for r in recs)


@given(session_rules(), st.lists(window_rules(), min_size=1, max_size=2), streams(max_size=60))
def test_no_window_is_emitted_twice(srules, wrules, recs):
    out = run_lines(spec(srules, *wrules), [to_line(r) for r in recs])
    windows = Counter((o.topic, o.key, decode(o)["value"]["window_start_ms"]) for o in out
                      if o.topic.startswith("rolling"))
    assert all(n == 1 for n in windows.values())
    # Sessions of a key never overlap (max_events can cut between records of the same
    # millisecond, so two sessions may share a start), and together they hold each accepted
    # record once: a session emitted twice would break one or the other.
    late = {decode(o)["source"]["line"] - 1 for o in out
            if o.topic == "xp-dead-letter" and decode(o)["aggregation"] == "sessions"}
    sessions = sorted((session_tuple(decode(o)) for o in out if o.topic == "sessions-out"), key=lambda s: s[:3])
    for before, after in zip(sessions, sessions[1:]):
        if before[0] == after[0]:
            assert after[1] >= before[2]
    assert sum(s[3] for s in sessions) == sum(1 for r in recs if r.arrival not in late)
