"""Shared test helpers: build input lines, run the core, read its output back exactly."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Iterable

import msgspec
import orjson

from sessionizer.core.native import new_partition
from sessionizer.core.partition import Output
from sessionizer.core.spec import JobSpec, RollingOutput, SessionOutput
from sessionizer.core.sessions import SessionRules
from sessionizer.core.windows import WindowRules

_EXACT = msgspec.json.Decoder(float_hook=Decimal)


def line(key="p1", time=0, stake=None, win=None, game=None, channel=None, **extra) -> bytes:
    """One input line with the default field paths; None fields are left out."""
    value = {k: v for k, v in (("stake", stake), ("win", win), ("game_code", game), ("channel", channel))
             if v is not None}
    body = {"user_id": key, "timestamp": time, **extra}
    if value:
        body["value"] = {k: (orjson.Fragment(v) if isinstance(v, str) and v[:1].isdigit() else v)
                         for k, v in value.items()}
    return orjson.dumps(body)


def micros(amount) -> int:
    return int(Decimal(amount).scaleb(6))


def spec(sessions: SessionRules | None = None, *rolling: WindowRules, **kw) -> JobSpec:
    return JobSpec(
        sessions=SessionOutput("sessions-out", sessions) if sessions else None,
        rolling=tuple(RollingOutput(f"rolling{i}", r) for i, r in enumerate(rolling)),
        **kw,
    )


def run(job: JobSpec, lines: Iterable[bytes], end: bool = True) -> list[Output]:
    part = new_partition(job)
    for n, raw in enumerate(lines, 1):
        part.feed(raw, {"line": n})
    if end:
        part.end_of_input()
    return part.drain()


def decode(out: Output) -> dict:
    return _EXACT.decode(out.value)


def records(outputs: Iterable[Output], topic: str) -> list[dict]:
    return [decode(o) for o in outputs if o.topic == topic]


def dead_letters(outputs: Iterable[Output], topic: str = "xp-dead-letter") -> list[dict]:
    return records(outputs, topic)


def codes(outputs: Iterable[Output]) -> Counter:
    return Counter(d["error"] for d in dead_letters(outputs))


def session_tuple(record: dict) -> tuple:
    v = record["value"]
    return (record["user_id"], v["session_start_ms"], v["session_end_ms"], v["event_count"],
            micros(v["stake_total"]), micros(v["win_total"]), v["game_code"], v["channel"], v["close_reason"])


def window_tuple(record: dict) -> tuple:
    v = record["value"]
    return (record["user_id"], v["window_start_ms"], v["window_end_ms"], v["event_count"],
            micros(v["stake_total"]), micros(v["win_total"]))
