"""The one backoff policy of hotparams, free of I/O: how long to wait
before another try, for a bus call, a live handle's reconnect and a fleet
report alike.

Waits are "full jitter" exponential (a random wait between 0 and
``base * 2**n``, at most ``cap``): a fleet that lost Redis at once does not
come back in lockstep.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

from .config import Settings

__all__ = ["FIRST_RETRY", "jittered", "retry_waits"]

#: the longest wait before a bus call's first retry, and the base of the others
FIRST_RETRY = 0.05


def jittered(attempt: int, base: float, cap: float) -> float:
    """The wait before try ``attempt + 1`` after ``attempt`` failures (1, 2, ...)."""
    return random.uniform(0, min(cap, base * 2 ** min(attempt, 32)))


def retry_waits(settings: Settings) -> Iterator[float]:
    """The waits between the ``retry_attempts`` tries of one bus call, as
    long as ``retry_deadline`` (from the first failure) allows another."""
    deadline = time.monotonic() + settings.retry_deadline
    for attempt in range(1, settings.retry_attempts):
        wait = jittered(attempt, FIRST_RETRY / 2, settings.retry_max_wait)
        if time.monotonic() + wait > deadline:
            return
        yield wait
