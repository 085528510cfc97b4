"""Output records: the Xtremepush event envelope, and dead letters (SPEC sections 3-5).

Amounts are written as exact JSON numbers from integer micro-units (orjson
Fragments carry the text as-is), never through a float.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

from .amounts import format_micros
from .sessions import ClosedSession
from .times import format_time
from .windows import ClosedWindow

_Fragment = orjson.Fragment


def _amount(micros: int) -> orjson.Fragment:
    return _Fragment(format_micros(micros))


def session_record(session: ClosedSession, event_name: str, stamp_end: bool) -> bytes:
    return orjson.dumps({
        "event": event_name,
        "user_id": session.key,
        "timestamp": format_time(session.end if stamp_end else session.start),
        "value": {
            "session_start_ms": session.start,
            "session_end_ms": session.end,
            "duration_ms": session.end - session.start,
            "event_count": session.count,
            "stake_total": _amount(session.stake),
            "win_total": _amount(session.win),
            "net_total": _amount(session.win - session.stake),
            "game_code": session.game_code,
            "channel": session.channel,
            "close_reason": session.reason,
        },
        "user_attributes": {},
    })


def window_record(window: ClosedWindow, event_name: str) -> bytes:
    return orjson.dumps({
        "event": event_name,
        "user_id": window.group,
        "timestamp": format_time(window.start),
        "value": {
            "window_start_ms": window.start,
            "window_end_ms": window.end,
            "event_count": window.count,
            "stake_total": _amount(window.stake),
            "win_total": _amount(window.win),
            "net_total": _amount(window.win - window.stake),
        },
        "user_attributes": {},
    })


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
