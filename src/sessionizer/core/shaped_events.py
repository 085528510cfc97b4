"""Decode records of a job that uses SPEC section 7: per-type fields, record ids, extra aggregates.

`ShapedEventDecoder.decode(raw)` returns what `EventDecoder` does, a valid record's tuple
carrying three more items:

    (key, time, stake, win, game_code, channel, groups, counts, record_id, values)

- stake and win already negated for a `negate` type;
- `counts`: whether the record counts in `event_count` and `max_events`;
- `record_id`: its id as text, or None;
- `values`: one item per extra aggregate of the job (sessions' first, then each rolling
  window's, in config order): None when the record does not feed it (its `types` exclude
  the record, or the field is absent or null), else the value it brings (see shapes.py).

Checks run in SPEC order: section 1 (with the record's type's paths), then the id, then
each aggregate the record feeds; the first failure names the field.
"""

from __future__ import annotations

from typing import Any

from .events import ABSENT, EventDecoder, FieldReader, InputFields, Invalid, describe, path_getter
from .shapes import COUNT, AggregateSpec, BadValue, read_aggregate_value


class ShapedEventDecoder(EventDecoder):
    def __init__(self, fields: InputFields, group_paths: tuple[str, ...],
                 aggregates: tuple[AggregateSpec, ...]) -> None:
        super().__init__(fields, group_paths)
        self._fast = None  # every record takes the exact path
        self._by_type = {t.name: (FieldReader.of(t.stake, t.win, t.game_code, t.channel), t.counts, t.negate)
                         for t in fields.types}
        self._plain = (self._reader, True, False)
        self._id = None if fields.id is None else path_getter(fields.id)
        self._aggregates = [(spec, None if spec.field is None else path_getter(spec.field)) for spec in aggregates]

    def decode(self, raw: bytes, kafka_timestamp: int | None = None) -> Any:
        return self.decode_exact(raw, kafka_timestamp)

    def decode_exact(self, raw: bytes, kafka_timestamp: int | None = None) -> Any:
        body = self.parse(raw)
        if type(body) is not dict:
            return self.check(body, kafka_timestamp)
        found = self._event(body)
        event_type = found if type(found) is str else None
        reader, counts, negate = self._by_type.get(event_type, self._plain)
        checked = self.check(body, kafka_timestamp, reader)
        if type(checked) is not tuple:
            return checked
        key, time, stake, win, game, channel, groups = checked

        record_id = None
        if self._id is not None:
            raw_id = self._id(body)
            if raw_id is not ABSENT and raw_id is not None:
                if type(raw_id) is str and raw_id:
                    record_id = raw_id
                elif type(raw_id) is int:
                    record_id = str(raw_id)
                else:
                    return Invalid("bad_field", f"{self.fields.id}: {describe(raw_id)} is not a record id "
                                                "(a non-empty string or an integer)")

        values = []
        for spec, get in self._aggregates:
            if not spec.feeds(event_type):
                values.append(None)
            elif spec.kind == COUNT:
                values.append(1)
            else:
                raw_value = get(body)
                if raw_value is ABSENT or raw_value is None:
                    values.append(None)
                    continue
                try:
                    values.append(read_aggregate_value(spec.kind, raw_value, negate))
                except BadValue as error:
                    return Invalid("bad_field", f"{spec.field}: {error} ({spec.kind} aggregate {spec.name!r})")
        if negate:
            stake, win = -stake, -win
        return (key, time, stake, win, game, channel, groups, counts, record_id, tuple(values))
