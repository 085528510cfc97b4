"""Token providers for the tests (no imports from the test kit: `sessionizer run` loads this module): tokens the local broker's unsecured validator accepts.

Loaded by `sessionizer run` through `[kafka.auth] token_provider = "test_tokens:<factory>"`;
each call is appended to the file named by SESSIONIZER_TEST_TOKEN_LOG, so tests can see
when the client asked for a new token.
"""

import base64
import json
import os
import re
import time


def unsecured_jwt(sub: str = "sessionizer", lifetime_s: float = 3600, now: float | None = None) -> tuple[str, float]:
    """A token Kafka's unsecured validator accepts: alg none, empty signature, numeric exp.

    Kafka 4.1 decodes with the standard base64 alphabet, so the claims are varied until
    their encoding has no '-', '_', '+' or '/' (the broker note's trick)."""
    now = time.time() if now is None else now
    header = _b64({"alg": "none"})
    for n in range(10_000):
        body = _b64({"sub": sub, "iat": int(now), "exp": int(now + lifetime_s), "jti": str(n)})
        if not re.search(r"[-_+/]", body):
            return f"{header}.{body}.", float(int(now + lifetime_s))
    raise RuntimeError("no alphabet-neutral token found")


def _b64(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).decode().rstrip("=")


class _Logged:
    def __init__(self, lifetime_s: float, expired: bool = False) -> None:
        self.lifetime_s, self.expired = lifetime_s, expired

    def token(self) -> tuple[str, float]:
        log = os.environ.get("SESSIONIZER_TEST_TOKEN_LOG")
        if log:
            with open(log, "a") as f:
                f.write(f"{time.time()}\n")
        if self.expired:
            return unsecured_jwt(now=time.time() - 7200, lifetime_s=3600)
        return unsecured_jwt(lifetime_s=self.lifetime_s)


def long_lived(auth):
    return _Logged(3600)


def short_lived(auth):
    return _Logged(10)


def expired(auth):
    return _Logged(3600, expired=True)

