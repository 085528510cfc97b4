"""Output records: the Xtremepush event envelope, and dead letters (SPEC sections 3-5).

Amounts are written as exact JSON numbers from integer micro-units, never
through a float.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

from .amounts import json_amount
from .times import json_time

# Fixed-shape records are filled into byte templates (one C-level format per record);
# every string in them goes through orjson, which does the JSON escaping.
_SESSION = (b'{"event":%b,"user_id":%b,"timestamp":"%b","value":{"session_start_ms":%d,"session_end_ms":%d,'
            b'"duration_ms":%d,"event_count":%d,"stake_total":%b,"win_total":%b,"net_total":%b,'
            b'"game_code":%b,"channel":%b,"close_reason":"%b"},"user_attributes":{}}')
_WINDOW = (b'{"event":%b,"user_id":%b,"timestamp":"%b","value":{"window_start_ms":%d,"window_end_ms":%d,'
           b'"event_count":%d,"stake_total":%b,"win_total":%b,"net_total":%b},"user_attributes":{}}')
_dumps = orjson.dumps

# Game codes, channels and close reasons repeat: their JSON text is looked up, not re-encoded.
_label_json: dict[str | None, bytes] = {None: b"null"}


def _label(text: str | None) -> bytes:
    encoded = _label_json.get(text)
    if encoded is None:
        if len(_label_json) >= 4096:  # bounded against hostile input
            _label_json.clear()
            _label_json[None] = b"null"
        encoded = _label_json[text] = _dumps(text)
    return encoded


def session_record(event_name: bytes, stamp_end: bool, key: str, start: int, end: int, count: int, stake: int,
                   win: int, game_code: str | None, channel: str | None, reason: str) -> bytes:
    """`event_name` is already JSON (orjson.dumps of the name): it is the same for every record."""
    return _SESSION % (
        event_name, _dumps(key), json_time(end if stamp_end else start), start, end, end - start, count,
        json_amount(stake), json_amount(win), json_amount(win - stake), _label(game_code), _label(channel),
        _label(reason)[1:-1],
    )


def window_record(event_name: bytes, group: str, start: int, end: int, count: int, stake: int, win: int,
                  start_text: bytes | None = None) -> bytes:
    """`start_text`: json_time(start), when the caller has it (every group of a window shares it)."""
    return _WINDOW % (
        event_name, _dumps(group), start_text or json_time(start), start, end, count,
        json_amount(stake), json_amount(win), json_amount(win - stake),
    )


_VALUE_END = b'},"user_attributes":{}}'


def with_aggregates(record: bytes, aggregates: bytes) -> bytes:
    """A session or window record with `,"name":value...` (SPEC 7.3) added at the end of its `value`."""
    assert record.endswith(_VALUE_END)
    return record[:-len(_VALUE_END)] + aggregates + _VALUE_END


def dead_letter(error: str, detail: str, aggregation: str | None, raw: bytes | None, source: Any) -> bytes:
    """One dead-letter record; `record_base64` keeps the exact bytes when they are not UTF-8."""
    letter: dict[str, Any] = {"error": error, "detail": detail, "aggregation": aggregation}
    if raw is None:
        letter["record"] = None
    else:
        try:
            letter["record"] = raw.decode("utf-8")
        except UnicodeDecodeError:
            letter["record"] = raw.decode("utf-8", "replace")
            letter["record_base64"] = base64.b64encode(raw).decode("ascii")
    letter["source"] = source
    return orjson.dumps(letter)


def shrink_dead_letter(letter: bytes, limit: int) -> bytes:
    """A dead letter cut to at most `limit` bytes: `record` shortened (and `record_base64`
    dropped), with `record_truncated: true`, so an oversized input still leaves its trace."""
    fields = orjson.loads(letter)
    fields.pop("record_base64", None)
    fields["record_truncated"] = True
    record = fields.get("record") or ""
    fields["record"] = ""
    room = limit - len(orjson.dumps(fields))
    while room > 0:
        fields["record"] = record[: room // 6]  # escaping can take 6 bytes per character
        encoded = orjson.dumps(fields)
        if len(encoded) <= limit:
            return encoded
        room //= 2
    return orjson.dumps(fields)
