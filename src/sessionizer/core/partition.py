"""One input partition: stream time, the aggregations, and what became final.

The pure core. Records go in (`feed`), stream time may be moved on without a
record (`advance`, for idle partitions), and final records come out (`drain`).
No I/O, no clock: the replay command and the Kafka runtime both drive this.

    part = Partition(spec)
    for raw, source in records:
        part.feed(raw, source)
    part.end_of_input()          # replay only: flush what is still open
    for topic, records in part.drain_by_topic().items(): ...
"""

from __future__ import annotations

import io

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

import orjson

from . import envelope
from .events import EventDecoder, Invalid, describe, usable_key
from .sessions import SessionStore
from .shaped_events import ShapedEventDecoder
from .shapes import IdRegistry
from .spec import JobSpec, RollingOutput, SessionOutput
from .times import format_time
from .windows import ADDED, LATE, WindowStore

NO_TIME = -1  # stream time before any valid record
NO_AGGREGATION = "none"  # a dead letter about the record itself, not about one aggregation
STREAM_TIME_KEY = ""  # state key of the partition's stream time (input keys and window keys are never empty)
NO_STATE_KEPT = "this partition keeps no state to read (made with keeps_state=False, as replay makes it)"


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
    dead_letters_by: Counter = field(default_factory=Counter)  # by (error code, aggregation or NO_AGGREGATION)
    out: Counter = field(default_factory=Counter)  # final records by topic (counted when drained)


class Partition:
    def __init__(self, spec: JobSpec, track_changes: bool = False,
                 describe_source: Callable[[Any], Any] | None = None, keeps_state: bool = True) -> None:
        """`describe_source` turns the `source` given to `feed` into a dead letter's `source`
        (so callers can pass something cheap, like a tuple, per record). `keeps_state=False`
        (replay): nothing will read its state (no `snapshot`, no changes tracked), which a core
        may then keep only in part (the compiled one does)."""
        self.spec = spec
        self._keeps_state = keeps_state or track_changes
        self.stream_time = NO_TIME
        self.stats = PartitionStats()
        self._describe_source = describe_source
        self._saved_stream_time = NO_TIME
        # Final records per topic, as (key, value), until drained.
        self._out: dict[str, list[tuple[str | None, bytes]]] = {topic: [] for topic in spec.topics}
        group_paths = tuple(dict.fromkeys(
            r.group_by for r in spec.rolling if r.group_by is not None and r.group_by != spec.fields.key))
        self.shaped = spec.shaped
        self.ids = IdRegistry() if self.shaped else None  # SPEC 7.2: ids held by open sessions and windows
        if self.shaped:
            self._decode = ShapedEventDecoder(spec.fields, group_paths, spec.aggregates).decode
            self.feed = self._feed_shaped  # type: ignore[method-assign]
            self._slices = spec.aggregate_slices
        else:
            self._decode = EventDecoder(spec.fields, group_paths).decode
        self.sessions: SessionStore | None = None
        if spec.sessions is not None:
            self.sessions = SessionStore(spec.sessions.rules, track_changes, self.shaped, spec.sessions.aggregates,
                                         self.ids)
            self._session_emit = self._session_emitter(spec.sessions)
        self.rolling = [_Rolling(r, group_paths, track_changes, self._window_emitter(r), self.ids)
                        for r in spec.rolling]

    # -- driving ---------------------------------------------------------------

    def feed(self, raw: bytes | None, source: Any, kafka_timestamp: int | None = None) -> None:
        """One raw record; `source` is what a dead letter reports as its origin."""
        stats = self.stats
        stats.read += 1
        if raw is None:
            event: Any = Invalid("invalid_json", "not JSON: the message has no value (null)")
        else:
            event = self._decode(raw, kafka_timestamp)
        if type(event) is not tuple:
            if event is None:
                stats.skipped += 1
            else:
                self._dead_letter(event.error, event.detail, None, raw, source, None)
            return
        stats.valid += 1
        key, time, stake, win, game, channel, groups = event
        if time > self.stream_time:
            self.stream_time = time
            self._close_due()
        now = self.stream_time
        sessions = self.sessions
        if sessions is not None and not sessions.offer(key, time, stake, win, game, channel, now, self._session_emit):
            self._dead_letter("late", _late_detail(time, now, "sessions", "its session is already closed"),
                              "sessions", raw, source, key)
        for rolling in self.rolling:
            store = rolling.store
            if rolling.group_index is None:
                group = key
            else:
                found = usable_key(groups[rolling.group_index])
                if found is None:
                    detail = rolling.missing_group_detail(groups[rolling.group_index])
                    self._dead_letter("missing_group", detail, store.name, raw, source, key)
                    continue
                group = found
            outcome = store.offer(group, time, stake, win, now)
            if outcome != ADDED:
                error, why = window_lateness(partially=outcome != LATE)
                self._dead_letter(error, _late_detail(time, now, store.name, why), store.name, raw, source, key)

    def _feed_shaped(self, raw: bytes | None, source: Any, kafka_timestamp: int | None = None) -> None:
        """`feed` for a job that uses SPEC section 7: per-type fields, duplicates, extra aggregates."""
        stats = self.stats
        stats.read += 1
        event = Invalid("invalid_json", "not JSON: the message has no value (null)") if raw is None \
            else self._decode(raw, kafka_timestamp)
        if type(event) is not tuple:
            if event is None:
                stats.skipped += 1
            else:
                self._dead_letter(event.error, event.detail, None, raw, source, None)
            return
        key, time, stake, win, game, channel, groups, counts, record_id, values = event
        if record_id is not None and (key, record_id) in self.ids:
            self._dead_letter("duplicate", duplicate_detail(self.spec.fields.id, record_id), None, raw, source, key)
            return
        stats.valid += 1
        if time > self.stream_time:
            self.stream_time = time
            self._close_due()
        now = self.stream_time
        sessions = self.sessions
        slices = self._slices
        if sessions is not None:
            extra = (counts, record_id, values[slices[0]])
            if not sessions.offer(key, time, stake, win, game, channel, now, self._session_emit, extra):
                self._dead_letter("late", _late_detail(time, now, "sessions", "its session is already closed"),
                                  "sessions", raw, source, key)
        weight = 1 if counts else 0
        for rolling, window_slice in zip(self.rolling, slices[1:]):
            store = rolling.store
            if rolling.group_index is None:
                group = key
            else:
                group = usable_key(groups[rolling.group_index])
                if group is None:
                    detail = rolling.missing_group_detail(groups[rolling.group_index])
                    self._dead_letter("missing_group", detail, store.name, raw, source, key)
                    continue
            outcome = store.offer(group, time, stake, win, now, (weight, key, record_id, values[window_slice]))
            if outcome != ADDED:
                error, why = window_lateness(partially=outcome != LATE)
                self._dead_letter(error, _late_detail(time, now, store.name, why), store.name, raw, source, key)

    def feed_text(self, text: bytes | bytearray, stop: int, label: str, first_line: int) -> int:
        """Whole lines of a replay file, `text[:stop]` (each line ending in a line feed, but maybe the
        file's last), the first being line `first_line` of `label`; how many lines that was. Blank
        lines are passed over."""
        lines = io.BytesIO(text[:stop]).readlines()  # the lines a file's readlines() gives
        feed = self.feed
        for index, line in enumerate(lines):
            raw = replay_record(line)
            if raw and not raw.isspace():
                feed(raw, (label, first_line + index))
        return len(lines)

    def feed_messages(self, messages: list[Any], start: int, partition: int, next_offset: int,
                      with_timestamp: bool) -> tuple[int, int, int]:
        """Kafka messages (anything with confluent-kafka's Message methods) from `start`, while each
        is a record of `partition` at or after `next_offset`; the message is each record's source,
        its timestamp the Kafka timestamp when `with_timestamp`. Returns (index of the first message
        not fed, the next offset, how many were fed)."""
        feed, fed = self.feed, 0
        for index in range(start, len(messages)):
            message = messages[index]
            if message.error() is not None or message.partition() != partition or message.offset() < next_offset:
                return index, next_offset, fed
            if with_timestamp:
                timestamp_type, timestamp = message.timestamp()
                feed(message.value(), message, timestamp if timestamp_type else None)
            else:
                feed(message.value(), message)
            next_offset = message.offset() + 1
            fed += 1
        return len(messages), next_offset, fed

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
        if self.ids is not None:
            self.ids.held.clear()

    def drain_by_topic(self) -> dict[str, list[tuple[str | None, bytes]]]:
        """Per topic, the (key, value) records made final since the last drain, in order."""
        drained = {}
        for topic, records in self._out.items():
            if records:
                drained[topic] = records.copy()
                records.clear()  # in place: the emitters hold these lists
                self.stats.out[topic] += len(drained[topic])
        return drained

    def drain_lines_by_topic(self) -> dict[str, tuple[int, bytes]]:
        """`drain_by_topic` for a file: per topic, how many records and their values one per line."""
        return {topic: lines_of(records) for topic, records in self.drain_by_topic().items()}

    def drain(self) -> list[Output]:
        """`drain_by_topic` as one list of Outputs (topic by topic)."""
        return [Output(topic, key, value) for topic, records in self.drain_by_topic().items()
                for key, value in records]

    @property
    def has_pending(self) -> bool:
        """Final records not drained yet, or state changes not taken yet."""
        return any(self._out.values()) or any(store.changed for store in self.stores.values())

    def _close_due(self) -> None:
        now = self.stream_time
        sessions = self.sessions
        if sessions is not None and sessions.next_due <= now:
            sessions.close_due(now, self._session_emit)
        for rolling in self.rolling:
            if rolling.store.next_due <= now:
                rolling.store.close_due(now, rolling.emit)

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

    def snapshot(self) -> dict[str, list[tuple[str, bytes | None]]]:
        """All open state per store, stream time included (restorable with `restore`)."""
        if not self._keeps_state:
            raise RuntimeError(NO_STATE_KEPT)
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

    def restore_messages(self, store_name: str, messages: list[Any], start: int, topic: str, partition: int) -> int:
        """`restore` straight from consumed changelog messages: from `messages[start]` on, while they
        are records of `topic`'s partition `partition`; returns the index of the first that is not
        (an error or end-of-partition event, or another partition's record) for the caller to route."""
        records = []
        stop = start
        while stop < len(messages):
            message = messages[stop]
            if message.error() is not None or message.partition() != partition or message.topic() != topic:
                break
            key = message.key()
            records.append((key.decode("utf-8") if key is not None else "", message.value()))
            stop += 1
        self.restore(store_name, records)
        return stop

    def finish_restore(self) -> None:
        for store in self.stores.values():
            store.reschedule()
            if store.track_changes:
                store.changed.clear()
        self._saved_stream_time = self.stream_time

    @property
    def open_windows(self) -> int:
        """Open sessions plus open (group, window) pairs."""
        return sum(self.open_counts.values())

    @property
    def open_counts(self) -> dict[str, int]:
        """Open sessions, and open (group, window) pairs per rolling aggregation, by store name."""
        return {name: store.open_count for name, store in self.stores.items()}

    @property
    def has_output(self) -> bool:
        """Final records not drained yet."""
        return any(self._out.values())

    # -- output ------------------------------------------------------------------

    def _session_emitter(self, output: SessionOutput) -> Callable[..., None]:
        records, name, stamp_end = self._out[output.topic], orjson.dumps(output.event_name), output.stamp_end
        session_record = envelope.session_record

        def emit(key: str, start: int, end: int, count: int, stake: int, win: int, game: str | None,
                 channel: str | None, reason: str, aggregates: bytes = b"") -> None:
            record = session_record(name, stamp_end, key, start, end, count, stake, win, game, channel, reason)
            records.append((key, envelope.with_aggregates(record, aggregates) if aggregates else record))

        return emit

    def _window_emitter(self, output: RollingOutput) -> Callable[..., None]:
        records, name = self._out[output.topic], orjson.dumps(output.event_name)
        window_record, json_time = envelope.window_record, envelope.json_time
        start_text: list = [None, b""]  # a window closes for all its groups at once: format its start once

        def emit(group: str, start: int, end: int, count: int, stake: int, win: int, aggregates: bytes = b"") -> None:
            if start != start_text[0]:
                start_text[0], start_text[1] = start, json_time(start)
            record = window_record(name, group, start, end, count, stake, win, start_text[1])
            records.append((group, envelope.with_aggregates(record, aggregates) if aggregates else record))

        return emit

    def _dead_letter(self, error: str, detail: str, aggregation: str | None, raw: bytes | None,
                     source: Any, key: str | None) -> None:
        if self._describe_source is not None:
            source = self._describe_source(source)
        self._out[self.spec.dead_letter_topic].append((key, envelope.dead_letter(error, detail, aggregation, raw,
                                                                                 source)))
        self.stats.dead_letters[error] += 1
        self.stats.dead_letters_by[(error, aggregation or NO_AGGREGATION)] += 1


class _Rolling:
    """One `[[rolling]]` aggregation: its store, where a record's group is, where closed windows go."""

    __slots__ = ("store", "group_path", "group_index", "emit")

    def __init__(self, output: RollingOutput, group_paths: tuple[str, ...], track_changes: bool,
                 emit: Callable[..., None], ids: IdRegistry | None) -> None:
        self.store = WindowStore(output.topic, output.rules, track_changes, ids is not None, output.aggregates, ids)
        self.group_path = output.group_by
        # Where in the event's groups this aggregation's group is; None: the input key (already valid).
        self.group_index = group_paths.index(output.group_by) if output.group_by in group_paths else None
        self.emit = emit

    def missing_group_detail(self, value: Any) -> str:
        return missing_group_detail(self.group_path, value)


def lines_of(records: list[tuple[str | None, bytes]]) -> tuple[int, bytes]:
    """How many records, and their values one per line."""
    return len(records), b"".join([value + b"\n" for _, value in records])


def replay_record(line: bytes) -> bytes:
    """A replay file's line without its end (blank or whitespace-only ones are no record)."""
    return line.rstrip(b"\r\n") if line[-1:] == b"\n" else line


def missing_group_detail(path: str | None, value: Any) -> str:
    return f"{path}: {describe(value)} is not a group (a non-empty string or an integer)"


def duplicate_detail(path: str | None, record_id: str) -> str:
    return f"{path}: {describe(record_id)} is the id of a record of this key still held by an open session or window"


def window_lateness(partially: bool) -> tuple[str, str]:
    """(error code, why) of a record that missed some (partially) or all of its rolling windows."""
    if partially:
        return "partially_late", "some of its windows are closed; it counts in the others"
    return "late", "all its windows are closed"


def _late_detail(time: int, now: int, aggregation: str, why: str) -> str:
    return (f"event time {format_time(time)} ({time} ms) is late for {aggregation} at stream time "
            f"{format_time(now)} ({now} ms): {why}")


def _encode_time(time: int) -> bytes:
    return str(time).encode()


def _decode_time(value: bytes) -> int:
    return int(value)
