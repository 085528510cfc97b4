import threading
import time

import pytest

from sessionizer.kafka.runtime import StuckCall, bounded


def test_a_call_that_returns_in_time_gives_its_value_or_its_error():
    assert bounded("quick", 1, lambda: 42) == 42
    with pytest.raises(ValueError, match="boom"):
        bounded("failing", 1, lambda: (_ for _ in ()).throw(ValueError("boom")))


def test_a_call_that_never_returns_is_given_up_on():
    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(StuckCall, match="send_offsets_to_transaction"):
        bounded("send_offsets_to_transaction", 0.3, release.wait)
    assert time.monotonic() - started < 2
    release.set()
