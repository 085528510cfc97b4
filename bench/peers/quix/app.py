"""The Quix Streams peer of `make bench-compare`: per-player session windows (10 min gap,
30 s grace) and 2-minute tumbling windows (30 s grace), `.final()` results only, exactly-once,
sums in integer micro-units (exact), written as the Xtremepush envelope JSON.

Tuned as its experts would for this job: sessionizer's 250 ms commit interval, and the
"partition" closing strategy (a record moves time for its whole partition, as in sessionizer
and Kafka Streams; the default "key" closes a player's windows only when that player sends
again, so most windows of a finished stream never close).

    python app.py BOOTSTRAP INPUT_TOPIC GROUP SESSIONS_TOPIC ROLLING_TOPIC STATE_DIR
"""

import sys
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import orjson
from quixstreams import Application
from quixstreams.dataframe.windows.aggregations import Count, Latest, Sum
from quixstreams.models.serializers import BytesDeserializer, BytesSerializer

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def event_time(text_or_ms) -> int:
    if isinstance(text_or_ms, int):
        return text_or_ms
    if "T" in text_or_ms:
        return int((datetime.fromisoformat(text_or_ms.replace("Z", "+00:00")) - EPOCH) / timedelta(milliseconds=1))
    moment = datetime.fromisoformat(text_or_ms).replace(tzinfo=timezone.utc)
    return int((moment - EPOCH) / timedelta(milliseconds=1))


def micros(value) -> int:
    return int(Decimal(str(value)) * 1_000_000) if value is not None else 0


def parse(raw: bytes):
    record = orjson.loads(raw)
    value = record.get("value") or {}
    return {"t": event_time(record["timestamp"]), "stake": micros(value.get("stake")), "win": micros(value.get("win")),
            "game": value.get("game_code"), "channel": value.get("channel")}


def amount(m: int) -> orjson.Fragment:
    whole, frac = divmod(abs(m), 1_000_000)
    text = f"{whole}" if not frac else f"{whole}.{frac:06d}".rstrip("0")
    return orjson.Fragment(("-" if m < 0 else "") + text)


def stamp(ms: int) -> str:
    return (EPOCH + timedelta(milliseconds=ms - ms % 1000)).strftime("%Y-%m-%d %H:%M:%S")


def totals():
    """Mergeable aggregations: session windows merge two sessions when a record bridges them."""
    return dict(count=Count(), stake=Sum("stake"), win=Sum("win"), game=Latest("game"), channel=Latest("channel"))


def main() -> None:
    bootstrap, input_name, group, sessions_name, rolling_name, state_dir = sys.argv[1:7]
    app = Application(broker_address=bootstrap, consumer_group=group, auto_offset_reset="earliest",
                      processing_guarantee="exactly-once", state_dir=state_dir, loglevel="WARNING",
                      commit_interval=0.25)
    source = app.topic(input_name, key_deserializer="str", value_deserializer=BytesDeserializer(),
                       timestamp_extractor=lambda value, headers, ts, kind: parse(value)["t"])
    sessions_out = app.topic(sessions_name, key_serializer="str", value_serializer=BytesSerializer())
    rolling_out = app.topic(rolling_name, key_serializer="str", value_serializer=BytesSerializer())

    spins = app.dataframe(source).apply(parse)

    def session_record(window, key, _timestamp, _headers):
        v = window
        return orjson.dumps({"event": "session", "user_id": key, "timestamp": stamp(window["start"]), "value": {
            "session_start_ms": window["start"], "session_end_ms": window["end"],
            "duration_ms": window["end"] - window["start"], "event_count": v["count"],
            "stake_total": amount(v["stake"]), "win_total": amount(v["win"]), "net_total": amount(v["win"] - v["stake"]),
            "game_code": v["game"], "channel": v["channel"], "close_reason": "inactivity"}, "user_attributes": {}})

    def rolling_record(window, key, _timestamp, _headers):
        v = window
        return orjson.dumps({"event": "session_summary", "user_id": key, "timestamp": stamp(window["start"]), "value": {
            "window_start_ms": window["start"], "window_end_ms": window["end"], "event_count": v["count"],
            "stake_total": amount(v["stake"]), "win_total": amount(v["win"]), "net_total": amount(v["win"] - v["stake"])},
            "user_attributes": {}})

    (spins.session_window(inactivity_gap_ms=600_000, grace_ms=30_000).agg(**totals()).final(closing_strategy="partition")
        .apply(session_record, metadata=True).to_topic(sessions_out))
    (spins.tumbling_window(duration_ms=120_000, grace_ms=30_000).agg(**totals()).final(closing_strategy="partition")
        .apply(rolling_record, metadata=True).to_topic(rolling_out))
    app.run()


if __name__ == "__main__":
    main()
