"""What the core computes: the validated, typed job description it is built from.

`sessionizer.config` turns TOML into one of these; tests build them directly.
All durations are milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .events import InputFields
from .sessions import SessionRules
from .shapes import AggregateSpec
from .windows import WindowRules


@dataclass(frozen=True)
class SessionOutput:
    topic: str
    rules: SessionRules
    event_name: str = "session"
    stamp_end: bool = False  # `timestamp = "end"`: the envelope timestamp is the session end
    aggregates: tuple[AggregateSpec, ...] = ()  # SPEC 7.3


@dataclass(frozen=True)
class RollingOutput:
    topic: str  # also the aggregation's name in dead letters
    rules: WindowRules
    event_name: str = "session_summary"
    group_by: str | None = None  # a field path; None = the input key
    aggregates: tuple[AggregateSpec, ...] = ()  # SPEC 7.3


@dataclass(frozen=True)
class JobSpec:
    fields: InputFields = field(default_factory=InputFields)
    sessions: SessionOutput | None = None
    rolling: tuple[RollingOutput, ...] = ()
    dead_letter_topic: str = "xp-dead-letter"

    @property
    def shaped(self) -> bool:
        """Whether the job uses SPEC section 7 (event types, record ids, extra aggregates)."""
        f = self.fields
        return bool(f.types or f.id is not None or f.event != "event" or self.aggregates)

    @property
    def aggregates(self) -> tuple[AggregateSpec, ...]:
        """Every extra aggregate: the sessions' first, then each rolling window's, in config order."""
        own = self.sessions.aggregates if self.sessions is not None else ()
        return own + tuple(spec for rolling in self.rolling for spec in rolling.aggregates)

    @property
    def aggregate_slices(self) -> list[slice]:
        """Where each output's aggregates are in `aggregates`: the sessions' (empty without
        sessions), then each rolling window's."""
        slices, at = [], 0
        for count in [len(self.sessions.aggregates) if self.sessions is not None else 0,
                      *(len(rolling.aggregates) for rolling in self.rolling)]:
            slices.append(slice(at, at + count))
            at += count
        return slices

    @property
    def topics(self) -> list[str]:
        """Every output topic, sessions first, dead letters last."""
        named = [self.sessions.topic] if self.sessions else []
        return named + [r.topic for r in self.rolling] + [self.dead_letter_topic]
