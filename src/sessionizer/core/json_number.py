"""`JsonNumber`: the exact text of a JSON float literal, as the decoder saw it.

Kept in a module of its own: a str subclass, it stays an ordinary Python class
when the core modules are compiled.
"""


class JsonNumber(str):
    """The exact text of a JSON float literal (`1.5`, `1e2`): amounts stay exact."""

    __slots__ = ()
