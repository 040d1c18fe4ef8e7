"""OpenTelemetry: spans of writes and applied versions, the version as a gauge
(extra ``otel``: ``opentelemetry-api`` only; bring any SDK, or none).

- ``hotparams.write`` (a span per write of the Bus or the AsyncBus:
  ``set``, ``unset``, ``rollback``, ``variant``, ``restore``): attributes
  ``hotparams.namespace``, ``hotparams.op``, ``hotparams.version`` (the new
  one), ``hotparams.fields`` (the fields the write names), ``hotparams.author``;
  an error is recorded on the span.
- ``hotparams.apply`` (a span per version a live handle applies, in the
  worker): it starts at the version's commit and ends when the worker
  serves it, so its duration is the apply lag; attributes
  ``hotparams.namespace``, ``hotparams.version``, ``hotparams.lag_ms``.
- ``hotparams.applied_version`` (an observable gauge): the version each
  open live handle of the process serves, by ``hotparams.namespace``.

They use the global tracer and meter providers (``opentelemetry.trace`` /
``opentelemetry.metrics``), looked up when used, so an SDK configured after
hotparams is imported is used too.  Without ``opentelemetry-api`` nothing
here runs: :func:`traced` hands the write back untouched and handles get no
observer (one cached import check).  With the API but no SDK (the global
provider is still the API's proxy) no span is made.  The read path
(``live.current``, ``for_user``) is never touched.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import threading
import time
import weakref
from collections.abc import Callable, Generator, Iterable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from .observer import Observer

if TYPE_CHECKING:
    from .handle import Handle

__all__ = ["ApplySpans", "available", "observer_for", "traced"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Generator[Any, Any, Any]])
SCOPE = "hotparams"


@functools.cache
def available() -> bool:
    """Whether ``opentelemetry-api`` is installed (checked once)."""
    return importlib.util.find_spec("opentelemetry") is not None and (
        importlib.util.find_spec("opentelemetry.trace") is not None
    )


def _tracer() -> Any:
    """The tracer, or None while no SDK is configured (the global provider is
    still the API's proxy: every span would be a no-op, so none is made)."""
    provider = _trace().get_tracer_provider()
    if type(provider) in _NO_SDK:
        return None
    return provider.get_tracer(SCOPE)


@functools.cache
def _trace() -> Any:
    from opentelemetry import trace

    _NO_SDK.update((trace.ProxyTracerProvider, trace.NoOpTracerProvider))
    return trace


#: the API's own providers: no SDK is configured while the global one is one of them
_NO_SDK: set[type] = set()


# ---------------------------------------------------------------- writes


def traced(op: str) -> Callable[[F], F]:
    """Wrap a BusCore write operation (a generator the sync and asyncio
    buses drive) in a ``hotparams.write`` span, when OpenTelemetry is there."""

    def decorate(method: F) -> F:
        signature = inspect.signature(method)

        @functools.wraps(method)
        def wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            inner = method(*args, **kwargs)
            if not available():
                return inner
            tracer = _tracer()
            if tracer is None:
                return inner
            bound = signature.bind(*args, **kwargs).arguments
            return _write_span(tracer, op, bound, inner)

        return cast(F, wrapper)

    return decorate


def _fields(bound: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for key in ("changes", "overrides"):
        names += list(bound.get(key) or ())
    for key in ("unset", "fields"):
        unset = bound.get(key) or ()
        names += [unset] if isinstance(unset, str) else list(unset)
    return sorted(set(names))


def _write_span(
    tracer: Any, op: str, bound: dict[str, Any], inner: Generator[Any, Any, T]
) -> Generator[Any, Any, T]:
    from .protocol import default_author

    for options in ("write", "audit"):  # the audit options come as **write / **audit
        bound = {**bound, **(bound.get(options) or {})}

    attributes: dict[str, Any] = {
        "hotparams.namespace": str(bound.get("namespace", "")),
        "hotparams.op": op,
        "hotparams.fields": _fields(bound),
        "hotparams.author": bound.get("author") or default_author(),
    }
    if "version" in bound and op == "rollback":
        attributes["hotparams.target"] = int(bound["version"])
    if "name" in bound and op == "variant":
        attributes["hotparams.variant"] = str(bound["name"])
    span = tracer.start_span("hotparams.write", attributes=attributes)
    try:
        result = yield from inner
    except BaseException as exc:
        if isinstance(exc, Exception):
            from opentelemetry.trace import Status, StatusCode

            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        span.end()
        raise
    if isinstance(result, int):
        span.set_attribute("hotparams.version", result)
    span.end()
    return result


# ---------------------------------------------------------------- live handles


class ApplySpans(Observer):
    """A live handle's observer: a ``hotparams.apply`` span per applied version."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def applied(self, version: int, lag_s: float) -> None:
        tracer = _tracer()
        if tracer is None:
            return
        now = time.time_ns()
        span = tracer.start_span(
            "hotparams.apply",
            start_time=now - int(lag_s * 1e9),
            attributes={
                "hotparams.namespace": self.namespace,
                "hotparams.version": version,
                "hotparams.lag_ms": lag_s * 1000,
            },
        )
        span.end(end_time=now)


_handles: weakref.WeakSet[Handle[Any]] = weakref.WeakSet()
_gauge_lock = threading.Lock()
_gauge: Any = None


def _versions(_options: Any) -> Iterable[Any]:
    from opentelemetry.metrics import Observation

    for handle in list(_handles):
        if not handle.closed:
            yield Observation(handle.current.version, {"hotparams.namespace": handle.namespace})


def observer_for(handle: Handle[Any]) -> Observer | None:
    """The observer a new live handle gets (None without OpenTelemetry); the
    handle is also counted by the ``hotparams.applied_version`` gauge."""
    global _gauge
    if not available():
        return None
    _handles.add(handle)
    with _gauge_lock:
        if _gauge is None:
            from opentelemetry import metrics

            _gauge = metrics.get_meter(SCOPE).create_observable_gauge(
                "hotparams.applied_version",
                callbacks=[_versions],
                description="Version of the namespace a live handle of this process serves",
            )
    return ApplySpans(handle.namespace)
