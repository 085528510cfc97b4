"""SPEC section 1: input records, field rules, error codes and their order."""

import pytest

from helpers import codes, dead_letters, line, micros, records, run, session_tuple, spec
from sessionizer.core.amounts import AmountError, JsonNumber, format_micros, parse_amount
from sessionizer.core.events import Event, EventDecoder, InputFields, Invalid
from sessionizer.core.native import new_partition
from sessionizer.core.sessions import SessionRules
from sessionizer.core.times import TimeError, format_time, parse_time

DECODER = EventDecoder(InputFields())
JOB = spec(SessionRules(gap=1000))


def decode(raw: bytes):
    result = DECODER.decode(raw)
    return Event(*result) if type(result) is tuple else result


def error_of(raw: bytes) -> str:
    result = decode(raw)
    assert isinstance(result, Invalid), result
    return result.error


# -- amounts: exact decimals, never floats ------------------------------------------

def test_amounts_are_exact_decimals_0_1_plus_0_2_is_0_3():
    out = run(JOB, [line("a", 0, stake="0.1"), line("a", 1, stake="0.2")])
    [session] = records(out, "sessions-out")
    assert session_tuple(session)[4] == 300_000
    assert b'"stake_total":0.3,' in out[0].value


@pytest.mark.parametrize("value, micro", [
    (b'0.1', 100_000), (b'"12.500000"', 12_500_000), (b'1e2', 100_000_000), (b'1E2', 100_000_000),
    (b'12', 12_000_000), (b'0', 0), (b'1.5000000', 1_500_000), (b'"7"', 7_000_000), (b'null', 0),
    (b'1000000000000', 10**18), (b'"0.000001"', 1), (b'-0.0', 0), (b'2.5e-1', 250_000),
])
def test_amount_accepted_forms(value, micro):
    event = decode(b'{"user_id":"a","timestamp":1,"value":{"stake":' + value + b'}}')
    assert isinstance(event, Event), event
    assert event.stake == micro


def test_absent_amount_counts_as_zero():
    event = decode(b'{"user_id":"a","timestamp":1}')
    assert (event.stake, event.win) == (0, 0)


@pytest.mark.parametrize("value, detail", [
    (b'-1', "value.stake: -1 is negative"),
    (b'1e13', "value.stake: 1e13 is more than 10^12"),
    (b'0.0000001', "value.stake: 0.0000001 has more than 6 decimal places"),
    (b'true', "value.stake: true is a boolean, not a number"),
    (b'"abc"', 'value.stake: "abc" is not a number'),
    (b'"NaN"', 'value.stake: "NaN" is not a number'),
    (b'"1_000"', 'value.stake: "1_000" is not a number'),
    (b'" 1"', 'value.stake: " 1" is not a number'),
    (b'[1]', "value.stake: a JSON array is not a number"),
    (b'{"v":1}', "value.stake: a JSON object is not a number"),
    (b'1e400', "value.stake: 1e400 is more than 10^12"),
    (b'1000000000000.000001', "value.stake: 1000000000000.000001 is more than 10^12"),
    (b'123456789012345678901234567890', "value.stake: 123456789012345678901234567890 is more than 10^12"),
])
def test_bad_amount_names_the_field_and_the_problem(value, detail):
    result = decode(b'{"user_id":"a","timestamp":1,"value":{"stake":' + value + b'}}')
    assert result == Invalid("bad_amount", detail)


def test_bad_win_is_bad_amount_naming_win():
    result = decode(b'{"user_id":"a","timestamp":1,"value":{"stake":1,"win":-0.5}}')
    assert result == Invalid("bad_amount", "value.win: -0.5 is negative")


def test_amount_parser_and_formatter_round_trip():
    for text in ["0", "0.3", "12", "1.5", "0.000001", "999999999999.999999", "1000000000000"]:
        assert format_micros(parse_amount(JsonNumber(text))) == text
    assert format_micros(-1_500_000) == "-1.5"
    assert format_micros(-1) == "-0.000001"
    with pytest.raises(AmountError):
        parse_amount(JsonNumber("1e-7"))


# -- event time -------------------------------------------------------------------

@pytest.mark.parametrize("value, millis", [
    (0, 0),
    (1767268800123, 1767268800123),
    (253402300799999, 253402300799999),
    ("2026-01-01 12:00:00", 1767268800000),
    ("2026-01-01 12:00:00.1", 1767268800100),
    ("2026-01-01 12:00:00.12", 1767268800120),
    ("2026-01-01 12:00:00.123", 1767268800123),
    ("2026-01-01 12:00:00.123999", 1767268800123),  # sub-millisecond digits are truncated
    ("2026-01-01T12:00:00Z", 1767268800000),
    ("2026-01-01T12:00:00.5Z", 1767268800500),
    ("2026-01-01T14:00:00+02:00", 1767268800000),
    ("2026-01-01T09:30:00.250-02:30", 1767268800250),
    ("1970-01-01 00:00:00", 0),
    ("9999-12-31 23:59:59.999999", 253402300799999),
    ("2024-02-29 00:00:00", 1709164800000),
])
def test_every_accepted_time_format(value, millis):
    assert parse_time(value) == millis


@pytest.mark.parametrize("value", [
    -1, 253402300800000, True, JsonNumber("1767268800000.0"), JsonNumber("1.7e12"),
    "2026-01-01", "2026-01-01 12:00", "2026-01-01T12:00:00", "2026-01-01 12:00:00Z",
    "2026-01-01 12:00:00+02:00", "2026-02-30 12:00:00", "2025-02-29 00:00:00", "2026-13-01 00:00:00",
    "2026-01-01 24:00:00", "2026-01-01 23:60:00", "2026-01-01 23:59:60", "2026-01-01 12:00:00.1234567",
    "2026-01-01t12:00:00z", "1969-12-31 23:59:59", "1970-01-01T00:30:00+01:00", "9999-12-31T23:00:00-02:00",
    "1767268800000", " 2026-01-01 12:00:00", "2026-01-01 12:00:00 ", "٢٠٢٦-01-01 12:00:00",
    "2026-01-01T12:00:00+24:00", "20260101T120000Z", [], {},
])
def test_bad_times_are_rejected(value):
    with pytest.raises(TimeError):
        parse_time(value)


def test_bad_time_dead_letter_names_the_field():
    result = decode(b'{"user_id":"a","timestamp":"2026-02-30 12:00:00"}')
    assert result == Invalid("bad_time", "timestamp: 2026-02-30 is not a calendar date")


def test_missing_time_absent_and_null():
    assert decode(b'{"user_id":"a"}') == Invalid("missing_time", "timestamp: absent")
    assert decode(b'{"user_id":"a","timestamp":null}') == Invalid("missing_time", "timestamp: null")


def test_output_timestamp_format_drops_the_fraction():
    assert format_time(1767268800999) == "2026-01-01 12:00:00"
    assert format_time(0) == "1970-01-01 00:00:00"
    assert format_time(253402300799999) == "9999-12-31 23:59:59"


# -- keys ---------------------------------------------------------------------------

def test_integer_keys_are_rendered_as_decimal_strings():
    out = run(JOB, [b'{"user_id":12345,"timestamp":1}', b'{"user_id":-7,"timestamp":2}',
                    b'{"user_id":123456789012345678901234567890,"timestamp":3}'])
    keys = sorted(r["user_id"] for r in records(out, "sessions-out"))
    assert keys == ["-7", "12345", "123456789012345678901234567890"]


@pytest.mark.parametrize("value, error", [
    (b'null', "missing_key"), (b'""', "bad_key"), (b'1.5', "bad_key"), (b'1.0', "bad_key"),
    (b'true', "bad_key"), (b'["a"]', "bad_key"), (b'{"id":1}', "bad_key"),
])
def test_bad_and_missing_keys(value, error):
    assert error_of(b'{"user_id":' + value + b',"timestamp":1}') == error


def test_absent_key_is_missing_key():
    assert decode(b'{"timestamp":1}') == Invalid("missing_key", "user_id: absent")


# -- game code and channel -------------------------------------------------------------

def test_game_code_and_channel_strings_or_null():
    event = decode(b'{"user_id":"a","timestamp":1,"value":{"game_code":"g","channel":null}}')
    assert (event.game_code, event.channel) == ("g", None)


@pytest.mark.parametrize("field, value", [("game_code", b"7"), ("channel", b"true"), ("channel", b"[]")])
def test_non_string_game_code_or_channel_is_bad_field(field, value):
    result = decode(b'{"user_id":"a","timestamp":1,"value":{"' + field.encode() + b'":' + value + b'}}')
    assert result.error == "bad_field"
    assert result.detail.startswith(f"value.{field}: ")


# -- JSON itself, and check order ------------------------------------------------------------

@pytest.mark.parametrize("raw", [
    b"", b"not json", b'{"user_id":"a"', b'{"a":NaN}', b'{"a":Infinity}', b"\xff\xfe", b'{"a":"\xff"}',
    b'{"a":1} {"b":2}', b"[" * 1025 + b"]" * 1025, b'{"a":' + b"1" * 5000 + b"}",
])
def test_not_json_is_invalid_json(raw):
    assert error_of(raw) == "invalid_json"


def test_nesting_up_to_1024_levels_is_json():
    deep = b'{"user_id":"a","timestamp":1,"x":' + b"[" * 1023 + b"]" * 1023 + b"}"
    assert isinstance(decode(deep), Event)
    deeper = b'{"user_id":"a","timestamp":1,"x":' + b"[" * 1024 + b"]" * 1024 + b"}"
    assert decode(deeper) == Invalid("invalid_json", "not JSON: nested more than 1024 levels deep")


def test_brackets_inside_strings_do_not_count_as_nesting():
    text = b'{"user_id":"a","timestamp":1,"x":"' + b"[" * 3000 + b'"}'
    assert isinstance(decode(text), Event)


@pytest.mark.parametrize("raw, kind", [(b"[]", "a JSON array"), (b'"s"', "a JSON string"), (b"1", "a JSON number"),
                                       (b"null", "JSON null"), (b"true", "a JSON boolean")])
def test_json_that_is_not_an_object(raw, kind):
    assert decode(raw) == Invalid("not_an_object", f"{kind} is not an object")


def test_checks_run_in_table_order_and_the_first_failure_names_the_error():
    # Bad key, bad time, bad amount and bad field all at once: the key is reported.
    raw = b'{"user_id":true,"timestamp":"x","value":{"stake":-1,"game_code":1}}'
    assert error_of(raw) == "bad_key"
    assert error_of(b'{"user_id":"a","timestamp":"x","value":{"stake":-1,"game_code":1}}') == "bad_time"
    assert error_of(b'{"user_id":"a","timestamp":1,"value":{"stake":-1,"game_code":1}}') == "bad_amount"
    assert error_of(b'{"user_id":"a","timestamp":1,"value":{"stake":"1","win":"x","game_code":1}}') == "bad_amount"
    assert error_of(b'{"user_id":"a","timestamp":1,"value":{"game_code":1,"channel":2}}') == "bad_field"


def test_a_path_through_a_non_object_is_absent():
    event = decode(b'{"user_id":"a","timestamp":1,"value":"not an object"}')
    assert isinstance(event, Event) and event.stake == 0 and event.game_code is None
    assert decode(b'{"user_id":"a","timestamp":1,"value":[1,2]}').stake == 0


def test_nested_field_paths_are_configurable():
    fields = InputFields(key="player.id", time="meta.at", stake="bet.amount.value", win="w", game_code="g",
                         channel="c")
    event = Event(*EventDecoder(fields).decode(
        b'{"player":{"id":9},"meta":{"at":5},"bet":{"amount":{"value":"2.5"}},"w":1,"g":"x","c":"y"}'))
    assert event[:6] == ("9", 5, 2_500_000, 1_000_000, "x", "y")


def test_duplicate_object_keys_take_the_last_value():
    event = decode(b'{"user_id":"a","user_id":"b","timestamp":1}')
    assert event.key == "b"


# -- the events filter ----------------------------------------------------------------------

def test_events_filter_skips_other_events_without_dead_letter_or_time_effect():
    job = spec(SessionRules(gap=10), fields=InputFields(events=frozenset({"spin"})))
    lines = [
        line("a", 100, event="spin"),
        line("a", 10_000, event="deposit"),  # skipped: must not advance stream time
        b'{"event":"login","user_id":true}',  # skipped even though its key is bad
        b'{"user_id":"a","timestamp":50}',  # no event field: not in the list
        b'[1]',  # not an object: still a dead letter
        line("a", 105, event="spin"),
    ]
    from sessionizer.core.native import new_partition

    part = new_partition(job)
    for n, raw in enumerate(lines):
        part.feed(raw, n)
    assert part.stream_time == 105
    assert part.stats.skipped == 3
    out = part.drain()
    assert codes(out) == {"not_an_object": 1}
    part.end_of_input()
    [session] = records(part.drain(), "sessions-out")
    assert session["value"]["event_count"] == 2


def test_each_invalid_record_yields_exactly_one_dead_letter_and_is_never_aggregated():
    out = run(JOB, [line("a", 1, stake="1"), b'{"user_id":"a","timestamp":2,"value":{"stake":-1}}',
                    line("a", 3, stake="2")])
    [session] = records(out, "sessions-out")
    assert session["value"]["event_count"] == 2
    assert session_tuple(session)[4] == 3_000_000
    [letter] = dead_letters(out)
    assert letter["error"] == "bad_amount" and letter["aggregation"] is None


@pytest.mark.parametrize("raw", [b'{"user_id":"a"}', b'{"user_id":"a","timestamp":null}'])
def test_a_record_without_its_event_time_is_missing_time_even_when_it_has_a_kafka_timestamp(raw):
    """The Kafka record timestamp is the event time only with `time = "@timestamp"`."""
    decoder = EventDecoder(InputFields())
    assert decoder.decode(raw, 5) == decoder.decode_exact(raw, 5)
    part = new_partition(spec(SessionRules(gap=10)))
    part.feed(raw, "src", 5)
    [letter] = dead_letters(part.drain())
    assert letter["error"] == "missing_time"
    kafka_time = new_partition(spec(SessionRules(gap=10), fields=InputFields(time="@timestamp")))
    kafka_time.feed(raw, "src", 5)
    kafka_time.end_of_input()
    assert [r["value"]["session_start_ms"] for r in records(kafka_time.drain(), "sessions-out")] == [5]
