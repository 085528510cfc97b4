"""One input partition: stream time, the aggregations, and what became final.

The pure core. Records go in (`feed`), stream time may be moved on without a
record (`advance`, for idle partitions), and final records come out (`drain`).
No I/O, no clock: the replay command and the Kafka runtime both drive this.

    part = Partition(spec)
    for raw, source in records:
        part.feed(raw, source)
    part.end_of_input()          # replay only: flush what is still open
    for out in part.drain(): ...
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

from . import envelope
from .events import Event, EventDecoder, Invalid, describe, path_getter, usable_key
from .sessions import ClosedSession, SessionStore
from .spec import JobSpec, RollingOutput, SessionOutput
from .times import format_time
from .windows import ADDED, LATE, ClosedWindow, WindowStore

NO_TIME = -1  # stream time before any valid record
STREAM_TIME_KEY = ""  # state key of the partition's stream time (input keys and window keys are never empty)


class Output(NamedTuple):
    topic: str
    key: str | None  # user_id (or group) of a final record; the record's key for a dead letter
    value: bytes


@dataclass
class PartitionStats:
    read: int = 0
    valid: int = 0
    skipped: int = 0  # by the `events` filter
    dead_letters: Counter = field(default_factory=Counter)  # by error code
    out: Counter = field(default_factory=Counter)  # final records by topic


class Partition:
    def __init__(self, spec: JobSpec, track_changes: bool = False,
                 describe_source: Callable[[Any], Any] | None = None) -> None:
        """`describe_source` turns the `source` given to `feed` into a dead letter's `source`
        (so callers can pass something cheap, like a tuple, per record)."""
        self.spec = spec
        self._describe_source = describe_source
        self._saved_stream_time = NO_TIME
        self.stream_time = NO_TIME
        self.stats = PartitionStats()
        self._decoder = EventDecoder(spec.fields)
        self._out: list[Output] = []
        self.sessions = SessionStore(spec.sessions.rules, track_changes) if spec.sessions else None
        self._session_emit = self._session_emitter(spec.sessions) if spec.sessions else None
        self.rolling = [_Rolling(r, spec.fields.key, track_changes, self._window_emitter(r)) for r in spec.rolling]

    # -- driving ---------------------------------------------------------------

    def feed(self, raw: bytes | None, source: Any, kafka_timestamp: int | None = None) -> None:
        """One raw record; `source` is what a dead letter reports as its origin."""
        self.stats.read += 1
        event = self._decoder.decode(raw, kafka_timestamp) if raw is not None else Invalid(
            "invalid_json", "not JSON: the message has no value (null)")
        if type(event) is Event:
            self.stats.valid += 1
            self._aggregate(event, raw, source)
        elif event is None:
            self.stats.skipped += 1
        else:
            self._dead_letter(event.error, event.detail, None, raw, source, None)

    def advance(self, time: int) -> None:
        """Move stream time on without a record (an idle partition); closes what is due."""
        if time > self.stream_time:
            self.stream_time = time
            self._close_due()

    def end_of_input(self) -> None:
        """Replay's end: every open window is emitted now."""
        if self.sessions is not None:
            self.sessions.close_all(self._session_emit)
        for rolling in self.rolling:
            rolling.store.close_all(rolling.emit)

    def drain(self) -> list[Output]:
        """The final records and dead letters produced since the last drain, in order."""
        out, self._out = self._out, []
        return out

    # -- state: what the Kafka runtime writes to changelogs and restores ------------

    @property
    def stores(self) -> dict[str, Any]:
        """Each aggregation's store by name: "sessions", and each rolling window's topic."""
        named: dict[str, Any] = {"sessions": self.sessions} if self.sessions is not None else {}
        named.update((rolling.store.name, rolling.store) for rolling in self.rolling)
        return named

    def take_changes(self) -> dict[str, list[tuple[str, bytes | None]]]:
        """Per store, (key, state or None) for what changed since the last call, stream time included.
        Needs `track_changes=True`."""
        changes = {name: store.take_changes() for name, store in self.stores.items()}
        if self.stream_time != self._saved_stream_time:
            self._saved_stream_time = self.stream_time
            for records in changes.values():
                records.append((STREAM_TIME_KEY, _encode_time(self.stream_time)))
        return changes

    def snapshot(self) -> dict[str, list[tuple[str, bytes]]]:
        """All open state per store, stream time included (restorable with `restore`)."""
        return {name: [(STREAM_TIME_KEY, _encode_time(self.stream_time)), *store.encode_all()]
                for name, store in self.stores.items()}

    def restore(self, store_name: str, records: Any) -> None:
        """Load (key, value) records of one store, oldest first (a changelog, or a snapshot);
        call `finish_restore` once every store is loaded, before feeding records."""
        store = self.stores[store_name]
        for key, value in records:
            if key == STREAM_TIME_KEY:
                if value is not None:
                    self.stream_time = max(self.stream_time, _decode_time(value))
            else:
                store.restore(key, value)

    def finish_restore(self) -> None:
        for store in self.stores.values():
            store.reschedule()
            if store.track_changes:
                store.changed.clear()
        self._saved_stream_time = self.stream_time

    @property
    def open_windows(self) -> int:
        """Open sessions plus open (group, window) pairs."""
        count = self.sessions.open_count if self.sessions is not None else 0
        return count + sum(rolling.store.open_count for rolling in self.rolling)

    # -- the record path ---------------------------------------------------------

    def _aggregate(self, event: Event, raw: bytes, source: Any) -> None:
        key, time, stake, win, game, channel, body = event
        if time > self.stream_time:
            self.stream_time = time
            self._close_due()
        now = self.stream_time
        if self.sessions is not None:
            if not self.sessions.offer(key, time, stake, win, game, channel, now, self._session_emit):
                self._dead_letter("late", _late_detail(time, now, "sessions", "its session is already closed"),
                                  "sessions", raw, source, key)
        for rolling in self.rolling:
            store = rolling.store
            group = key if rolling.group_of is None else usable_key(rolling.group_of(body))
            if group is None:
                self._dead_letter("missing_group", rolling.missing_group_detail(body), store.name, raw, source, key)
                continue
            outcome = store.offer(group, time, stake, win, now)
            if outcome == ADDED:
                continue
            if outcome == LATE:
                why, error = "all its windows are closed", "late"
            else:
                why, error = "some of its windows are closed; it counts in the others", "partially_late"
            self._dead_letter(error, _late_detail(time, now, store.name, why), store.name, raw, source, key)

    def _close_due(self) -> None:
        now = self.stream_time
        if self.sessions is not None:
            self.sessions.close_due(now, self._session_emit)
        for rolling in self.rolling:
            rolling.store.close_due(now, rolling.emit)

    # -- output ------------------------------------------------------------------

    def _session_emitter(self, output: SessionOutput):
        stats, topic = self.stats, output.topic
        name, stamp_end = output.event_name, output.stamp_end

        def emit(session: ClosedSession) -> None:
            self._out.append(Output(topic, session.key, envelope.session_record(session, name, stamp_end)))
            stats.out[topic] += 1

        return emit

    def _window_emitter(self, output: RollingOutput):
        stats, topic, name = self.stats, output.topic, output.event_name

        def emit(window: ClosedWindow) -> None:
            self._out.append(Output(topic, window.group, envelope.window_record(window, name)))
            stats.out[topic] += 1

        return emit

    def _dead_letter(self, error: str, detail: str, aggregation: str | None, raw: bytes | None,
                     source: Any, key: str | None) -> None:
        topic = self.spec.dead_letter_topic
        if self._describe_source is not None:
            source = self._describe_source(source)
        self._out.append(Output(topic, key, envelope.dead_letter(error, detail, aggregation, raw, source)))
        self.stats.dead_letters[error] += 1
        self.stats.out[topic] += 1


class _Rolling:
    """One `[[rolling]]` aggregation: its store, how to find a record's group, where closed windows go."""

    __slots__ = ("store", "group_path", "group_of", "emit")

    def __init__(self, output: RollingOutput, key_path: str, track_changes: bool, emit: Any) -> None:
        self.store = WindowStore(output.topic, output.rules, track_changes)
        self.group_path = output.group_by or key_path
        # None: group by the input key, which is already validated.
        self.group_of = None if self.group_path == key_path else path_getter(self.group_path)
        self.emit = emit

    def missing_group_detail(self, body: dict) -> str:
        value = self.group_of(body)
        return f"{self.group_path}: {describe(value)} is not a group (a non-empty string or an integer)"


def _late_detail(time: int, now: int, aggregation: str, why: str) -> str:
    return (f"event time {format_time(time)} ({time} ms) is late for {aggregation} at stream time "
            f"{format_time(now)} ({now} ms): {why}")


def _encode_time(time: int) -> bytes:
    return str(time).encode()


def _decode_time(value: bytes) -> int:
    return int(value)
