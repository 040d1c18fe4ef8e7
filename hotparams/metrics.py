"""Prometheus metrics of live handles (``prometheus_client``).

Every :class:`~hotparams.Live` and :class:`~hotparams.aio.AsyncLive`
records into a :class:`Metrics` (by default the process-wide one, on
``prometheus_client``'s default registry; pass ``metrics=Metrics(registry)``
to ``bus.watch`` for another).  Expose them on the worker's own HTTP server
or on a port of their own::

    from hotparams.metrics import default_metrics
    metrics = default_metrics()
    app.add_url_rule("/metrics", view_func=lambda: metrics.exposition())  # Flask
    wsgi = metrics.wsgi_app()                 # any WSGI server, or mounted in one
    metrics.serve(9108)                       # a thread serving /metrics

- ``hotparams_applied_version`` (gauge): the version a handle serves
- ``hotparams_connected`` (gauge): 1 while subscribed and in sync
- ``hotparams_apply_lag_seconds`` (histogram): from a version's commit to
  its application in this process
- ``hotparams_reconnects_total`` (counter): subscriptions made again after a loss
- ``hotparams_resyncs_total`` (counter): re-reads (a gap, a re-subscribe, a probe)
- ``hotparams_rejected_snapshots_total`` (counter): versions the model refused
- ``hotparams_callback_errors_total`` (counter): change callbacks that raised

All have the label ``namespace``.  Recording happens when the listener
applies a version or meets a fault: never on the read path.

Several processes (gunicorn workers): set ``PROMETHEUS_MULTIPROC_DIR`` to
an empty directory before ``prometheus_client`` is imported (the example's
``workers/gunicorn.conf.py`` does it through :mod:`hotparams.gunicorn`,
which also calls ``mark_process_dead`` for each worker that exits).  Every
process then writes its values to files there and :meth:`Metrics.exposition`
(any worker's ``/metrics``) aggregates the live processes:
``hotparams_applied_version`` is the lowest version a live process serves,
``hotparams_connected`` the number of connected handles, counters and the
lag histogram the sums.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIServer

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .observer import Observer

__all__ = ["LAG_BUCKETS", "Metrics", "default_metrics", "multiprocess_dir"]

#: apply-lag buckets, in seconds: from half a millisecond to a minute
LAG_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def multiprocess_dir() -> str | None:
    """``PROMETHEUS_MULTIPROC_DIR``, if set (``prometheus_client`` then writes
    each process's values to files there)."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """The metrics of live handles, registered once in ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = registry if registry is not None else prometheus_client.REGISTRY
        self.registry = reg
        labels = ["namespace"]
        self.applied_version = Gauge(
            "hotparams_applied_version",
            "Version of the namespace this process serves",
            labels,
            registry=reg,
            multiprocess_mode="livemin",  # several processes: the slowest live one
        )
        self.connected = Gauge(
            "hotparams_connected",
            "1 while the live handle is subscribed and in sync, else 0",
            labels,
            registry=reg,
            multiprocess_mode="livesum",  # several processes: how many are connected
        )
        self.apply_lag = Histogram(
            "hotparams_apply_lag_seconds",
            "Time from a version's commit in Redis to its application in this process",
            labels,
            buckets=LAG_BUCKETS,
            registry=reg,
        )
        self.reconnects = Counter(
            "hotparams_reconnects",
            "Times the listener subscribed again after losing its connection",
            labels,
            registry=reg,
        )
        self.resyncs = Counter(
            "hotparams_resyncs",
            "Re-reads of the namespace (a gap, a re-subscribe, a reconcile probe)",
            labels,
            registry=reg,
        )
        self.rejected = Counter(
            "hotparams_rejected_snapshots",
            "Stored versions the model refused (the last good one was kept)",
            labels,
            registry=reg,
        )
        self.callback_errors = Counter(
            "hotparams_callback_errors",
            "Change callbacks that raised",
            labels,
            registry=reg,
        )

    def observer(self, namespace: str) -> Observer:
        """What a handle of ``namespace`` records into."""
        return _Recorder(self, namespace)

    # ------------------------------------------------------------ exposition

    def collecting_registry(self) -> CollectorRegistry:
        """The registry to expose: in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``
        set) and on the default registry, one that aggregates every live process."""
        if multiprocess_dir() is None or self.registry is not prometheus_client.REGISTRY:
            return self.registry
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format (``CONTENT_TYPE`` is its type);
        of every live process in multiprocess mode."""
        return prometheus_client.generate_latest(self.collecting_registry())

    #: the Content-Type of :meth:`exposition`
    CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST

    def wsgi_app(self) -> WSGIApp:
        """A WSGI app serving the exposition (mount it in an existing server)."""
        app: WSGIApp = prometheus_client.make_wsgi_app(self.collecting_registry())
        return app

    def serve(self, port: int, addr: str = "0.0.0.0") -> tuple[WSGIServer, threading.Thread]:
        """Serve ``/metrics`` on ``port`` from a daemon thread; ``server.shutdown()`` stops it."""
        return prometheus_client.start_http_server(port, addr, registry=self.collecting_registry())


class _Recorder(Observer):
    """The children of one namespace, resolved once."""

    def __init__(self, metrics: Metrics, namespace: str) -> None:
        self._version = metrics.applied_version.labels(namespace)
        self._connected = metrics.connected.labels(namespace)
        self._lag = metrics.apply_lag.labels(namespace)
        self._reconnects = metrics.reconnects.labels(namespace)
        self._resyncs = metrics.resyncs.labels(namespace)
        self._rejected = metrics.rejected.labels(namespace)
        self._callback_errors = metrics.callback_errors.labels(namespace)

    def applied(self, version: int, lag_s: float) -> None:
        self._version.set(version)
        self._lag.observe(lag_s)

    def resynced(self) -> None:
        self._resyncs.inc()

    def rejected(self) -> None:
        self._rejected.inc()

    def reconnected(self) -> None:
        self._reconnects.inc()

    def connection(self, connected: bool) -> None:
        self._connected.set(1 if connected else 0)

    def callback_failed(self) -> None:
        self._callback_errors.inc()


_default: Metrics | None = None
_default_lock = threading.Lock()


def default_metrics() -> Metrics:
    """The process-wide metrics, on ``prometheus_client``'s default registry
    (made on first use: a metric name registers once per registry)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Metrics()
        return _default
