"""Operators' own event shapes (SPEC section 7): event types with their own fields, record ids
for duplicates, and extra aggregates.

The parts here are the pieces the decoder and the stores share:
- `TypeFields`, `AggregateSpec`: what the config says;
- `read_aggregate_value`: one record's value for one aggregate, checked (or why it is wrong);
- `Accumulator`s: each aggregate kind's running state and its output JSON;
- `IdRegistry`: which (key, id) pairs an open session or window still holds.

A config that uses none of it never reaches this module's per-record code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from .amounts import MAX_AMOUNT, MICROS, AmountError, json_amount, parse_amount
from .json_number import JsonNumber

SUM, COUNT, MIN, MAX, FIRST, LAST, COUNT_DISTINCT = "sum", "count", "min", "max", "first", "last", "count_distinct"
AGGREGATE_KINDS = (SUM, COUNT, MIN, MAX, FIRST, LAST, COUNT_DISTINCT)
AMOUNT_KINDS = (SUM, MIN, MAX)


@dataclass(frozen=True)
class TypeFields:
    """`[input.types.<name>]`, with what it does not set taken from `[input]`. A path of "" means
    this type has no such field (it counts as absent)."""

    name: str
    stake: str
    win: str
    game_code: str
    channel: str
    counts: bool = True
    negate: bool = False


@dataclass(frozen=True)
class AggregateSpec:
    """One `[[sessions.aggregates]]` or `[[rolling.aggregates]]` entry."""

    name: str  # its key in the output `value`
    kind: str  # one of AGGREGATE_KINDS
    field: str | None = None  # a path; None for `count`
    types: frozenset[str] | None = None  # None: every accepted type (and records without one)

    def feeds(self, event_type: str | None) -> bool:
        return self.types is None or event_type in self.types


class BadValue(ValueError):
    """Why a present value cannot feed an aggregate (the detail, without the path)."""


def read_aggregate_value(kind: str, value: Any, negate: bool) -> Any:
    """The value a record brings to an aggregate of `kind`, from the raw JSON value at its field
    (not absent, not null): micros for sum/min/max (`negate` applies to sum), the JSON text for
    first/last, the text for count_distinct. Raises BadValue."""
    if kind in AMOUNT_KINDS:
        micros = parse_signed_amount(value)
        return -micros if negate and kind == SUM else micros
    if kind == FIRST or kind == LAST:
        return json_value_text(value)
    if kind == COUNT_DISTINCT:
        if type(value) is str:
            return value
        if type(value) is int:
            return str(value)
        raise BadValue(f"{_shown(value)} is not a string or an integer")
    raise AssertionError(kind)  # pragma: no cover - count reads no field


def parse_signed_amount(value: Any) -> int:
    """Micros of a decimal that may be negative: a JSON number or numeric string, finite, at most
    6 decimal places, at most 10^12 in absolute value."""
    kind = type(value)
    negative = False
    if kind is int:
        if abs(value) > MAX_AMOUNT:
            raise BadValue(f"{value} is more than 10^12 in absolute value")
        return value * MICROS
    if kind is bool or (kind is not str and kind is not JsonNumber):
        raise BadValue(f"{_shown(value)} is not a number")
    text = value
    if text.startswith("-"):
        negative, text = True, text[1:]
    try:
        micros = parse_amount(JsonNumber(text) if kind is JsonNumber else text)
    except AmountError:
        raise BadValue(f"{_shown(value)} is not a number with at most 6 decimal places and at most 10^12 "
                          "in absolute value") from None
    return -micros if negative else micros


def json_value_text(value: Any) -> bytes:
    """A string, number or boolean as JSON text, numbers exactly as written."""
    kind = type(value)
    if kind is str:
        return orjson.dumps(value)
    if kind is JsonNumber:
        return value.encode()
    if kind is bool:
        return b"true" if value else b"false"
    if kind is int:
        return b"%d" % value
    raise BadValue(f"{_shown(value)} is not a string, a number or a boolean")


def _shown(value: Any) -> str:
    from .events import describe  # (events imports this module)
    return describe(value)


# -- running state per aggregate kind ------------------------------------------------------------
# A state is a plain value (int, None, list or set) so stores keep and encode it cheaply. `add`
# takes the record's event time for first/last, so a window's state does not depend on the
# order records arrive in (sweep order: event time, then arrival).


def empty_state(kind: str) -> Any:
    if kind in (SUM, COUNT):
        return 0
    if kind == COUNT_DISTINCT:
        return set()
    return None  # min, max, first, last


def add_value(kind: str, state: Any, value: Any, time: int) -> Any:
    """The state with one record's value (not None) added."""
    if kind == SUM or kind == COUNT:
        return state + value
    if kind == MIN:
        return value if state is None or value < state else state
    if kind == MAX:
        return value if state is None or value > state else state
    if kind == FIRST:  # the earliest event time; of equal times, the one that came first
        return [time, value] if state is None or time < state[0] else state
    if kind == LAST:  # the latest event time; of equal times, the one that came last
        return [time, value] if state is None or time >= state[0] else state
    state.add(value)  # count_distinct
    return state


def state_json(kind: str, state: Any) -> bytes:
    if kind == SUM:
        return json_amount(state)
    if kind == COUNT:
        return b"%d" % state
    if kind == COUNT_DISTINCT:
        return b"%d" % len(state)
    if state is None:
        return b"null"
    if kind == MIN or kind == MAX:
        return json_amount(state)
    return state[1]  # first, last: the JSON text as written


def encode_state(kind: str, state: Any) -> Any:
    """A state as MessagePack-able values (sets sorted, so equal states encode alike)."""
    return sorted(state) if kind == COUNT_DISTINCT else state


def decode_state(kind: str, encoded: Any) -> Any:
    if kind == COUNT_DISTINCT:
        return set(encoded)
    if kind in (FIRST, LAST) and encoded is not None:
        return [encoded[0], bytes(encoded[1])]
    return encoded


def aggregates_json(aggregates: tuple[AggregateSpec, ...], states: list[Any]) -> bytes:
    """`,"name":value` for each aggregate, in config order: spliced into the output `value`."""
    return b"".join(b',%b:%b' % (orjson.dumps(spec.name), state_json(spec.kind, state))
                    for spec, state in zip(aggregates, states))


def fold(aggregates: tuple[AggregateSpec, ...], records: list[tuple[int, tuple]]) -> list[Any]:
    """Each aggregate's state over (event time, values) records in sweep order."""
    states = [empty_state(spec.kind) for spec in aggregates]
    for time, values in records:
        for index, value in enumerate(values):
            if value is not None:
                states[index] = add_value(aggregates[index].kind, states[index], value, time)
    return states


class IdRegistry:
    """Record ids (per key) of accepted records that an open session or window still holds,
    each with how many hold it: a copy of one of them is a duplicate (SPEC 7.2)."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held: dict[tuple[str, str], int] = {}

    def __contains__(self, key_and_id: tuple[str, str]) -> bool:
        return key_and_id in self.held

    def hold(self, key: str, record_id: str) -> None:
        pair = (key, record_id)
        self.held[pair] = self.held.get(pair, 0) + 1

    def release(self, key: str, record_id: str) -> None:
        pair = (key, record_id)
        left = self.held[pair] - 1
        if left:
            self.held[pair] = left
        else:
            del self.held[pair]

    def __len__(self) -> int:
        return len(self.held)
