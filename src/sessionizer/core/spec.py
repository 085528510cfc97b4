"""What the core computes: the validated, typed job description it is built from.

`sessionizer.config` turns TOML into one of these; tests build them directly.
All durations are milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .events import InputFields
from .sessions import SessionRules
from .windows import WindowRules


@dataclass(frozen=True)
class SessionOutput:
    topic: str
    rules: SessionRules
    event_name: str = "session"
    stamp_end: bool = False  # `timestamp = "end"`: the envelope timestamp is the session end


@dataclass(frozen=True)
class RollingOutput:
    topic: str  # also the aggregation's name in dead letters
    rules: WindowRules
    event_name: str = "session_summary"
    group_by: str | None = None  # a field path; None = the input key


@dataclass(frozen=True)
class JobSpec:
    fields: InputFields = field(default_factory=InputFields)
    sessions: SessionOutput | None = None
    rolling: tuple[RollingOutput, ...] = ()
    dead_letter_topic: str = "xp-dead-letter"

    @property
    def topics(self) -> list[str]:
        """Every output topic, sessions first, dead letters last."""
        named = [self.sessions.topic] if self.sessions else []
        return named + [r.topic for r in self.rolling] + [self.dead_letter_topic]
