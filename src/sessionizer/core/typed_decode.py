"""The fast path of input decoding: only the configured fields, decoded and type-checked in C.

msgspec decodes a line straight into a Struct shaped after the configured
field paths, skipping every other field, and a small generated function reads
the fields out of it (plain attribute loads: a generic getter per field costs
more than the whole rest of the path on slow machines).

The result is only trusted where it cannot disagree with the exact path in
`events.py`: the caller sends only plain ASCII lines (so valid UTF-8) without
escapes, short enough that nesting cannot pass 1024 levels; a field of an
unexpected JSON type fails the decode here. Then the caller decodes the line
the exact (slower) way, which also writes the error details. The two paths are
checked against each other in the tests.
"""

from __future__ import annotations

from typing import Any, Callable

import msgspec

from .json_number import JsonNumber

LEAF = str | int | None  # keys, groups and times: further checks happen in Python
TEXT = str | None  # game code, channel, event name
AMOUNT = Any  # decoded as in the exact path: int, JsonNumber (exact float text), str, ...

MAX_FAST_LINE = 2048  # below 2 * 1024 + 2 bytes, nesting cannot exceed 1024 levels
_ERRORS = (msgspec.ValidationError, msgspec.DecodeError)


def build_field_reader(leaves: list[tuple[str | None, Any]]) -> Callable[[bytes], tuple | None] | None:
    """For leaves `[(dot path, type), ...]`, a function: line -> tuple of their values in
    that order (None for absent; a None path is always None), or None if the line does not
    fit the shape. Returns None when the paths cannot be one Struct (a path that is both a
    field and an object)."""
    tree: dict[str, Any] = {}
    slots: list[list[int]] = []  # per tree leaf: the positions it fills in the result
    for position, (path, kind) in enumerate(leaves):
        if path is None:
            continue
        node = tree
        *parents, last = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                return None
        existing = node.get(last)
        if isinstance(existing, dict):
            return None
        if existing is None:
            node[last] = (len(slots), kind)
            slots.append([position])
        else:
            index, other = existing
            if other != kind:
                if AMOUNT in (other, kind):
                    return None
                node[last] = (index, LEAF)  # a shared path, e.g. group_by = game_code: the wider type
            slots[index].append(position)

    expressions: list[str] = ["None"] * len(leaves)
    lines: list[str] = []
    counter = iter(range(1_000_000))

    def make(node: dict[str, Any], var: str) -> type:
        fields, rename = [], {}
        for json_name, value in node.items():
            attr = f"f{next(counter)}"
            rename[attr] = json_name
            if isinstance(value, dict):
                child = f"n{len(lines)}"
                lines.append(f"    {child} = {var}.{attr}" if var == "r" else
                             f"    {child} = None if {var} is None else {var}.{attr}")
                fields.append((attr, make(value, child) | None, None))
            else:
                index, kind = value
                fields.append((attr, kind, None))
                for position in slots[index]:
                    expressions[position] = f"{var}.{attr}" if var == "r" else f"(None if {var} is None else {var}.{attr})"
        return msgspec.defstruct("TypedInput", fields, rename=rename, gc=False)

    shape = make(tree, "r")
    source = "\n".join([
        "def read_fields(raw):",
        "    try:",
        "        r = decode(raw)",
        "    except ERRORS:",
        "        return None",
        *lines,
        f"    return ({', '.join(expressions)},)",
    ])
    namespace: dict[str, Any] = {
        "decode": msgspec.json.Decoder(shape, float_hook=JsonNumber).decode,
        "ERRORS": _ERRORS,
    }
    exec(compile(source, "<sessionizer.typed_decode>", "exec"), namespace)  # noqa: S102 - our own template
    reader = namespace["read_fields"]
    reader.source = source  # for debugging: what was generated
    return reader
