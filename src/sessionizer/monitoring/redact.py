"""The config in effect, for people to read: every secret shown as `***`.

The TOML never holds a secret (credentials come from `*_env`/`*_file` keys), but the client
properties built from it do (`sasl.password`, tokens, keys), and so may a pass-through
property a user added. A key is masked when its name says it is a secret.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

MASK = "***"
_SECRET_NAME = re.compile(r"(password|secret|token|credential|jaas|\.pem$|^ssl\.key|private|api_key$)", re.I)
# Names that look like secrets but only say where one is (an env variable, a file, an endpoint).
_REFERENCE = re.compile(r"(_env|_file|_url|_endpoint|\.location|token_provider)$", re.I)


def is_secret(name: str) -> bool:
    return bool(_SECRET_NAME.search(name)) and not _REFERENCE.search(name)


def config_view(config: Any) -> Any:
    """The TOML as read (a ConfigFile, or None), as plain data with secrets masked."""
    return redact(msgspec.to_builtins(config)) if config is not None else {}


def redact(value: Any, name: str = "") -> Any:
    """`value` with every secret-named entry (at any depth) replaced by `***`; callables by their kind."""
    if isinstance(value, dict):
        return {key: redact(item, str(key)) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(item, name) for item in value]
    if value is None:
        return None
    if is_secret(name):
        return MASK
    if callable(value):
        return "<callback>"
    if isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
