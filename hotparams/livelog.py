"""How a live handle logs what its tracker decides (I/O-free but for the
logger): every applied change and every fault (gap, re-read, rejection,
lost connection, reconnect) goes to ``hotparams.live`` with ``namespace``,
``version`` and ``epoch`` (and ``event``, ``previous`` ...) as ``extra``
fields.  Log lines name fields, never values."""

from __future__ import annotations

import logging
from typing import Any

from .snapshot import Snapshot
from .views import View

__all__ = ["extra_of", "log", "log_applied"]

log = logging.getLogger("hotparams.live")


def extra_of(namespace: str, version: int, epoch: str, event: str = "") -> dict[str, Any]:
    """The ``extra`` fields of a log line about one version of a namespace."""
    extra: dict[str, Any] = {"namespace": namespace, "version": version, "epoch": epoch}
    if event:
        extra["event"] = event
    return extra


def log_applied(
    namespace: str, old: Snapshot[Any] | None, new: Snapshot[Any], view: View[Any], how: str
) -> None:
    """The line of an applied version: from what, how late, which fields changed."""
    if not log.isEnabledFor(logging.INFO):  # the apply path pays nothing for it
        return
    previous = old.version if old is not None and old.epoch == new.epoch else 0
    changed = sorted(
        n
        for n in set(new.values) | (set(old.values) if old is not None else set())
        if old is None or old.values.get(n) != new.values.get(n)
    )
    variants = old is None or old.variants.to_json() != new.variants.to_json()
    source = "an event" if how == "event" else "a re-read"
    log.info(
        "%s: applied version %d (was %d) from %s, %.1f ms after its commit; changed: %s",
        namespace,
        new.version,
        previous,
        source,
        view.lag_ms,
        ", ".join([*changed, *(["(variants)"] if variants and new.variants else [])]) or "nothing",
        extra={
            **extra_of(namespace, new.version, new.epoch, "applied"),
            "previous": previous,
            "source": how,
            "lag_ms": view.lag_ms,
            "fields": changed,
            "variants": sorted(new.variants.variants),
        },
    )
