"""The compiled core: the same `Partition` interface, per-record work in Rust (`native/`,
built into this package as `sessionizer._native`).

`_native.Engine` owns stream time, the stores and the final records, and
accepts the records it is sure of. Everything about a record that is wrong stays
here in Python, with the Python core's own decoder and dead-letter wording: the
engine hands such a record back, untouched, and this class decides it. The state's
wire format (changelogs, snapshots) is the Python core's too, byte for byte (the engine
writes the same MessagePack msgspec writes), so either core restores what the other wrote.

`new_partition` picks the core: the compiled one when it is installed, unless
`SESSIONIZER_CORE=python` asks for the pure-Python one (the reference it is tested
against).
"""

from __future__ import annotations

import os
from typing import Any, Callable

import orjson

from . import envelope
from .events import KAFKA_TIMESTAMP, EventDecoder, Invalid, usable_key
from .partition import (NO_AGGREGATION, NO_STATE_KEPT, STREAM_TIME_KEY, Partition, PartitionStats, _encode_time,
                        _late_detail, duplicate_detail, lines_of, missing_group_detail, replay_record, window_lateness)
from .shaped_events import ShapedEventDecoder
from .spec import JobSpec

try:
    from .. import _native as sessionizer_native
    NATIVE_MISSING: str | None = None
except ImportError as error:  # not built (or not for this platform): the pure-Python core does the same job, slower
    sessionizer_native = None
    NATIVE_MISSING = str(error) or type(error).__name__

CORE_ENV = "SESSIONIZER_CORE"


def native_available() -> bool:
    return sessionizer_native is not None


class CoreChoiceError(ValueError):
    """SESSIONIZER_CORE names a core that is not there."""


def core_name() -> str:
    """The core `SESSIONIZER_CORE` names: "native", "python", or unset (native if built)."""
    wanted = os.environ.get(CORE_ENV, "").strip().lower()
    if wanted not in ("", "native", "python"):
        raise CoreChoiceError(f"{CORE_ENV}: {wanted!r} is neither 'native' nor 'python'")
    if wanted == "native" and sessionizer_native is None:
        raise CoreChoiceError(f"{CORE_ENV}=native, but the compiled core cannot be loaded ({NATIVE_MISSING}); "
                              f"{HOW_TO_GET_IT}")
    return wanted or ("python" if sessionizer_native is None else "native")


HOW_TO_GET_IT = ("install a sessionizer wheel built for this platform (make wheel), or reinstall from source with a "
                 "Rust toolchain on PATH (pip install . compiles it)")


def fallback_warning() -> str | None:
    """What to tell a user who gets the pure-Python core without having asked for it."""
    if sessionizer_native is not None or os.environ.get(CORE_ENV, "").strip():
        return None
    return (f"warning: the compiled core (sessionizer._native) cannot be loaded ({NATIVE_MISSING}): using the "
            f"pure-Python core, about 7x slower. To fix it, {HOW_TO_GET_IT}. {CORE_ENV}=python chooses the "
            "pure-Python core and silences this.")


def core_description() -> str:
    """For `sessionizer --version`: the core in use, and why when it is not the compiled one."""
    try:
        name = core_name()
    except CoreChoiceError as error:
        return f"none ({error})"
    if name == "python" and sessionizer_native is None:
        return f"python (the compiled core cannot be loaded: {NATIVE_MISSING})"
    return name


def new_partition(spec: JobSpec, track_changes: bool = False,
                  describe_source: Callable[[Any], Any] | None = None, keeps_state: bool = True) -> Any:
    """A `Partition` of the core `core_name()` says."""
    if core_name() == "python":
        return Partition(spec, track_changes, describe_source, keeps_state)
    return NativePartition(spec, track_changes, describe_source, keeps_state)


class NativePartition:
    """`Partition`, with the per-record work compiled. See `Partition` for what each method does."""

    def __init__(self, spec: JobSpec, track_changes: bool = False,
                 describe_source: Callable[[Any], Any] | None = None, keeps_state: bool = True) -> None:
        native = sessionizer_native
        assert native is not None
        self.spec = spec
        self._keeps_state = keeps_state or track_changes
        self._describe_source = describe_source
        self._stats = PartitionStats()
        self._saved_stream_time = -1
        self._dead_letters: list[tuple[str | None, bytes]] = []
        self._letter_label: str | None = None  # the replay file of `_letter_pieces_of_label`
        self._letter_pieces_of_label: tuple[bytes, bytes, bytes, bytes] | None = None
        f = spec.fields
        group_paths = tuple(dict.fromkeys(
            r.group_by for r in spec.rolling if r.group_by is not None and r.group_by != f.key))
        shape = None
        if spec.shaped:  # SPEC section 7: the engine reads it too; what it is not sure of, Python decides
            self._decode = ShapedEventDecoder(f, group_paths, spec.aggregates).decode
            self._decide = self._decide_shaped  # type: ignore[method-assign]
            shape = (f.event, f.id,
                     [(t.name, t.stake, t.win, t.game_code, t.channel, t.counts, t.negate) for t in f.types],
                     [(a.kind, a.field, None if a.types is None else sorted(a.types)) for a in spec.aggregates])
        else:
            self._decode = EventDecoder(f, group_paths).decode
        # Per rolling aggregation: its name, where its group is in an Event's groups (None: the key), its path.
        self._rolling = [(r.topic, group_paths.index(r.group_by) if r.group_by in group_paths else None, r.group_by)
                         for r in spec.rolling]
        s = spec.sessions
        sessions = None if s is None else (s.rules.gap, s.rules.grace, s.rules.max_duration, s.rules.max_events,
                                           orjson.dumps(s.event_name), s.stamp_end, s.rules.all_count,
                                           [(a.name, a.kind) for a in s.aggregates])
        self._engine = native.Engine(
            f.key, None if f.time == KAFKA_TIMESTAMP else f.time, f.stake, f.win, f.game_code, f.channel,
            sorted(f.events), list(group_paths), sessions,
            [(r.rules.size, r.rules.advance, r.rules.grace, orjson.dumps(r.event_name), index,
              [(a.name, a.kind) for a in r.aggregates])
             for r, (_, index, _) in zip(spec.rolling, self._rolling)],
            track_changes, shape, self._keeps_state)
        # The engine's outputs in its order (sessions first), and each rolling store's index.
        self._output_topics = ([s.topic] if s is not None else []) + [r.topic for r in spec.rolling]
        self._window_index = {r.topic: index for index, r in enumerate(spec.rolling)}
        self._store_names = (["sessions"] if s is not None else []) + [r.topic for r in spec.rolling]
        self._late, self._fallback, self._partially_late = native.LATE, native.FALLBACK, native.PARTIALLY_LATE
        self._duplicate = native.DUPLICATE

    # -- driving ---------------------------------------------------------------------------

    def feed(self, raw: bytes | None, source: Any, kafka_timestamp: int | None = None) -> None:
        if raw is None:
            self._engine.count(1, 0)
            self._decide(None, source, kafka_timestamp)
            return
        outcome = self._engine.feed(raw, kafka_timestamp)
        if outcome:
            self._follow_up(outcome, raw, source, kafka_timestamp)

    def feed_text(self, text: bytes | bytearray, stop: int, label: str, first_line: int) -> int:
        engine, at, line = self._engine, 0, first_line
        pieces = self._letter_pieces(label)
        while True:
            begin, at, lines, outcome, duplicates = engine.feed_text(text, at, stop,
                                                                     None if pieces is None else (line, pieces))
            if duplicates:  # copies the engine went past: their dead letters first, as they came first
                self._passed_duplicates(lambda begin, end, lines: (replay_record(bytes(text[begin:end])),
                                                                   (label, line + lines - 1)))
            line += lines
            if not outcome:
                return line - first_line
            self._follow_up(outcome, replay_record(bytes(text[begin:at])), (label, line - 1), None)

    def _letter_pieces(self, label: str) -> tuple[bytes, bytes, bytes, bytes] | None:
        """A duplicate's dead letter from replay file `label` in the pieces around its id, record and
        line number, for the engine to write the letters of the duplicates it goes past (each one
        Python wrote took as long as a few hundred records); None when stand-ins for the three
        cannot be told apart in it (the engine hands the duplicates back instead)."""
        if self._letter_label != label:
            self._letter_label = label
            self._letter_pieces_of_label = duplicate_letter_pieces(self.spec.fields.id, label, self._describe_source)
        return self._letter_pieces_of_label

    def _passed_duplicates(self, record_of: Callable[[int, int, int], tuple[bytes, Any]]) -> None:
        """The dead letters of the duplicates the engine went past; those it wrote itself, else
        `record_of(at, end, lines)` gives each one's (raw record, source) from where
        `take_duplicates` says it is."""
        letters = self._engine.take_duplicate_letters()
        if letters:
            self._dead_letters.extend(letters)
            self._stats.dead_letters["duplicate"] += len(letters)
            self._stats.dead_letters_by[("duplicate", NO_AGGREGATION)] += len(letters)
        path = self.spec.fields.id
        for at, end, lines, key, record_id in self._engine.take_duplicates():
            raw, source = record_of(at, end, lines)
            self._dead_letter("duplicate", duplicate_detail(path, record_id), None, raw, source, key)

    def feed_messages(self, messages: list[Any], start: int, partition: int, next_offset: int,
                      with_timestamp: bool) -> tuple[int, int, int]:
        engine, fed = self._engine, 0
        while True:
            stop, next_offset, count, outcome, duplicates = engine.feed_messages(messages, start, partition,
                                                                                 next_offset, with_timestamp)
            fed += count
            if duplicates:  # copies the engine went past: their dead letters first, as they came first
                self._passed_duplicates(lambda index, _end, _lines: (messages[index].value(), messages[index]))
            if not outcome:
                return stop, next_offset, fed
            message = messages[stop]  # fed, and it needs Python: a wrong record, or a late one
            kafka_timestamp = None
            if with_timestamp:
                timestamp_type, timestamp = message.timestamp()
                kafka_timestamp = timestamp if timestamp_type else None
            self._follow_up(outcome, message.value(), message, kafka_timestamp)
            start = stop + 1

    def advance(self, time: int) -> None:
        self._engine.advance(time)

    def end_of_input(self) -> None:
        self._engine.end_of_input()

    def drain_by_topic(self) -> dict[str, list[tuple[str | None, bytes]]]:
        drained: dict[str, list[tuple[str | None, bytes]]] = {}
        for topic, records in zip(self._output_topics, self._engine.drain()):
            if records:
                drained[topic] = records
                self._stats.out[topic] += len(records)
        if self._dead_letters:
            drained[self.spec.dead_letter_topic] = self._dead_letters
            self._stats.out[self.spec.dead_letter_topic] += len(self._dead_letters)
            self._dead_letters = []
        return drained

    def drain_lines_by_topic(self) -> dict[str, tuple[int, bytes]]:
        drained: dict[str, tuple[int, bytes]] = {}
        for topic, (count, text) in zip(self._output_topics, self._engine.drain_lines()):
            if count:
                drained[topic] = (count, text)
                self._stats.out[topic] += count
        if self._dead_letters:
            drained[self.spec.dead_letter_topic] = lines_of(self._dead_letters)
            self._stats.out[self.spec.dead_letter_topic] += len(self._dead_letters)
            self._dead_letters = []
        return drained

    drain = Partition.drain  # (it only calls drain_by_topic)

    @property
    def has_pending(self) -> bool:
        return bool(self._dead_letters) or self._engine.has_output() or self._engine.has_changes()

    @property
    def stream_time(self) -> int:
        return self._engine.stream_time

    @property
    def stats(self) -> PartitionStats:
        self._stats.read, self._stats.valid, self._stats.skipped = self._engine.counts()
        return self._stats

    @property
    def open_windows(self) -> int:
        return self._engine.open_windows()

    @property
    def open_counts(self) -> dict[str, int]:
        return dict(zip(self._store_names, self._engine.open_counts()))

    @property
    def has_output(self) -> bool:
        return bool(self._dead_letters) or self._engine.has_output()

    # -- state: the Python core's formats ---------------------------------------------------

    def take_changes(self) -> dict[str, list[tuple[str, bytes | None]]]:
        changes: dict[str, list[tuple[str, bytes | None]]] = {}
        engine = self._engine
        if self.spec.sessions is not None:
            changes["sessions"] = engine.take_session_changes()
        for index, (name, _, _) in enumerate(self._rolling):
            changes[name] = engine.take_window_changes(index)
        if self.stream_time != self._saved_stream_time:
            self._saved_stream_time = self.stream_time
            for records in changes.values():
                records.append((STREAM_TIME_KEY, _encode_time(self.stream_time)))
        return changes

    def snapshot(self) -> dict[str, list[tuple[str, bytes | None]]]:
        if not self._keeps_state:
            raise RuntimeError(NO_STATE_KEPT)
        time_record = (STREAM_TIME_KEY, _encode_time(self.stream_time))
        snapshot: dict[str, list[tuple[str, bytes | None]]] = {}
        if self.spec.sessions is not None:
            snapshot["sessions"] = [time_record, *self._engine.all_session_states()]
        for index, (name, _, _) in enumerate(self._rolling):
            snapshot[name] = [time_record, *self._engine.all_window_states(index)]
        return snapshot

    def restore(self, store_name: str, records: Any) -> None:
        # One call per batch: the engine reads the MessagePack itself (the same bytes the Python core reads).
        self._engine.restore_records(self._store_index(store_name),
                                     records if isinstance(records, list) else list(records))

    def restore_messages(self, store_name: str, messages: list[Any], start: int, topic: str, partition: int) -> int:
        return self._engine.restore_messages(self._store_index(store_name), messages, start, topic, partition)

    def _store_index(self, store_name: str) -> int | None:
        """The engine's name for a store: None for the sessions, else the rolling window's index."""
        return None if store_name == "sessions" else self._window_index[store_name]

    def finish_restore(self) -> None:
        self._engine.finish_restore()
        self._saved_stream_time = self.stream_time

    # -- what the engine hands back ----------------------------------------------------------

    def _follow_up(self, outcome: int, raw: bytes | None, source: Any, kafka_timestamp: int | None) -> None:
        if outcome == self._fallback:
            self._decide(raw, source, kafka_timestamp)
        elif outcome == self._duplicate:
            key, record_id = self._engine.duplicate()
            self._dead_letter("duplicate", duplicate_detail(self.spec.fields.id, record_id), None, raw, source, key)
        else:
            key, time, now, late = self._engine.late()
            self._late_letters(dict(late), [], raw, source, key, time, now)

    def _decide(self, raw: bytes | None, source: Any, kafka_timestamp: int | None) -> None:
        """A record the engine did not take (already counted as read): the Python decoder's verdict."""
        if raw is None:
            event: Any = Invalid("invalid_json", "not JSON: the message has no value (null)")
        else:
            event = self._decode(raw, kafka_timestamp)
        if type(event) is not tuple:
            if event is None:
                self._engine.count(0, 1)
            else:
                self._dead_letter(event.error, event.detail, None, raw, source, None)
            return
        key, time, stake, win, game, channel, groups = event
        resolved, missing = self._groups_of(key, groups)
        outcome = self._engine.offer(key, time, stake, win, game, channel, resolved)
        late = dict(self._engine.late()[3]) if outcome == self._late else {}
        self._late_letters(late, missing, raw, source, key, time, self.stream_time)

    def _decide_shaped(self, raw: bytes | None, source: Any, kafka_timestamp: int | None) -> None:
        """`_decide` for a job that uses SPEC section 7."""
        event = Invalid("invalid_json", "not JSON: the message has no value (null)") if raw is None \
            else self._decode(raw, kafka_timestamp)
        if type(event) is not tuple:
            if event is None:
                self._engine.count(0, 1)
            else:
                self._dead_letter(event.error, event.detail, None, raw, source, None)
            return
        key, time, stake, win, game, channel, groups, counts, record_id, values = event
        resolved, missing = self._groups_of(key, groups)
        outcome = self._engine.offer_shaped(key, time, stake, win, game, channel, resolved, counts, record_id,
                                            list(values))
        if outcome == self._duplicate:
            self._dead_letter("duplicate", duplicate_detail(self.spec.fields.id, record_id), None, raw, source, key)
            return
        late = dict(self._engine.late()[3]) if outcome == self._late else {}
        self._late_letters(late, missing, raw, source, key, time, self.stream_time)

    def _groups_of(self, key: str, groups: tuple) -> tuple[list[str | None], list[tuple[int, Any]]]:
        """Each rolling aggregation's group of a record (None: unusable), and (index, value) of the unusable."""
        resolved: list[str | None] = []
        missing: list[tuple[int, Any]] = []
        for index, (_, group_index, _) in enumerate(self._rolling):
            if group_index is None:
                resolved.append(key)
            else:
                found = usable_key(groups[group_index])
                resolved.append(found)
                if found is None:
                    missing.append((index, groups[group_index]))
        return resolved, missing

    def _late_letters(self, late: dict[int, int], missing: list[tuple[int, Any]], raw: bytes | None, source: Any,
                      key: str, time: int, now: int) -> None:
        """Dead letters in the Python core's order: sessions, then each rolling aggregation."""
        if 0 in late:
            self._dead_letter("late", _late_detail(time, now, "sessions", "its session is already closed"),
                              "sessions", raw, source, key)
        missing_at = dict(missing)
        for index, (name, _, path) in enumerate(self._rolling):
            if index in missing_at:
                self._dead_letter("missing_group", missing_group_detail(path, missing_at[index]), name, raw, source,
                                  key)
            elif index + 1 in late:
                error, why = window_lateness(partially=late[index + 1] == self._partially_late)
                self._dead_letter(error, _late_detail(time, now, name, why), name, raw, source, key)

    def _dead_letter(self, error: str, detail: str, aggregation: str | None, raw: bytes | None,
                     source: Any, key: str | None) -> None:
        if self._describe_source is not None:
            source = self._describe_source(source)
        self._dead_letters.append((key, envelope.dead_letter(error, detail, aggregation, raw, source)))
        self._stats.dead_letters[error] += 1
        self._stats.dead_letters_by[(error, aggregation or NO_AGGREGATION)] += 1



# Stand-ins for what differs from one duplicate's dead letter to the next (`duplicate_letter_pieces`).
_ID_STAND_IN, _RECORD_STAND_IN, _LINE_STAND_IN = "id-5f0c2e9a7b", b"record-5f0c2e9a7b", 9_073_516_284_113


def duplicate_letter_pieces(id_path: str | None, label: str,
                            describe_source: Callable[[Any], Any] | None) -> tuple[bytes, bytes, bytes, bytes] | None:
    """The dead letter of a duplicate at a line of replay file `label`, as `_dead_letter` writes it,
    cut into the four pieces around its described id, its record and its line number (the engine's
    `LetterPieces`); None unless each stand-in is found in it exactly once, in that order."""
    source = (label, _LINE_STAND_IN)
    letter = envelope.dead_letter("duplicate", duplicate_detail(id_path, _ID_STAND_IN), None, _RECORD_STAND_IN,
                                  describe_source(source) if describe_source is not None else source)
    pieces, rest = [], letter
    for stand_in in (_ID_STAND_IN.encode(), _RECORD_STAND_IN, str(_LINE_STAND_IN).encode()):
        if letter.count(stand_in) != 1:
            return None
        before, found, rest = rest.partition(stand_in)
        if not found:
            return None
        pieces.append(before)
    return pieces[0], pieces[1], pieces[2], rest


CorePartition = Partition | NativePartition  # what new_partition returns
