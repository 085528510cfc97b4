"""Liveness and readiness, as Kubernetes probes ask for them.

- live (/healthz): the main loop made progress within `stuck_after` seconds. Waiting on
  purpose (Kafka away, a backoff) counts as progress: restarting the process would not
  help. A call that hangs (a commit that never returns) does not.
- ready (/readyz): every assigned partition is restored and consuming, and Kafka answers.

The runtime calls `beat` and `set_ready`/`not_ready` from its loop; the HTTP thread reads.
"""

from __future__ import annotations

import time
from typing import Any, Callable

DEFAULT_STUCK_AFTER_SECONDS = 60.0  # when there is no [metrics] table to say otherwise


class Health:
    def __init__(self, stuck_after_s: float = DEFAULT_STUCK_AFTER_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stuck_after_s = stuck_after_s
        self._clock = clock
        self._last_beat = clock()
        self._doing = "starting"
        self._ready = False
        self._why = "starting"

    def beat(self, doing: str | None = None) -> None:
        """The loop moved on (doing what, when that changes)."""
        self._last_beat = self._clock()
        if doing is not None:
            self._doing = doing

    def set_ready(self, why: str) -> None:
        self._ready, self._why = True, why

    def not_ready(self, why: str) -> None:
        self._ready, self._why = False, why

    @property
    def is_ready(self) -> bool:
        return self._ready

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        since = self._clock() - self._last_beat
        live = since <= self.stuck_after_s
        body = {"live": live, "doing": self._doing, "since_last_progress_s": round(since, 3),
                "stuck_after_s": self.stuck_after_s}
        if not live:
            body["why"] = f"the main loop has not moved for {since:.0f} s ({self._doing})"
        return live, body

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        return self._ready, {"ready": self._ready, "why": self._why}
