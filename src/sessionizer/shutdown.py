"""SIGTERM and SIGINT ask the long-running commands to finish their current work and exit 0.

Installed first thing, so a signal during start-up (imports, connecting) is honoured too.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

STOP = threading.Event()
log = logging.getLogger("sessionizer")


def install() -> None:
    def on_signal(signum: int, _frame: Any) -> None:
        if not STOP.is_set():
            log.info("stopping: finishing the current work", extra={"signal": signal.Signals(signum).name})
        STOP.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
