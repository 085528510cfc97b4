"""SPEC section 5: dead letters, one per rejected record (per aggregation for lateness)."""

import base64

import orjson

from helpers import dead_letters, line, run, spec
from sessionizer.core.native import new_partition
from sessionizer.core.sessions import SessionRules
from sessionizer.core.spec import JobSpec, RollingOutput
from sessionizer.core.windows import WindowRules

EVERY_CODE = {
    "invalid_json": b"{nope",
    "not_an_object": b"[1, 2]",
    "missing_key": b'{"timestamp": 1}',
    "bad_key": b'{"user_id": 1.5, "timestamp": 1}',
    "missing_time": b'{"user_id": "a"}',
    "bad_time": b'{"user_id": "a", "timestamp": "yesterday"}',
    "bad_amount": b'{"user_id": "a", "timestamp": 1, "value": {"stake": -1}}',
    "bad_field": b'{"user_id": "a", "timestamp": 1, "value": {"channel": 3}}',
}


def test_every_record_level_code_has_one_dead_letter_with_null_aggregation():
    out = run(spec(SessionRules(gap=10)), list(EVERY_CODE.values()))
    letters = dead_letters(out)
    assert [d["error"] for d in letters] == list(EVERY_CODE)
    for letter, raw in zip(letters, EVERY_CODE.values()):
        assert list(letter) == ["error", "detail", "aggregation", "record", "source"]
        assert letter["aggregation"] is None
        assert letter["record"] == raw.decode()
        assert letter["detail"]


def test_every_aggregation_level_code():
    job = JobSpec(sessions=spec(SessionRules(gap=10)).sessions, rolling=(
        RollingOutput("hop", WindowRules(size=20, advance=10)),
        RollingOutput("by-game", WindowRules(size=10, advance=10), group_by="value.game_code"),
    ))
    out = run(job, [line("a", 25, game="g"), line("a", 15, game="g"), line("a", 3)])
    got = sorted((d["error"], d["aggregation"], d["source"]["line"]) for d in dead_letters(out))
    assert got == [
        ("late", "by-game", 2),  # [10,20) closed at T=25 (no grace)
        ("late", "hop", 3),  # [0,20) closed, and a@3 is in no other window
        ("late", "sessions", 3),  # alone (a@15 joined a@25), it would close at T > 13
        ("missing_group", "by-game", 3),
        ("partially_late", "hop", 2),  # [0,20) closed, [10,30) open
    ]


def test_detail_names_the_field_and_what_was_wrong():
    [letter] = dead_letters(run(spec(SessionRules(gap=10)), [EVERY_CODE["bad_amount"]]))
    assert letter["detail"] == "value.stake: -1 is negative"


def test_invalid_utf8_is_kept_exactly_in_record_base64():
    raw = b'{"user_id": "\xff\xfe", "timestamp": 1}'
    [letter] = dead_letters(run(spec(SessionRules(gap=10)), [raw]))
    assert letter["error"] == "invalid_json"
    assert letter["record"] == '{"user_id": "\ufffd\ufffd", "timestamp": 1}'
    assert base64.b64decode(letter["record_base64"]) == raw


def test_valid_utf8_has_no_record_base64():
    [letter] = dead_letters(run(spec(SessionRules(gap=10)), ['{"user_id": "é"'.encode()]))
    assert "record_base64" not in letter and letter["record"] == '{"user_id": "é"'


def test_source_is_passed_through_and_may_be_described_lazily():
    part = new_partition(spec(SessionRules(gap=10)), describe_source=lambda s: {"file": s[0], "line": s[1]})
    part.feed(b"x", ("in.jsonl", 7))
    [out] = part.drain()
    assert orjson.loads(out.value)["source"] == {"file": "in.jsonl", "line": 7}


def test_null_kafka_value_is_invalid_json_with_null_record():
    part = new_partition(spec(SessionRules(gap=10)))
    part.feed(None, {"offset": 3})
    [letter] = [orjson.loads(o.value) for o in part.drain()]
    assert (letter["error"], letter["record"]) == ("invalid_json", None)


def test_processing_goes_on_after_dead_letters():
    out = run(spec(SessionRules(gap=10)), [*EVERY_CODE.values(), line("a", 5)])
    assert [o.topic for o in out].count("sessions-out") == 1


def test_an_oversized_dead_letter_is_shrunk_but_keeps_its_trace():
    from sessionizer.core.envelope import dead_letter, shrink_dead_letter

    letter = dead_letter("invalid_json", "not JSON: truncated", None, b'{"x":"' + b"\x01" * 300_000, {"offset": 9})
    small = shrink_dead_letter(letter, 100_000)
    assert len(small) <= 100_000
    decoded = orjson.loads(small)
    assert decoded["record_truncated"] is True
    assert decoded["error"] == "invalid_json" and decoded["source"] == {"offset": 9}
    assert decoded["record"].startswith('{"x":"') and len(decoded["record"]) > 1000
