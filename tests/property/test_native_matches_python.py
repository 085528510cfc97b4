"""The compiled core against the pure-Python one, on input built to find where they could differ.

Both get the same lines, valid or not (odd numbers and times, unicode and escapes,
wrong types, not JSON at all) and must write the same bytes: the same final records
and dead letters in the same order, the same counts, and the same changelog records,
so that either core restores what the other wrote.
"""

import json

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sessionizer.core.events import InputFields
from sessionizer.core.native import NativePartition, duplicate_letter_pieces
from sessionizer.core.partition import Partition
from sessionizer.core.sessions import SessionRules
from sessionizer.core.spec import JobSpec, RollingOutput, SessionOutput
from sessionizer.core.windows import WindowRules


@pytest.fixture(autouse=True, scope="module")
def each_core():
    """(This module compares both cores itself.)"""


texts = st.text(st.characters(codec="utf-8"), max_size=6) | st.sampled_from(["p1", "p2", "é", "a\"b", "x\\y", ""])
times = st.one_of(
    st.integers(-5, 400_000), st.sampled_from([253402300799999, 253402300800000, 10**20]),
    st.sampled_from(["1970-01-01 00:00:01", "1970-01-01 00:00:01.5", "1970-01-01T00:00:02.123456Z",
                     "1970-01-01T01:00:03+01:00", "1970-01-01T00:00:03-00:30", "1970-01-01 00:00:04Z",
                     "1970-01-01T00:00:04", "1970-02-30 00:00:00", "1970-01-01 24:00:00", "1969-12-31 23:59:59",
                     "1970-01-01 00:00:05.", "1970-01-01 00:00:05.1234567", "0000-01-01 00:00:00", "nope"]),
    st.floats(allow_nan=False, allow_infinity=False), st.booleans(), st.none())
numbers = st.sampled_from(["0", "-0", "1", "12", "0.1", "0.20", "1.5000000", "0.0000001", "-1", "-0.0", "1e2",
                           "1E-6", "1000000000000", "1000000000001", "1000000000000.000001", "99999999999999999999",
                           "123456789012345678901234567890", "0.000001", "3.141592"])
# Numeric strings each core reads digit by digit: a wrong one would be read by one core and not the other.
NUMERIC_STRINGS = ["1.2.3", "1.", ".5", "+1", " 1", "1 ", "1.5x", "00012.50", "9999999999999", "9999999999999.999999",
                   "999999999999.999999", "1000000000000.0000001", "0.", ".", "12.3456789", "1..5"]
amounts = st.one_of(numbers.map(orjson.Fragment), numbers, st.sampled_from(NUMERIC_STRINGS), st.none(), st.booleans(),
                    st.just([]), st.just({}))
labels = st.one_of(st.none(), texts, st.integers(), st.just({"a": 1}))
keys = st.one_of(texts, st.integers(-10**20, 10**20), st.none(), st.booleans(), st.floats(allow_nan=False))


good_keys = st.sampled_from(["p1", "p2", "é", "a\"b", "x\\y", 12, -3, 0])
good_times = st.integers(0, 400_000) | st.sampled_from(
    ["1970-01-01 00:00:01", "1970-01-01 00:00:01.5", "1970-01-01T00:00:02.123456Z", "1970-01-01T01:00:03+01:00"])
good_amounts = st.none() | st.sampled_from(["0", "1", "12", "0.1", "0.20", "0.000001", "3.141592"]).map(orjson.Fragment)


@st.composite
def records(draw):
    """Mostly valid records (so the compiled path does the work), some wrong in one way or another."""
    if draw(st.integers(0, 2)):
        good = {"user_id": draw(good_keys), "timestamp": draw(good_times), "event": draw(st.sampled_from(["spin", "bet"])),
                "value": {"stake": draw(good_amounts), "win": draw(good_amounts), "game_code": draw(st.none() | texts),
                          "channel": draw(st.none() | texts)}}
        return orjson.dumps(good)
    body: dict = {}
    for name, values in (("user_id", keys), ("timestamp", times), ("event", st.sampled_from(["spin", "bet", 7]))):
        if draw(st.booleans()) or name == "timestamp":
            body[name] = draw(values)
    value = {name: draw(values) for name, values in
             (("stake", amounts), ("win", amounts), ("game_code", labels), ("channel", labels))
             if draw(st.integers(0, 4))}
    body["value"] = value if draw(st.integers(0, 5)) else draw(st.sampled_from([None, "x", [1]]))
    if draw(st.booleans()):
        body["other"] = draw(st.sampled_from([orjson.Fragment("1e400"), "\u2028", [{"deep": [1]}]]))
    try:
        raw = orjson.dumps(body)
    except TypeError:
        raw = json.dumps(body, default=str).encode()
    return draw(st.sampled_from([raw, raw, raw, raw, raw + b"  ", b"{" + raw, raw.replace(b'"', b"'", 1)]))


@st.composite
def mutated(draw):
    """A valid record with one byte inserted, replaced or deleted: the JSON reader's strictness."""
    raw = bytearray(draw(records()))
    at = draw(st.integers(0, len(raw)))
    byte = draw(st.sampled_from(b'{}[]",:\\0123456789.eE+-tfnul \t\r\n/\x00\x1f\x7f\xc3\xa9\xff'))
    how = draw(st.sampled_from(["insert", "replace", "delete"]))
    if how == "insert" or at == len(raw):
        raw.insert(at, byte)
    elif how == "replace":
        raw[at] = byte
    else:
        del raw[at]
    return bytes(raw)


junk = st.sampled_from([b"", b"[]", b"7", b"\"s\"", b"null", b"{\"user_id\": \"a\", \"timestamp\": NaN}",
                        b"\xff\xfe{}", b"{\"user_id\":\"a\",\"user_id\":\"b\",\"timestamp\":5}", b"[" * 2000])
lines = st.lists(st.one_of(records(), junk, mutated()), max_size=40)

jobs = st.builds(
    lambda events, sessions, rolling, by_game: JobSpec(
        fields=InputFields(events=frozenset(events)),
        sessions=SessionOutput("s", sessions) if sessions else None,
        rolling=tuple(RollingOutput(f"r{i}", rules, group_by="value.game_code" if by_game and i == 0 else None)
                      for i, rules in enumerate(rolling)) or (RollingOutput("r0", WindowRules(1000, 1000)),)),
    # many names: the compiled core then finds a record's type through a map, not a short list
    st.sampled_from([(), ("spin",), ("spin", *(f"other-{n}" for n in range(12)))]),
    st.none() | st.builds(SessionRules, gap=st.integers(0, 3000), grace=st.integers(0, 2000),
                          max_duration=st.none() | st.integers(0, 5000), max_events=st.none() | st.integers(1, 4)),
    st.lists(st.builds(lambda advance, n, grace: WindowRules(advance * n, advance, grace),
                       st.sampled_from([500, 1000]), st.integers(1, 3), st.integers(0, 2000)), max_size=2),
    st.booleans(),
)


def run(core, job, feed_lines, track_changes):
    part = core(job, track_changes=track_changes, describe_source=lambda s: {"line": s})
    out, changes = [], []
    for n, raw in enumerate(feed_lines):
        part.feed(raw, n)
        out.append((part.has_output, part.open_counts, part.drain_by_topic()))
        if track_changes and n % 2:  # every other record: changes of two records at once too
            changes.append(part.take_changes())
    part.end_of_input()
    out.append((part.has_output, part.open_counts, part.drain_by_topic()))
    if track_changes:  # what the end of input left changed (keys whose state is gone)
        changes.append(part.take_changes())
    stats = part.stats
    return out, changes, (stats.read, stats.valid, stats.skipped, dict(stats.dead_letters), dict(stats.out),
                          dict(stats.dead_letters_by))


@pytest.mark.parametrize("text", NUMERIC_STRINGS)
def test_both_cores_read_a_numeric_string_alike(text):
    job = JobSpec(sessions=SessionOutput("s", SessionRules(gap=1000, grace=0)))
    feed_lines = [orjson.dumps({"user_id": "p1", "timestamp": 5, "value": {"stake": text, "win": "0"}}),
                  orjson.dumps({"user_id": "p1", "timestamp": 6, "value": {"stake": "1", "win": text}})]
    assert run(NativePartition, job, feed_lines, False) == run(Partition, job, feed_lines, False)


# Text times whose date repeats, changes, or is no date: the compiled core keeps the last date it read.
DATED_TIMES = ["2026-11-02 18:00:00.682", "2026-11-02 18:00:01", "2026-11-02T18:00:02Z", "2026-11-02 24:00:00",
               "2026-11-02x18:00:03", "2026-11-03 00:00:00", "2026-02-29 00:00:00", "2026-02-28 23:59:59",
               "2024-02-29 12:00:00", "2024-02-29T12:00:01+01:00", "2026-13-01 00:00:00", "2026-11-0218:00:00",
               "1970-01-01 00:00:00", "1970-01-01 00:00:01", "2026-11-02 18:00:04.5", "2026-11-02 18:00:05"]


def test_both_cores_read_dated_times_alike():
    job = JobSpec(sessions=SessionOutput("s", SessionRules(gap=1000, grace=0)))
    feed_lines = [orjson.dumps({"user_id": "p1", "timestamp": text, "value": {"stake": "1", "win": "0"}})
                  for text in DATED_TIMES + DATED_TIMES[::-1]]
    native, python = run(NativePartition, job, feed_lines, False), run(Partition, job, feed_lines, False)
    assert native == python
    assert python[2][3]["bad_time"] == 10  # 5 of them are no time, each read twice


# What ends or escapes a string, at every position of strings up to 40 bytes long: the compiled
# reader looks for a string's end 16 bytes at a time, then 8, then one by one near the record's end.
ESCAPES = [b'\\"', b"\\\\", b"\\u00e9", b"\\n"]  # valid JSON
NOT_JSON = [b"\x01", b"\x1f", b'"', b"\\x"]  # a raw control character, an early end, an unknown escape


@pytest.mark.parametrize("special", ESCAPES + NOT_JSON)
def test_both_cores_find_a_strings_end_at_any_position(special):
    job = JobSpec(sessions=SessionOutput("s", SessionRules(gap=1000, grace=0)),
                  rolling=(RollingOutput("r0", WindowRules(1000, 1000), group_by="value.game_code"),))
    feed_lines = []
    for length in range(40):
        for at in range(length + 1):
            text = b"k" * at + special + b"x" * (length - at)
            feed_lines.append(b'{"user_id":"' + text + b'","timestamp":' + str(length).encode()
                              + b',"value":{"stake":1,"win":0,"game_code":"' + text + b'"}}')
    native, python = run(NativePartition, job, feed_lines, False), run(Partition, job, feed_lines, False)
    assert native == python
    assert sum(python[2][3].values()) == (len(feed_lines) if special in NOT_JSON else 0)


@given(jobs, lines, st.booleans())
def test_both_cores_write_the_same_bytes(job, feed_lines, track_changes):
    assert run(NativePartition, job, feed_lines, track_changes) == run(Partition, job, feed_lines, track_changes)


@given(jobs, lines, st.integers(0, 400))
def test_replay_text_goes_through_both_cores_alike(job, feed_lines, split):
    """feed_text: line ends, blank lines, a last line with no end and line numbers as replay
    reads a file, in two chunks (the first fed only up to its stop, with more text after it)."""
    ends = [b"\n", b"\r\n", b"\n\n", b" \n", b"\n"] * 10
    text = b"".join(raw + end for raw, end in zip(feed_lines, ends)).rstrip(b"\n")
    stop = text[:split].rfind(b"\n") + 1
    results = []
    # The compiled core as replay makes it too: keeping no state for anyone to read.
    for core, keeps_state in ((NativePartition, False), (NativePartition, True), (Partition, True)):
        part = core(job, describe_source=lambda s: {"file": s[0], "line": s[1]}, keeps_state=keeps_state)
        first = part.feed_text(text, stop, "in.jsonl", 3)
        second = part.feed_text(text[stop:], len(text) - stop, "in.jsonl", 3 + first)
        part.end_of_input()
        results.append((part.drain_lines_by_topic(), part.stats.read, part.stats.valid, first, second))
    assert results[0] == results[1] == results[2]
    assert results[0][3] + results[0][4] == (text.count(b"\n") + 1 if text else 0)


@given(jobs, lines, st.integers(0, 40))
def test_each_core_restores_what_the_other_wrote(job, feed_lines, cut):
    expected = run(Partition, job, feed_lines, False)[0]
    for writer, reader in ((Partition, NativePartition), (NativePartition, Partition)):
        part = writer(job, describe_source=lambda s: {"line": s})
        out = []
        for n, raw in enumerate(feed_lines):
            if n == cut:
                snapshot = part.snapshot()
                part = reader(job, describe_source=lambda s: {"line": s})
                for store, records_ in snapshot.items():
                    part.restore(store, records_)
                part.finish_restore()
                assert part.snapshot() == snapshot
            part.feed(raw, n)
            out.append(part.drain())
        part.end_of_input()
        out.append(part.drain())
        flat = [o for batch in out for o in batch]
        assert flat == [o for _, _, batch in expected for topic, recs in batch.items() for o in
                        [(topic, k, v) for k, v in recs]]


@given(jobs, lines, st.integers(0, 40))
def test_both_cores_restore_a_changelog_alike(job, feed_lines, cut):
    """A changelog as Kafka holds it (every change in order, tombstones and stream times included),
    restored in batches: both cores come back with the same state, and go on alike."""
    writer = Partition(job, track_changes=True, describe_source=lambda s: {"line": s})
    changelog: dict[str, list] = {}
    for n, raw in enumerate(feed_lines[:cut]):
        writer.feed(raw, n)
        writer.drain()
        for store, records_ in writer.take_changes().items():
            changelog.setdefault(store, []).extend(records_)
    results = []
    for reader in (NativePartition, Partition):
        part = reader(job, describe_source=lambda s: {"line": s})
        for store, records_ in changelog.items():
            for start in range(0, len(records_), 3):  # several batches per store, as the restore reads them
                part.restore(store, records_[start:start + 3])
        part.finish_restore()
        snapshot = part.snapshot()
        for n, raw in enumerate(feed_lines[cut:], cut):
            part.feed(raw, n)
        part.end_of_input()
        results.append((snapshot, part.drain()))
    assert results[0] == results[1]
    assert results[0][0] == writer.snapshot()


class Consumed:
    """A message as confluent-kafka's consume() hands it back (its Message cannot be built in Python)."""

    def __init__(self, topic: str, partition: int, key: bytes | None = None, value: bytes | None = None,
                 error: object = None) -> None:
        self._topic, self._partition, self._key, self._value, self._error = topic, partition, key, value, error

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def error(self) -> object:
        return self._error


@given(jobs, lines, st.integers(0, 40), st.randoms(use_true_random=False))
def test_both_cores_restore_from_consumed_messages_as_from_records(job, feed_lines, cut, rnd):
    """The restore reads confluent-kafka's messages in runs: each core takes the records of one
    topic's partition from where it is told and stops at the first that is not one (an end-of-partition
    event, another partition's or store's record). Two partitions' changelogs, interleaved at random,
    come back as each partition wrote them."""
    writers = {p: Partition(job, track_changes=True, describe_source=lambda s: {"line": s}) for p in (0, 1)}
    queues: dict[tuple[str, int], list] = {}
    for p, writer in writers.items():
        for n, raw in enumerate(feed_lines[:cut] if p == 0 else feed_lines[cut // 2:]):
            writer.feed(raw, n)
            writer.drain()
            for store, records_ in writer.take_changes().items():
                queues.setdefault((f"cl-{store}", p), []).extend(
                    Consumed(f"cl-{store}", p, key.encode(), value) for key, value in records_)
    messages = []
    while queues:  # each queue keeps its order; runs of 1-4 records, an end-of-partition event now and then
        where = rnd.choice(sorted(queues))
        queue = queues[where]
        taken = rnd.randint(1, 4)
        messages.extend(queue[:taken])
        del queue[:taken]
        if rnd.random() < 0.3:
            messages.append(Consumed(where[0], where[1], error=object()))
        if not queue:
            del queues[where]
    results = []
    for reader in (NativePartition, Partition):
        parts = {p: reader(job, describe_source=lambda s: {"line": s}) for p in writers}
        at = 0
        while at < len(messages):
            message = messages[at]
            if message.error() is not None:
                at += 1
                continue
            topic = message.topic()
            stop = parts[message.partition()].restore_messages(topic[3:], messages, at, topic, message.partition())
            assert stop > at
            at = stop
        for part in parts.values():
            part.finish_restore()
        results.append({p: part.snapshot() for p, part in parts.items()})
    assert results[0] == results[1] == {p: writer.snapshot() for p, writer in writers.items()}


def test_a_changelog_record_that_cannot_be_read_is_named():
    job = JobSpec(sessions=SessionOutput("s", SessionRules(gap=1000, grace=0)),
                  rolling=(RollingOutput("r0", WindowRules(1000, 1000)),))
    part = NativePartition(job)
    with pytest.raises(ValueError, match='session state of "p1" cannot be read'):
        part.restore("sessions", [("p1", b"\x94\x01")])
    with pytest.raises(ValueError, match='window totals of "1000:p1" cannot be read'):
        part.restore("r0", [("1000:p1", b"\x93\x01\x02")])
    with pytest.raises(ValueError, match="stream time"):
        part.restore("sessions", [("", b"soon")])


# SPEC section 7: typed records with ids and extra aggregates. Each core reads them itself (the
# compiled one hands odd values back to the Python decoder); both must aggregate, hold ids and
# write state to the same bytes.
from test_shapes_match_reference import AGGREGATES, DERIVABLE_AGGREGATES  # noqa: E402
from test_shapes_match_reference import job as shaped_job  # noqa: E402
from test_shapes_match_reference import session_rules, streams, to_line, window_rules  # noqa: E402

# Aggregates over fields of their own, and aggregates the compiled core's sessions derive (over each
# type's stake, win, game_code and channel paths): a record Python reads makes its key keep values;
# or none (types and ids alone: a key's records keep no values at all).
shaped_jobs = st.builds(shaped_job, st.none() | session_rules(), st.lists(window_rules(), max_size=2),
                        st.sampled_from([AGGREGATES, DERIVABLE_AGGREGATES, ()])).filter(
    lambda spec: spec.sessions or spec.rolling)
# Values an aggregate, an id or a type may meet: each core must accept the same ones, read them
# alike, and leave the rest to the Python decoder's dead letters.
wild = st.sampled_from([orjson.Fragment(n) for n in ("1.50", "-0.5", "1e2", "-0", "7", "-3", "0.0000001", "1000000000001",
                                                      "123456789012345678901")]
                       + ["1", "-2.25", "--1", "1.", ".5", "", "é\n\"x", "\u2028", True, False, None, [], {"a": 1},
                          # ids a dead letter's detail describes whole (40 characters) or cut (41)
                          "ñ" * 40, "ü" * 38 + '"\\x'])


@st.composite
def shaped_records(draw):
    """Typed records whose amounts, ids and aggregate fields take odd values as well as plain ones."""
    body = {"user_id": draw(good_keys), "timestamp": draw(good_times),
            "value": {"stake": draw(good_amounts | wild), "win": draw(good_amounts | wild),
                      "game_code": draw(st.none() | texts)}}
    if draw(st.booleans()):
        body["value"]["channel"] = draw(st.none() | texts | wild)
    for name, values in (("type", st.sampled_from(["BET", "WIN", "RB", "other", 7])), ("id", wild | keys.map(lambda k: orjson.Fragment(str(k)) if type(k) is int else k)),
                         ("v", wild), ("g", wild | texts)):
        if draw(st.booleans()):
            body[name] = draw(values)
    return orjson.dumps(body)


shaped_lines = st.builds(lambda recs, extra: [to_line(rec) for rec in recs] + extra, streams(),
                         st.lists(st.one_of(junk, mutated(), shaped_records()), max_size=12))


@given(shaped_jobs, shaped_lines, st.booleans())
def test_both_cores_write_the_same_bytes_for_shaped_records(job, feed_lines, track_changes):
    assert run(NativePartition, job, feed_lines, track_changes) == run(Partition, job, feed_lines, track_changes)


@given(shaped_jobs, shaped_lines, st.integers(0, 40))
def test_each_core_restores_what_the_other_wrote_for_shaped_records(job, feed_lines, cut):
    """Held ids and aggregate states included: a restart may change the core under a changelog."""
    test_each_core_restores_what_the_other_wrote.hypothesis.inner_test(job, feed_lines, cut)


@pytest.mark.parametrize("windows", [[], [WindowRules(size=100, advance=100, grace=0)]])
@pytest.mark.parametrize("id_of", [lambda n: f"t{n}", lambda n: f"{n:08d}-8a4c-4f1e-9b2a-3c6d5e7f9a0b"],
                         ids=["short ids", "uuid-long ids"])
def test_ids_stay_held_while_many_more_come_and_go(windows, id_of):
    """Thousands of ids (the compiled registry sweeps released ones, and their texts, once it has
    doubled): a copy of a record an open session holds is a duplicate in both cores, a copy of a
    closed one is not."""
    job = shaped_job(SessionRules(gap=50, grace=0), windows)
    lines = []
    for n in range(6000):
        lines.append(orjson.dumps({"user_id": f"p{n % 7}", "timestamp": n * 10, "type": "BET", "id": id_of(n),
                                   "value": {"stake": "1.5", "win": "0"}}))
        if n % 5 == 4:  # the record just before it: held by its open session
            lines.append(lines[-2])
        if n % 500 == 499:  # the id of a record long gone (its session and window closed), now again
            lines.append(orjson.dumps({"user_id": f"p{(n - 400) % 7}", "timestamp": n * 10, "type": "BET",
                                       "id": id_of(n - 400), "value": {"stake": "1.5", "win": "0"}}))
    python, native = run(Partition, job, lines, False), run(NativePartition, job, lines, False)
    assert native == python
    assert python[2][3] == {"duplicate": 1200}
    assert python[2][1] == 6000 + 12


@given(st.lists(st.tuples(st.integers(0, 39), st.sampled_from([0, 1, 998, 999, 1000, 1001, 1999, 2000, 2001, 5000])),
                min_size=1, max_size=120),
       st.sampled_from([0, 1, 999, 1000, 1001]), st.booleans())
def test_sessions_due_together_close_in_time_then_key_order(spins, gap, restart):
    """Many keys due at the same times, on and either side of whole seconds: the compiled core keeps
    due times in one small heap per second of due time, and must close keys in (time, key) order as
    the Python core's single heap does (also after a restore, which schedules every key again)."""
    job = JobSpec(sessions=SessionOutput("s", SessionRules(gap=gap, grace=0, max_duration=None, max_events=None)))
    feed_lines = [b'{"user_id":"k%02d","timestamp":%d,"value":{"stake":1,"win":0}}' % (key, time)
                  for key, time in sorted(spins, key=lambda spin: spin[1])]
    feed_lines.append(b'{"user_id":"late","timestamp":9000,"value":{"stake":1,"win":0}}')  # closes the rest
    outputs = []
    for core in (NativePartition, Partition):
        part = core(job, describe_source=lambda s: {"line": s})
        half = len(feed_lines) // 2
        for n, raw in enumerate(feed_lines[:half]):
            part.feed(raw, n)
        out = part.drain_by_topic()
        if restart:  # a new partition from a snapshot, as after a kill
            snapshot = part.snapshot()
            part = core(job, describe_source=lambda s: {"line": s})
            for store, records in snapshot.items():
                part.restore(store, records)
            part.finish_restore()
        for n, raw in enumerate(feed_lines[half:], half):
            part.feed(raw, n)
            out.update({topic: out.get(topic, []) + records for topic, records in part.drain_by_topic().items()})
        outputs.append(out)
    assert outputs[0] == outputs[1]


@given(shaped_jobs, shaped_lines, st.integers(0, 400))
def test_replay_text_goes_through_both_cores_alike_for_shaped_records(job, feed_lines, split):
    """The compiled core goes past duplicates in a chunk and hands them back together: their dead
    letters must still come in input order among the others (late, invalid), with their lines."""
    test_replay_text_goes_through_both_cores_alike.hypothesis.inner_test(job, feed_lines, split)


@pytest.mark.parametrize("label", ["in.jsonl", 'a "quoted"\\ é\tfile', "id-5f0c2e9a7b.jsonl"])
@pytest.mark.parametrize("describe_source", [lambda s: {"file": s[0], "line": s[1]}, None, lambda s: "somewhere"],
                         ids=["file and line", "as given", "no line"])
def test_duplicates_dead_letters_in_replay_are_the_same_bytes(label, describe_source):
    """The compiled core writes the dead letters of the duplicates it goes past in replay from pieces
    of one Python wrote (the wording stays Python's): ids described whole or cut, records that need
    escaping, any file name; where the pieces cannot be found (a file named like a stand-in, a source
    without the line) it hands the duplicates back to Python instead. Either way, Python's bytes."""
    job = shaped_job(SessionRules(gap=50, grace=0), [WindowRules(size=100, advance=100, grace=0)])
    pieces = duplicate_letter_pieces(job.fields.id, label, describe_source)
    assert (pieces is not None) == ("5f0c2e9a7b" not in label and (describe_source is None or
                                                                  describe_source(("", 1)) != "somewhere"))
    ids = ["t1", "", "ñ" * 40, "ü" * 38 + '"\\x', "é\n\"x\u2028\u0001" * 9, "u" * 200]
    lines = []
    for n, record_id in enumerate(ids):
        line = orjson.dumps({"user_id": "p\"1", "timestamp": n, "type": "BET", "id": record_id,
                             "value": {"stake": "1.5", "win": "0", "game_code": "g\u0007"}})
        lines += [line, line, b"", line]  # each copy a duplicate; a blank line counts as a line
    text = b"\n".join(lines) + b"\n"
    results = []
    for core in (NativePartition, Partition):
        part = core(job, describe_source=describe_source)
        read = part.feed_text(text, len(text), label, 5)
        part.end_of_input()
        results.append((part.drain_lines_by_topic(), part.stats.dead_letters, read))
    assert results[0] == results[1]
    assert results[0][1] == {"duplicate": 2 * (len(ids) - 1), "bad_field": 3}  # an empty id is a wrong one
    _, text_out = results[0][0][job.dead_letter_topic]  # (count, lines)
    letters = [letter for letter in map(orjson.loads, text_out.splitlines()) if letter["error"] == "duplicate"]
    assert letters[0]["detail"] == 'id: "t1" is the id of a record of this key still held by an open session or window'
    assert letters[4]["detail"].startswith('id: "' + "ü" * 37 + '..." is the id')


class Fetched:
    """An input message as the runtime's consumer hands it over (what `feed_messages` reads)."""

    def __init__(self, value: bytes | None, offset: int, partition: int = 0) -> None:
        self._value, self._offset, self._partition = value, offset, partition

    def value(self) -> bytes | None:
        return self._value

    def offset(self) -> int:
        return self._offset

    def partition(self) -> int:
        return self._partition

    def timestamp(self) -> tuple[int, int]:
        return (0, -1)

    def error(self) -> object:
        return None


@given(shaped_jobs, shaped_lines, st.lists(st.integers(0, 60), max_size=3))
def test_both_cores_take_runs_of_shaped_messages_alike(job, feed_lines, splits):
    """`feed_messages` in runs (as the runtime polls them): the compiled core goes past duplicates and
    hands them back with the next message that needs Python, so their dead letters must come in input
    order among the others, each naming its message."""
    messages = [Fetched(raw, offset) for offset, raw in enumerate(feed_lines)]
    bounds = sorted({0, len(messages), *(min(s, len(messages)) for s in splits)})
    results = []
    for core in (NativePartition, Partition):
        part = core(job, describe_source=lambda m: {"offset": m.offset()})
        fed, next_offset = 0, 0
        for start, stop in zip(bounds, bounds[1:]):
            _, next_offset, count = part.feed_messages(messages[:stop], start, 0, next_offset, False)
            fed += count
        part.end_of_input()
        results.append((part.drain_lines_by_topic(), part.stats.read, part.stats.valid, fed))
    assert results[0] == results[1]
    assert results[0][3] == len(messages)
