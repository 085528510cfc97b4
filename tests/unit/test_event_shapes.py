"""SPEC section 7 rule by rule, on small hand-made feeds: event types and their fields, records
that do not count, negation, duplicates, extra aggregates, and the dead letters' wording."""

import tomllib

import orjson
import pytest

from helpers import codes, dead_letters, records
from sessionizer.config import build_spec, parse_config
from sessionizer.core.native import new_partition

WALLET = """
[input]
key = "playerId"
time = "ts"
event = "type"
events = ["BET", "WIN", "ROLLBACK"]
id = "txId"
game_code = "game"
[input.types.BET]
stake = "amount"
win = ""
[input.types.WIN]
stake = ""
win = "amount"
counts = false
[input.types.ROLLBACK]
stake = "amount"
win = ""
counts = false
negate = true

[sessions]
gap = "5m"
grace = "1m"
max_events = 3
[[sessions.aggregates]]
name = "largest_win"
kind = "max"
field = "amount"
types = ["WIN"]
[[sessions.aggregates]]
name = "games"
kind = "count_distinct"
field = "game"
[[sessions.aggregates]]
name = "first_game"
kind = "first"
field = "game"
[[sessions.aggregates]]
name = "bets"
kind = "count"
types = ["BET"]

[[rolling]]
topic = "per-game"
size = "5m"
group_by = "game"
[[rolling.aggregates]]
name = "players"
kind = "count_distinct"
field = "playerId"
[[rolling.aggregates]]
name = "last_win"
kind = "last"
field = "amount"
types = ["WIN"]
[[rolling.aggregates]]
name = "lucky"
kind = "last"
field = "lucky"
"""

MINUTE = 60_000


def job(text: str = WALLET):
    return build_spec(parse_config(tomllib.loads(text)))


def rec(kind, time_s, tx, amount=None, player="p1", game="starburst", **more) -> bytes:
    body = {"type": kind, "playerId": player, "ts": time_s * 1000, "txId": tx, "game": game, **more}
    if amount is not None:
        body["amount"] = orjson.Fragment(amount) if isinstance(amount, str) else amount
    return orjson.dumps(body)


def run(lines, spec=None):
    part = new_partition(spec or job())
    for number, line in enumerate(lines, 1):
        part.feed(line, {"line": number})
    part.end_of_input()
    return part.drain()


def values(outputs, topic="xp-session-events"):
    return [r["value"] for r in records(outputs, topic)]


def test_each_type_reads_its_own_fields_and_a_win_does_not_count():
    out = run([rec("BET", 1, "b1", "1.50"), rec("WIN", 2, "w1", "3.00"), rec("BET", 3, "b2", 2),
               rec("WIN", 4, "w2", "0.5")])
    [session] = values(out)
    assert session["event_count"] == 2 and session["bets"] == 2
    assert (session["stake_total"], session["win_total"], session["net_total"]) == (3.5, 3.5, 0)
    assert session["largest_win"] == 3 and session["games"] == 1 and session["first_game"] == "starburst"


def test_a_rollback_refunds_its_stake_and_totals_may_go_negative():
    out = run([rec("ROLLBACK", 1, "r1", 2), rec("BET", 2, "b1", "0.5")])
    [session] = values(out)
    assert (session["stake_total"], session["net_total"], session["event_count"]) == (-1.5, 1.5, 1)
    # amounts in records are still >= 0
    assert dead_letters(run([rec("ROLLBACK", 1, "r1", -2)]))[0]["detail"] == "amount: -2 is negative"


def test_a_full_session_takes_non_counting_records_and_closes_as_max_events():
    # three bets fill it; a win within grace still joins; the reason stays max_events
    out = run([rec("BET", 1, "b1", 1), rec("BET", 2, "b2", 1), rec("BET", 3, "b3", 1), rec("WIN", 30, "w1", 5),
               rec("BET", 4 * 60, "b4", 1)])
    first, second = values(out)
    assert (first["event_count"], first["win_total"], first["close_reason"]) == (3, 5, "max_events")
    assert first["session_end_ms"] == 30_000
    assert second["event_count"] == 1
    # a counting record would have been cut from it by max_events
    out = run([rec("BET", 1, "b1", 1), rec("BET", 2, "b2", 1), rec("BET", 3, "b3", 1), rec("BET", 30, "b4", 1)])
    assert [s["event_count"] for s in values(out)] == [3, 1]


def test_records_outside_the_events_list_are_skipped_by_the_type_path():
    spec = job()
    part = new_partition(spec)
    part.feed(rec("LOGIN", 1, "l1"), {"line": 1})
    part.feed(orjson.dumps({"event": "BET", "playerId": "p1", "ts": 1000, "amount": 1}), {"line": 2})  # no type
    assert part.stats.skipped == 2 and not part.drain()


def test_a_copy_of_a_held_record_is_one_duplicate_dead_letter_and_nothing_else():
    out = run([rec("BET", 100, "b1", 1), rec("BET", 100, "b1", 1, note="retried"),
               rec("BET", 10 * 60, "x", 1, player="p2"),  # moves stream time past every window holding b1
               rec("BET", 10 * 60, "b1", 1)])  # so this copy is a new record
    letters = dead_letters(out)
    assert [d["error"] for d in letters] == ["duplicate"]
    assert letters[0]["aggregation"] is None
    assert letters[0]["detail"].startswith('txId: "b1" is the id of a record of this key still held')
    assert [s["event_count"] for s in values(out)] == [1, 1, 1]


def test_a_duplicate_does_not_move_stream_time():
    spec = job()
    part = new_partition(spec)
    part.feed(rec("BET", 100, "b1", 1), {"line": 1})
    part.feed(rec("BET", 100_000, "b1", 1), {"line": 2})  # the same id, far later: still a duplicate
    assert part.stream_time == 100_000 and codes(part.drain()) == {"duplicate": 1}


def test_an_integer_id_and_its_decimal_string_are_one_id_and_other_keys_have_their_own():
    out = run([rec("BET", 1, 7, 1), rec("BET", 2, "7", 1), rec("BET", 3, 7, 1, player="p2")])
    assert codes(out) == {"duplicate": 1}


def test_once_the_first_copy_is_closed_a_copy_is_judged_like_any_record():
    lines = [rec("BET", 1, "b1", 1), rec("BET", 20 * 60, "x", 1, player="p2"), rec("BET", 1, "b1", 1)]
    assert codes(run(lines)) == {"late": 2}  # for sessions and for the window; not a duplicate


def test_a_window_still_open_holds_the_id_after_its_session_closed():
    """The native core holds a window's ids until the window's close time (not by a holder per
    window): a copy is a duplicate while only the window holds the first, and not once it closed."""
    part = new_partition(job())
    seen = []
    for number, line in enumerate([rec("BET", 100, "b1", 1), rec("BET", 101, "b2", 1), rec("BET", 102, "b3", 1),
                                   rec("BET", 200, "x", 1, player="p2"),  # closes p1's full session, not its window
                                   rec("BET", 100, "b1", 1),
                                   rec("BET", 400, "y", 1, player="p2"),  # closes the 5-minute window too
                                   rec("BET", 100, "b1", 1)], 1):
        part.feed(line, {"line": number})
        out = part.drain()
        seen.append((len(records(out, "xp-session-events")), dict(codes(out))))
    assert seen[3] == (1, {})  # the session holding b1 closed
    assert seen[4] == (0, {"duplicate": 1})  # its window [0, 5 min) still holds b1
    assert seen[6] == (0, {"late": 2})  # both closed: judged like any record


def test_a_record_id_of_another_kind_is_bad_field():
    for bad, shown in ((True, "true"), ("", '""'), ({"a": 1}, "an object"), (1.5, "1.5")):
        [letter] = dead_letters(run([rec("BET", 1, bad, 1)]))
        assert (letter["error"], letter["detail"]) == (
            "bad_field", f"txId: {shown} is not a record id (a non-empty string or an integer)")


def test_a_wrong_value_for_an_aggregate_it_feeds_is_bad_field_naming_the_path():
    [letter] = dead_letters(run([rec("WIN", 1, "w1", '"12abc"')]))
    assert letter["error"] == "bad_amount"  # section 1 first: amount is this type's win
    [letter] = dead_letters(run([rec("BET", 1, "b1", 1, game=["x"])]))
    assert letter["error"] == "bad_field" and letter["detail"].startswith("game: an array is not a string")
    [letter] = dead_letters(run([rec("BET", 1, "b1", 1, lucky={"a": 1})]))
    assert (letter["error"], letter["detail"]) == (
        "bad_field", "lucky: an object is not a string, a number or a boolean (last aggregate 'lucky')")


def test_a_record_is_not_checked_against_aggregates_its_type_does_not_feed():
    spec = job(WALLET + '[[sessions.aggregates]]\nname = "big_bet"\nkind = "max"\nfield = "note"\n'
                        'types = ["BET"]\n')
    out = run([rec("WIN", 1, "w1", 1, note="not a number"), rec("BET", 2, "b1", 1, note=4)], spec)
    [session] = values(out)
    assert session["big_bet"] == 4 and not dead_letters(out)
    [letter] = dead_letters(run([rec("BET", 2, "b1", 1, note="x")], spec))
    assert letter["detail"].startswith('note: "x" is not a number')


def test_aggregates_with_no_value_and_values_as_written():
    out = run([rec("BET", 1, "b1", 1, game=None, lucky="1.50"), rec("BET", 2, "b2", 1, game=None, lucky=True)])
    [session] = values(out)
    assert session["largest_win"] is None and session["games"] == 0 and session["first_game"] is None
    [window] = records(run([rec("BET", 1, "b1", 1, lucky="1.50"), rec("BET", 2, "b2", 1, lucky=True)]), "per-game")
    assert window["value"]["last_win"] is None and window["value"]["lucky"] is True
    raw = run([rec("WIN", 1, "w1", "1.50"), rec("BET", 2, "b1", 1, lucky=orjson.Fragment(b"2.50"))])
    assert b'"last_win":1.50' in [o.value for o in raw if o.topic == "per-game"][0]  # the number as written
    assert b'"lucky":2.50' in [o.value for o in raw if o.topic == "per-game"][0]


def test_window_first_and_last_follow_event_time_not_arrival():
    spec = job(WALLET + '[[rolling.aggregates]]\nname = "first_win"\nkind = "first"\nfield = "amount"\n'
                        'types = ["WIN"]\n')
    out = run([rec("WIN", 50, "w2", 2), rec("WIN", 10, "w1", 1), rec("WIN", 50, "w3", 3)], spec)
    [window] = records(out, "per-game")
    assert (window["value"]["first_win"], window["value"]["last_win"]) == (1, 3)


def test_a_plain_jobs_state_restores_into_a_shaped_job():
    """State written before the config used section 7 (the same stores) still loads."""
    plain = build_spec(parse_config(tomllib.loads(
        '[input]\nkey = "playerId"\ntime = "ts"\nstake = "amount"\ngame_code = "game"\n'
        '[sessions]\ngap = "5m"\ngrace = "1m"\nmax_events = 3\n[[rolling]]\ntopic = "per-game"\nsize = "5m"\n'
        'group_by = "game"\n')))
    before = new_partition(plain, track_changes=True)
    before.feed(orjson.dumps({"playerId": "p1", "ts": 1000, "amount": 2, "game": "starburst"}), {"line": 1})
    changes = before.take_changes()
    after = new_partition(job(), track_changes=True)
    for store, changelog in changes.items():
        after.restore(store, changelog)
    after.finish_restore()
    after.feed(rec("BET", 2, "b1", 1), {"line": 2})
    after.end_of_input()
    out = after.drain()
    [session] = values(out)
    assert (session["event_count"], session["stake_total"], session["bets"]) == (2, 3, 1)
    [window] = records(out, "per-game")
    assert window["value"]["event_count"] == 2 and window["value"]["players"] == 1


def test_the_compiled_cores_long_ids_take_memory_by_the_ids_held_not_by_the_ids_seen(core):
    """Ids longer than a registry slot holds in line are copied into one buffer; those of freed ids
    are dropped when it is rebuilt, which happens once the buffer is twice the texts held (not only
    when the table has grown fourfold: 4 KiB ids, 600 held, churned by 6,000 others, took about
    four times the held texts before)."""
    if core != "native":
        return  # the reference core keeps ids in a dict: nothing of its own to bound
    spec = job("""
[input]
key = "playerId"
time = "ts"
id = "txId"
stake = "amount"
[sessions]
gap = "1h"
grace = "1s"
max_events = 2
""")
    part = new_partition(spec)
    long_id = "x" * 4096

    def bet(player, second, tx):
        return orjson.dumps({"playerId": player, "ts": second * 1000, "txId": f"{tx}-{long_id}", "amount": 1})

    lines = [bet(f"held-{n}", 1, n) for n in range(600)]  # one record each: open sessions, held for an hour
    for n in range(3000):  # two records each: full sessions, closed (their ids freed) a second later
        lines += [bet(f"churn-{n}", 2 + n, f"a{n}"), bet(f"churn-{n}", 2 + n, f"b{n}")]
    peak = 0
    for number, line in enumerate(lines, 1):
        part.feed(line, {"line": number})
        held, buffer = part._engine.id_text_bytes()
        peak = max(peak, buffer / held)
    assert held >= 600 * 4096  # the held players' ids, and the last churned ones
    assert codes(part.drain()) == {}
    assert peak <= 2.1, f"the buffer of long ids reached {peak:.1f} times the texts held"


def test_a_partition_that_keeps_no_state_writes_the_same_records_and_refuses_a_snapshot(core):
    """Replay makes its partition with keeps_state=False, as nothing reads its state back: the
    compiled core then keeps no list of ids per window (the registry alone holds them). The
    records, duplicates included, are the same; asking it for its state is an error, not a state
    that would restore without its windows' ids."""
    no_aggregates = WALLET[:WALLET.index("[[rolling.aggregates]]")]
    feed = [rec("BET", 1, "b1", 2), rec("WIN", 2, "w1", 5), rec("BET", 3, "b1", 2), rec("BET", 400, "b2", 1),
            rec("BET", 401, "b1", 3), rec("BET", 402, "b2", 1)]
    for spec in (job(), job(no_aggregates)):
        outputs = []
        for keeps_state in (True, False):
            part = new_partition(spec, describe_source=lambda source: source, keeps_state=keeps_state)
            for number, line in enumerate(feed, 1):
                part.feed(line, {"line": number})
            if not keeps_state:
                with pytest.raises(RuntimeError, match="keeps no state"):
                    part.snapshot()
            part.end_of_input()
            outputs.append(part.drain())
        assert outputs[0] == outputs[1]
        # b1 at 3 s and b2 at 402 s: held by their sessions; b1 at 401 s: its first copy's session and window closed
        assert codes(outputs[0]) == {"duplicate": 2}
        assert len(records(outputs[0], "per-game")) == 2
