"""What stands between the network and the admin API: a bounded body,
bounded JSON, and a limit on failed authentication (no I/O of its own).

- A body larger than ``max_body_bytes`` (default 1 MiB) is refused with
  413 before it is read whole, and long before anything reaches Redis.
- JSON nested deeper than ``max_json_depth`` (default 32) is refused with
  400; so is JSON that does not parse (orjson stops at 1,024 levels, so a
  100,000-deep document is a clear 400, never a RecursionError and a 500).
- Each failed authentication is logged (address and reason, never the
  token given) and counted per client address; after ``auth_failures`` of
  them within ``auth_window`` seconds that address gets 429 (with
  ``Retry-After``) until the window has passed.  The count lives in the
  process: each gunicorn worker keeps its own.  Behind a proxy, make
  ``request.remote_addr`` the client's (werkzeug's ``ProxyFix``).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import orjson

__all__ = [
    "MIN_TOKEN_LENGTH",
    "BodyTooLarge",
    "FailedLogins",
    "MalformedBody",
    "check_depth",
    "parse_json",
]

#: a bearer token shorter than this is refused when the app starts
MIN_TOKEN_LENGTH = 32
#: client addresses whose failures are remembered (the oldest is forgotten first)
MAX_ADDRESSES = 10_000


class BodyTooLarge(Exception):
    """A body over the limit (413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the body is larger than {limit} bytes")


class MalformedBody(ValueError):
    """A body that is not JSON, or is nested too deep (400)."""


def check_depth(doc: Any, limit: int) -> None:
    """MalformedBody if ``doc`` nests lists and objects deeper than ``limit``
    (iterative: a deep document cannot exhaust the stack)."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            raise MalformedBody(f"the JSON body is nested deeper than {limit} levels")
        stack.extend((child, depth + 1) for child in children)


def parse_json(raw: bytes, max_depth: int) -> Any:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise MalformedBody(
            f"the body is not valid JSON (or is nested deeper than {max_depth} levels)"
        ) from None
    check_depth(doc, max_depth)
    return doc


class FailedLogins:
    """Failed authentications per client address in a sliding window (thread-safe)."""

    def __init__(
        self, limit: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, address: str, now: float) -> deque[float]:
        times = self._seen.get(address)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._seen[address]
        return times

    def blocked_for(self, address: str) -> float:
        """Seconds until ``address`` may try again (0: it may now)."""
        with self._lock:
            now = self.clock()
            times = self._recent(address, now)
            if len(times) < self.limit:
                return 0.0
            return max(0.0, times[-self.limit] + self.window - now)

    def failed(self, address: str) -> bool:
        """Count one failure; True when it makes the address blocked."""
        with self._lock:
            now = self.clock()
            times = self._recent(address, now)
            times.append(now)
            self._seen[address] = times
            self._seen.move_to_end(address)
            while len(self._seen) > MAX_ADDRESSES:
                self._seen.popitem(last=False)
            return len(times) == self.limit
