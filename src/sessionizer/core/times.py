"""Event times: parse the accepted formats into epoch milliseconds, and format output times.

SPEC section 1: an integer is epoch milliseconds; a string is either
`YYYY-MM-DD HH:MM:SS[.f..ffffff]` (UTC) or ISO-8601 with `T` and a `Z` or
`+HH:MM`/`-HH:MM` zone. Sub-millisecond digits are truncated. Anything outside
1970-01-01 .. 9999-12-31 UTC is rejected.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Any

MIN_TIME_MS = 0
MAX_TIME_MS = 253402300799999  # 9999-12-31 23:59:59.999 UTC

_DAY_MS = 86_400_000
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_EPOCH = datetime(1970, 1, 1)

_TEXT_TIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})([ T])([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,6}))?(Z|[+-][0-9]{2}:[0-9]{2})?"
)


class TimeError(ValueError):
    """`str(error)` is the human detail, without the field name."""


# Day number by "YYYY-MM-DD": event streams repeat a handful of dates, and the
# calendar check is the slow part. Bounded so hostile input cannot grow it.
_day_ms_cache: dict[str, int] = {}
_DAY_CACHE_LIMIT = 4096


# Streams repeat minutes: "YYYY-MM-DD HH:MM:" (either separator) -> epoch ms of that minute,
# filled by the full parser, so the common forms cost a few dictionary look-ups.
_minute_ms: dict[str, int] = {}
_SECOND_MS = {f"{n:02d}": n * 1000 for n in range(60)}
_MILLIS = {f"{n:03d}": n for n in range(1000)}


def parse_time(value: Any) -> int:
    """Epoch milliseconds of one event-time value. Raises TimeError."""
    kind = type(value)
    if kind is str:
        # Fast path: "YYYY-MM-DD HH:MM:SS.fff" or "YYYY-MM-DDTHH:MM:SS.fffZ" in a known minute.
        size = len(value)
        if (value[10:11] == " " if size == 23 else size == 24 and value[10:11] == "T" and value[23] == "Z") \
                and value[19] == ".":
            base = _minute_ms.get(value[:17])
            if base is not None:
                second = _SECOND_MS.get(value[17:19])
                millis = _MILLIS.get(value[20:23])
                if second is not None and millis is not None:
                    return base + second + millis
        return _parse_text(value)
    if kind is int:
        if MIN_TIME_MS <= value <= MAX_TIME_MS:
            return value
        raise TimeError(f"{value} is outside 1970-01-01..9999-12-31")
    if kind is bool:
        raise TimeError(f"{str(value).lower()} is not a time")
    if isinstance(value, str):  # a JSON float literal (JsonNumber)
        raise TimeError(f"{value} is not an integer of epoch milliseconds")
    raise TimeError(f"a {type(value).__name__} is not a time")


def _parse_text(text: str) -> int:
    match = _TEXT_TIME.fullmatch(text)
    if match is None:
        raise TimeError(f"{_show(text)} is not 'YYYY-MM-DD HH:MM:SS[.ffffff]' nor ISO-8601 with a zone")
    year, month, day, sep, hh, mm, ss, frac, zone = match.groups()
    if sep == " " and zone is not None:
        raise TimeError(f"{_show(text)}: a zone needs the ISO 'T' form")
    if sep == "T" and zone is None:
        raise TimeError(f"{_show(text)}: the ISO 'T' form needs a zone (Z or +HH:MM)")
    day_ms = _day_ms(text[:10])
    hours, minutes, seconds = int(hh), int(mm), int(ss)
    if hours > 23 or minutes > 59 or seconds > 59:
        raise TimeError(f"{_show(text)} has no such time of day")
    millis = day_ms + hours * 3_600_000 + minutes * 60_000 + seconds * 1000
    if frac:
        millis += int((frac + "00")[:3])
    if zone is not None and zone != "Z":
        off_h, off_m = int(zone[1:3]), int(zone[4:6])
        if off_h > 23 or off_m > 59:
            raise TimeError(f"{_show(text)} has an impossible zone offset")
        offset = off_h * 3_600_000 + off_m * 60_000
        millis += -offset if zone[0] == "+" else offset
    if not MIN_TIME_MS <= millis <= MAX_TIME_MS:
        raise TimeError(f"{_show(text)} is outside 1970-01-01..9999-12-31")
    if (zone is None or zone == "Z") and (sep == " ") == (zone is None):
        if len(_minute_ms) >= _DAY_CACHE_LIMIT:
            _minute_ms.clear()
        # A whole minute of this day is in range once one instant of it is (the range is whole days).
        _minute_ms[text[:17]] = day_ms + hours * 3_600_000 + minutes * 60_000
    return millis


def _day_ms(ymd: str) -> int:
    cached = _day_ms_cache.get(ymd)
    if cached is not None:
        return cached
    try:
        ordinal = date(int(ymd[0:4]), int(ymd[5:7]), int(ymd[8:10])).toordinal()
    except ValueError:
        raise TimeError(f"{ymd} is not a calendar date") from None
    # Before 1970 is negative here; the range check after the zone shift rejects it.
    value = (ordinal - _EPOCH_ORDINAL) * _DAY_MS
    if len(_day_ms_cache) >= _DAY_CACHE_LIMIT:
        _day_ms_cache.clear()
    _day_ms_cache[ymd] = value
    return value


def format_time(millis: int) -> str:
    """`YYYY-MM-DD HH:MM:SS` in UTC, fraction dropped (the envelope's timestamp)."""
    return json_time(millis).decode("ascii")


_day_text: dict[int, bytes] = {}


def json_time(millis: int) -> bytes:
    """`format_time` as bytes, with the date part cached by day (output records share days)."""
    day, in_day = divmod(millis, _DAY_MS)
    date_text = _day_text.get(day)
    if date_text is None:
        if len(_day_text) >= _DAY_CACHE_LIMIT:
            _day_text.clear()
        date_text = _day_text[day] = (_EPOCH + timedelta(days=day)).strftime("%Y-%m-%d ").encode()
    seconds = in_day // 1000
    return date_text + b"%02d:%02d:%02d" % (seconds // 3600, seconds // 60 % 60, seconds % 60)


def _show(text: str) -> str:
    return repr(text) if len(text) <= 40 else repr(text[:37] + "...")
