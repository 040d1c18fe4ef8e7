"""How hotparams talks to Redis, for the sync and the asyncio bus alike:
the client options, which errors are transient, and the retry policy.

Retries are hotparams' own (tenacity), so redis-py's are switched off: a
call makes ``retry_attempts`` tries in all, the first outside tenacity (the
happy path pays nothing for it), then jittered exponential waits within
``retry_deadline``; a small random wait before the first retry keeps a
fleet that lost Redis at once from retrying in lockstep.
"""

from __future__ import annotations

import random
from typing import Any

from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from tenacity import (
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from .config import Settings
from .redact import describe  # re-exported: bus, aio and live import it from here

__all__ = ["TRANSIENT", "client_options", "describe", "first_retry_wait", "retry_policy"]

#: errors worth another try: the connection, not the request, failed
TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError)


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of ``redis.Redis.from_url`` (sync or asyncio)."""
    options: dict[str, Any] = {
        "socket_connect_timeout": settings.connect_timeout,
        "socket_timeout": settings.socket_timeout,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
        "client_name": "hotparams",
    }
    try:  # redis-py >= 7: its maintenance handshake would double a connect timeout
        from redis.maint_notifications import MaintNotificationsConfig

        options["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
    except ImportError:  # pragma: no cover - older redis-py
        pass
    return options


def retry_policy(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of tenacity's ``Retrying``/``AsyncRetrying`` for
    the tries after the first one (so ``retry_attempts - 1`` of them)."""
    return {
        "stop": stop_after_attempt(settings.retry_attempts - 1)
        | stop_after_delay(settings.retry_deadline),
        "wait": wait_random_exponential(multiplier=0.05, max=settings.retry_max_wait),
        "retry": retry_if_exception_type(TRANSIENT),
        "reraise": True,
    }


def first_retry_wait() -> float:
    """Seconds to wait before the first retry (tenacity waits only between its own tries)."""
    return random.uniform(0, 0.05)
