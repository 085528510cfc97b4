"""Decode and validate one raw input record (SPEC section 1).

`EventDecoder.decode(raw)` returns one of:
- a plain tuple laid out as `Event` (key, time, stake, win, game_code, channel, groups): valid;
- an `Invalid` (error code + detail naming the field): one dead letter;
- `None`: skipped by the `events` filter (no dead letter, no effect on time).

Checks run in SPEC table order and the first failure names the error.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import msgspec

from .amounts import AmountError, parse_amount
from .json_number import JsonNumber
from .shapes import TypeFields
from .times import TimeError, parse_time
from .typed_decode import AMOUNT, LEAF, MAX_FAST_LINE, TEXT, build_field_reader

MAX_DEPTH = 1024

# Depth is limited by MAX_DEPTH (checked in `parse`), not by the interpreter's
# recursion limit, which msgspec would otherwise hit first, at about 1000 levels.
if sys.getrecursionlimit() < 4 * MAX_DEPTH:
    sys.setrecursionlimit(4 * MAX_DEPTH)
KAFKA_TIMESTAMP = "@timestamp"  # the `time` setting that means "the Kafka record timestamp"

# Sentinel for "the path leads nowhere", so details can say absent rather than null.
ABSENT: Any = type("Absent", (), {"__repr__": lambda self: "ABSENT"})()


class Event(NamedTuple):
    """The layout of a valid record. The decoder returns plain tuples of this shape
    (a NamedTuple costs about 1 microsecond more per record); `Event(*t)` names the fields."""

    key: str
    time: int
    stake: int  # micro-units
    win: int  # micro-units
    game_code: str | None
    channel: str | None
    groups: tuple  # the raw value at each extra group_by path (see EventDecoder), unchecked


class Invalid(NamedTuple):
    error: str  # a SPEC error code
    detail: str


@dataclass(frozen=True)
class InputFields:
    """Where each field lives in an input object (dot paths), and the event filter."""

    key: str = "user_id"
    time: str = "timestamp"
    stake: str = "value.stake"
    win: str = "value.win"
    game_code: str = "value.game_code"
    channel: str = "value.channel"
    events: frozenset[str] = frozenset()
    event: str = "event"  # the path of the record's type, which `events` filters on
    id: str | None = None  # the path of a record id (SPEC 7.2)
    types: tuple[TypeFields, ...] = ()  # per-type fields (SPEC 7.1)


Getter = Callable[[dict], Any]


def path_getter(path: str) -> Getter:
    """A function reading a dot path from a decoded object; ABSENT when the path
    is missing or runs through a non-object (or is "": no such field). Built once, used per record."""
    if not path:
        return lambda obj: ABSENT
    first, *rest = path.split(".")
    if not rest:
        return lambda obj: obj.get(first, ABSENT)
    if len(rest) == 1:
        second = rest[0]

        def get_two(obj: dict) -> Any:
            inner = obj.get(first)
            return inner.get(second, ABSENT) if type(inner) is dict else ABSENT

        return get_two
    parts = [first, *rest]

    def get_deep(obj: dict) -> Any:
        value: Any = obj
        for part in parts:
            if type(value) is not dict:
                return ABSENT
            value = value.get(part, ABSENT)
        return value

    return get_deep


def usable_key(value: Any) -> str | None:
    """A key or group value: a non-empty string, or an integer as its decimal string."""
    kind = type(value)
    if kind is str:
        return value or None
    if kind is int:
        return str(value)
    return None


def describe(value: Any) -> str:
    """How a detail names a wrong value."""
    if value is ABSENT:
        return "absent"
    if value is None:
        return "null"
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) is JsonNumber or type(value) is int:
        text = str(value)
        return text if len(text) <= 40 else text[:37] + "..."
    if type(value) is str:
        return '""' if not value else '"' + (value if len(value) <= 40 else value[:37] + "...") + '"'
    if type(value) is dict:
        return "an object"
    if type(value) is list:
        return "an array"
    return type(value).__name__


class EventDecoder:
    """Raw bytes -> Event | Invalid | None, per the configured field paths.

    `group_paths` are extra paths whose raw values each Event carries in
    `groups`, in order (rolling windows grouped by something else than the key).
    """

    def __init__(self, fields: InputFields, group_paths: tuple[str, ...] = ()) -> None:
        self.fields = fields
        self._json = msgspec.json.Decoder(float_hook=JsonNumber)
        self._events = fields.events
        self._event = path_getter(fields.event)
        self._key = path_getter(fields.key)
        self._uses_kafka_time = fields.time == KAFKA_TIMESTAMP
        self._time = None if self._uses_kafka_time else path_getter(fields.time)
        self._reader = FieldReader.of(fields.stake, fields.win, fields.game_code, fields.channel)
        self._groups = tuple(path_getter(path) for path in group_paths)
        self._amounts: dict[str, int] = {}  # float literal text -> micros, for the fast path
        self._fast = self._build_fast(group_paths)

    def decode(self, raw: bytes, kafka_timestamp: int | None = None) -> tuple | Invalid | None:
        if self._fast is not None and len(raw) <= MAX_FAST_LINE and raw.isascii() and b"\\" not in raw:
            values = self._fast(raw)
            if values is not None:
                event = self._check_fast(values, kafka_timestamp)
                if event is not _EXACT:
                    return event
        return self.decode_exact(raw, kafka_timestamp)

    # -- the fast path (see typed_decode.py): a tuple, None, or _EXACT to ask the exact path -------

    def _build_fast(self, group_paths: tuple[str, ...]):
        f = self.fields
        return build_field_reader([
            (f.key, LEAF), (None if self._uses_kafka_time else f.time, LEAF), (f.stake, AMOUNT), (f.win, AMOUNT),
            (f.game_code, TEXT), (f.channel, TEXT), (f.event if self._events else None, TEXT),
            *((path, LEAF) for path in group_paths),
        ])

    def _check_fast(self, values: tuple, kafka_timestamp: int | None) -> Any:
        key, time, stake, win, game, channel, event, *groups = values
        if self._events and event not in self._events:
            return None
        if type(key) is not str:
            if type(key) is not int:
                return _EXACT
            key = str(key)
        elif not key:
            return _EXACT
        if time is None:
            if not self._uses_kafka_time:  # absent or null: missing_time, from the exact path
                return _EXACT
            time = kafka_timestamp
            if time is None:
                return _EXACT
        if (game is not None and type(game) is not str) or (channel is not None and type(channel) is not str):
            return _EXACT
        if groups and None in groups:  # absent or null: the exact path tells which, for the detail
            return _EXACT
        try:
            time = parse_time(time)
            # Amounts repeat (stake levels), so the exact text of a float is cached.
            if type(stake) is JsonNumber:
                micros = self._amounts.get(stake)
                stake = self._amount(stake) if micros is None else micros
            else:
                stake = parse_amount(stake)
            if type(win) is JsonNumber:
                micros = self._amounts.get(win)
                win = self._amount(win) if micros is None else micros
            else:
                win = parse_amount(win)
        except (TimeError, AmountError):
            return _EXACT
        return (key, time, stake, win, game, channel, tuple(groups))

    def _amount(self, text: JsonNumber) -> int:
        micros = parse_amount(text)
        if len(self._amounts) >= 4096:  # bounded against hostile input
            self._amounts.clear()
        self._amounts[text] = micros
        return micros

    # -- the exact path: every rule of SPEC section 1, and the error details ---------------------

    def decode_exact(self, raw: bytes, kafka_timestamp: int | None = None) -> tuple | Invalid | None:
        return self.check(self.parse(raw), kafka_timestamp)

    def check(self, body: Any, kafka_timestamp: int | None, reader: FieldReader | None = None) -> Any:
        """A parsed record (or the parser's Invalid) checked in SPEC order, its amounts and labels read
        where `reader` says (default: the `[input]` paths)."""
        if type(body) is not dict:
            return body if type(body) is Invalid else Invalid("not_an_object", f"{_json_kind(body)} is not an object")
        if self._events and not _wanted(self._event(body), self._events):
            return None
        f = self.fields
        r = reader or self._reader

        raw_key = self._key(body)
        key = usable_key(raw_key)
        if key is None:
            if raw_key is ABSENT or raw_key is None:
                return Invalid("missing_key", f"{f.key}: {describe(raw_key)}")
            return Invalid("bad_key", f"{f.key}: {describe(raw_key)} is not a non-empty string or an integer")

        if self._time is None:  # the Kafka record timestamp
            raw_time: Any = ABSENT if kafka_timestamp is None else kafka_timestamp
        else:
            raw_time = self._time(body)
        if raw_time is ABSENT or raw_time is None:
            return Invalid("missing_time", f"{f.time}: {describe(raw_time)}")
        try:
            time = parse_time(raw_time)
        except TimeError as error:
            return Invalid("bad_time", f"{f.time}: {error}")

        try:
            stake = parse_amount(_null(r.stake(body)))
        except AmountError as error:
            return Invalid("bad_amount", f"{r.stake_path}: {error}")
        try:
            win = parse_amount(_null(r.win(body)))
        except AmountError as error:
            return Invalid("bad_amount", f"{r.win_path}: {error}")

        game = _null(r.game_code(body))
        if game is not None and type(game) is not str:
            return Invalid("bad_field", f"{r.game_code_path}: {describe(game)} is not a string")
        channel = _null(r.channel(body))
        if channel is not None and type(channel) is not str:
            return Invalid("bad_field", f"{r.channel_path}: {describe(channel)} is not a string")
        return (key, time, stake, win, game, channel, tuple(get(body) for get in self._groups))

    def parse(self, raw: bytes) -> Any:
        """The decoded JSON value, or Invalid('invalid_json', why)."""
        if len(raw) > 2 * MAX_DEPTH and raw.count(b"[") + raw.count(b"{") > MAX_DEPTH:
            if _nesting_depth(raw) > MAX_DEPTH:
                return Invalid("invalid_json", f"not JSON: nested more than {MAX_DEPTH} levels deep")
        try:
            return self._json.decode(raw)
        except UnicodeDecodeError as error:
            return Invalid("invalid_json", f"not JSON: not UTF-8 ({error.reason} at byte {error.start})")
        except msgspec.ValidationError as error:  # an integer too long for this parser (RFC 8259 section 9)
            return Invalid("invalid_json", f"not JSON: {_strip_at(str(error))}")
        except msgspec.DecodeError as error:
            return Invalid("invalid_json", f"not JSON: {str(error).removeprefix('JSON is malformed: ')}")
        except RecursionError:  # pragma: no cover - the depth check above comes first
            return Invalid("invalid_json", f"not JSON: nested more than {MAX_DEPTH} levels deep")


_EXACT: Any = object()  # the fast path's "decode this one the exact way"


class FieldReader(NamedTuple):
    """Where a record's amounts and labels are (paths, for details) and their getters."""

    stake_path: str
    stake: Getter
    win_path: str
    win: Getter
    game_code_path: str
    game_code: Getter
    channel_path: str
    channel: Getter

    @classmethod
    def of(cls, stake: str, win: str, game_code: str, channel: str) -> "FieldReader":
        return cls(stake, path_getter(stake), win, path_getter(win), game_code, path_getter(game_code),
                   channel, path_getter(channel))


def _wanted(event: Any, events: frozenset[str]) -> bool:
    return type(event) is str and event in events


def _null(value: Any) -> Any:
    return None if value is ABSENT else value


def _json_kind(value: Any) -> str:
    if type(value) is list:
        return "a JSON array"
    if type(value) is str:
        return "a JSON string"
    if value is None:
        return "JSON null"
    if type(value) is bool:
        return "a JSON boolean"
    return "a JSON number"


def _strip_at(message: str) -> str:
    return message.split(" - at ", 1)[0]


_DEPTH_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _nesting_depth(raw: bytes) -> int:
    """The deepest bracket nesting outside strings (only for long, bracket-heavy input)."""
    depth = deepest = 0
    for token in _DEPTH_TOKENS.finditer(raw):
        char = token.group()[:1]
        if char in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in b"]}":
            depth -= 1
    return deepest
