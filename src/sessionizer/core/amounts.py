"""Exact money: amounts are integers of micro-units (1e-6), never floats.

SPEC section 1: an amount is a JSON number or a numeric string, finite, >= 0,
exact at 6 decimal places and at most 10^12. Parsing keeps the number's text
(the JSON decoder hands float literals over as `JsonNumber`, a str), so
`0.1 + 0.2` is 300000 micros and prints as `0.3`.
"""

from __future__ import annotations

import re
from decimal import ROUND_DOWN, Context, Decimal, InvalidOperation
from typing import Any

from .json_number import JsonNumber

MICROS = 1_000_000
MAX_AMOUNT = 10**12
MAX_MICROS = MAX_AMOUNT * MICROS

# A numeric string: what Decimal() reads, minus underscores, spaces, inf and nan.
_NUMERIC_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_SIX_PLACES = Decimal("0.000001")
_WIDE = Context(prec=64)  # 10^12 at 6 places needs 19 digits; no rounding ever happens


class AmountError(ValueError):
    """`str(error)` is the human detail, without the field name."""


def parse_amount(value: Any) -> int:
    """Micro-units of one amount field; absent/null is 0. Raises AmountError."""
    kind = type(value)
    if kind is int:
        if value < 0:
            raise AmountError(f"{value} is negative")
        if value > MAX_AMOUNT:
            raise AmountError(f"{value} is more than 10^12")
        return value * MICROS
    if kind is JsonNumber:
        fast = _plain_decimal_micros(value, value)
        return fast if fast is not None else _text_micros(value, _show(value))
    if kind is str:
        shown = '"' + _show(value) + '"'
        if not _NUMERIC_TEXT.fullmatch(value):
            raise AmountError(f"{shown} is not a number")
        fast = _plain_decimal_micros(value, shown)
        return fast if fast is not None else _text_micros(value, shown)
    if value is None:
        return 0
    if kind is bool:
        raise AmountError(f"{str(value).lower()} is a boolean, not a number")
    raise AmountError(f"a {_json_kind(value)} is not a number")


def _plain_decimal_micros(text: str, shown: str) -> int | None:
    """The common case `12`, `1.5`, `0.000001` without Decimal; None when not that simple."""
    whole, dot, frac = text.partition(".")
    if (
        0 < len(whole) <= 13
        and whole.isdigit()
        and whole.isascii()
        and (not dot or (0 < len(frac) <= 6 and frac.isdigit() and frac.isascii()))
    ):
        micros = int(whole) * MICROS + (int(frac) * 10 ** (6 - len(frac)) if frac else 0)
        if micros > MAX_MICROS:
            raise AmountError(f"{shown} is more than 10^12")
        return micros
    return None


def _text_micros(text: str, shown: str) -> int:
    """Any number text, exactly, through Decimal (rare: exponents, signs, long fractions)."""
    try:
        number = Decimal(text)
    except InvalidOperation:  # pragma: no cover - the grammar check above prevents it
        raise AmountError(f"{shown} is not a number") from None
    if not number.is_finite():  # pragma: no cover - the grammar admits no inf/nan
        raise AmountError(f"{shown} is not finite")
    if number < 0:
        raise AmountError(f"{shown} is negative")
    if number > MAX_AMOUNT:
        raise AmountError(f"{shown} is more than 10^12")
    kept = number.quantize(_SIX_PLACES, rounding=ROUND_DOWN, context=_WIDE)
    if kept != number:
        raise AmountError(f"{shown} has more than 6 decimal places")
    return int(kept.scaleb(6, context=_WIDE))


def json_amount(micros: int) -> bytes:
    """JSON number text of an amount: `0.3`, `12`, `-1.5`; never an exponent."""
    whole, frac = divmod(micros if micros >= 0 else -micros, MICROS)
    text = b"%d" % whole if not frac else (b"%d.%06d" % (whole, frac)).rstrip(b"0")
    return text if micros >= 0 else b"-" + text


def format_micros(micros: int) -> str:
    return json_amount(micros).decode("ascii")


def _show(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def _json_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "JSON object"
    if isinstance(value, list):
        return "JSON array"
    return type(value).__name__
