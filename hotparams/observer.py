"""The observer interface of a live handle (I/O-free): told of what its
tracker decides.  The Prometheus metrics (:mod:`hotparams.metrics`),
OpenTelemetry (:mod:`hotparams.otel`) and the OpenFeature provider
implement it; ``Live.observe(observer)`` adds one."""

from __future__ import annotations

__all__ = ["Observer"]


class Observer:
    """Told of what a tracker decides (the metrics); every method does nothing here."""

    def applied(self, version: int, lag_s: float) -> None:
        """A version was applied, ``lag_s`` seconds after its commit."""

    def resynced(self) -> None:
        """The handle re-reads the namespace (a gap, a re-subscribe, a probe)."""

    def rejected(self) -> None:
        """A stored version did not fit the model and was not applied."""

    def reconnected(self) -> None:
        """The listener is subscribed again after losing its connection."""

    def connection(self, connected: bool) -> None:
        """The listener's connection state changed."""

    def callback_failed(self) -> None:
        """A change callback raised."""
