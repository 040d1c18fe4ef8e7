"""The real peer: django-constance with its Redis backends (the ``bench`` extra).

Django is configured in-process (no project, no database): constance's Redis
backends need nothing else.  ``config(url, cached=...)`` returns what
``from constance import config`` gives an application, a ``LazyConfig``,
wired to

- ``constance.backends.redisd.RedisBackend``: every ``config.KEY`` is a GET
  round trip to Redis;
- ``constance.backends.redisd.CachingRedisBackend``: a per-process cache
  whose entries expire after ``CONSTANCE_REDIS_CACHE_TIMEOUT`` seconds, then
  the next read does the GET (an interval poller driven by reads).

constance reads its settings once, at import, into ``constance.settings``;
the connection, the TTL and the backend are set there before each
``LazyConfig`` is set up, so that one process can hold both backends.
"""

from __future__ import annotations

from typing import Any

KEY = "TEMPERATURE"
PREFIX = "constance:"
REDIS_BACKEND = "constance.backends.redisd.RedisBackend"
CACHING_BACKEND = "constance.backends.redisd.CachingRedisBackend"


def available() -> bool:
    try:
        import constance.backends  # noqa: F401
        import django  # noqa: F401
    except ImportError:
        return False
    return True


def _configure(url: str) -> None:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            CONSTANCE_BACKEND=REDIS_BACKEND,
            CONSTANCE_REDIS_CONNECTION=url,
            CONSTANCE_CONFIG={KEY: (0.7, "sampling temperature")},
        )
        django.setup()


def config(url: str, *, cached: bool, ttl: float = 60.0) -> Any:
    """A constance ``LazyConfig`` on the Redis at ``url`` (Redis or caching backend)."""
    _configure(url)
    import constance
    from constance import settings as constance_settings

    constance_settings.REDIS_CONNECTION = url
    constance_settings.REDIS_CACHE_TIMEOUT = ttl
    constance_settings.BACKEND = CACHING_BACKEND if cached else REDIS_BACKEND
    lazy = constance.LazyConfig()
    lazy._setup()
    return lazy


def encoded(value: float) -> str:
    """A value as constance stores it (for writers that SET the key directly)."""
    from constance.codecs import dumps

    return str(dumps(value))
