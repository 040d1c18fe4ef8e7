"""Flask integration: live parameters pinned per request, a change signal,
and an optional admin JSON API.

::

    from hotparams.flask import HotParams, params

    hp = HotParams(namespace="chat", model=ChatParams,
                   user_id=lambda: request.headers.get("X-User-Id"))

    def create_app() -> Flask:
        app = Flask(__name__)
        app.config["HOTPARAMS_URL"] = "redis://redis:6379/0"
        hp.init_app(app)
        return app

    @bp.post("/chat")
    def chat():
        reply = llm.complete(model=params.model, temperature=params.temperature)
        ...

``init_app`` makes one :class:`hotparams.Live` handle per app (kept in
``app.extensions["hotparams"]``, never on the extension object).  Each request
pins ONE snapshot when it starts: the base, or, when the app gives a
``user_id`` resolver, the user's A/B variant (``live.for_user``).  Every read of
:data:`params` and :data:`current_snapshot` in that request sees that one
version, however many changes land meanwhile.  Reading takes no lock and does
no I/O.  The handle is fork-safe: make the app before gunicorn forks
(``--preload``) and every worker follows changes on its own.

:data:`params_changed` is a blinker signal, sent with the app as sender
(``old``, ``new`` snapshots) after this process applied a change, from the
handle's callback thread, inside an app context.

Configuration keys (``app.config``): ``HOTPARAMS_URL`` (else the
environment's ``HOTPARAMS_URL``), ``HOTPARAMS_NAMESPACE``, ``HOTPARAMS_SETTINGS``
(a dict of :class:`hotparams.Settings` fields), ``HOTPARAMS_ADMIN_TOKEN`` (the
admin API's bearer token), ``HOTPARAMS_VERSION_HEADER`` (a response header
naming the served version, e.g. ``X-Hotparams-Version``; unset: none),
``HOTPARAMS_METRICS_PATH`` (a route serving the live handles' Prometheus
metrics, e.g. ``/metrics``; under gunicorn with :mod:`hotparams.gunicorn`,
one scrape of any worker aggregates all of them; unset: none),
``HOTPARAMS_CONSOLE_SECRET`` (signs the console's session cookie; else
``SECRET_KEY``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import blinker
from flask import Flask, Response, current_app, g, has_app_context, has_request_context, request
from pydantic import BaseModel
from werkzeug.local import LocalProxy

from ..bus import Bus, connect
from ..config import ConfigError
from ..live import Live
from ..snapshot import Snapshot
from .admin import AdminAPI, admin_blueprint

if TYPE_CHECKING:
    from ..console import Console

__all__ = [
    "EXTENSION_KEY",
    "AdminAPI",
    "HotParams",
    "HotParamsState",
    "current_snapshot",
    "params",
    "params_changed",
    "state_of",
]

M = TypeVar("M", bound=BaseModel)

#: where ``init_app`` keeps its state: ``app.extensions[EXTENSION_KEY]``
EXTENSION_KEY = "hotparams"
_ENVIRON_KEY = "hotparams.snapshot"
_G_KEY = "_hotparams_snapshot"

_signals = blinker.Namespace()
#: sent after this process applied a change: ``sender`` is the app,
#: keyword arguments ``old`` and ``new`` the base snapshots
params_changed = _signals.signal("hotparams-params-changed")

UserId = Callable[[], "str | None"]


@dataclass(eq=False)
class HotParamsState(Generic[M]):
    """What ``init_app`` made for one app (``app.extensions["hotparams"]``)."""

    bus: Bus
    live: Live[M]
    namespace: str
    model: type[M]
    user_id: UserId | None
    version_header: str | None
    owns_bus: bool

    def pin(self) -> Snapshot[M]:
        """The snapshot a request starting now runs with."""
        if self.user_id is not None and has_request_context():
            user = self.user_id()
            if user is not None and user != "":
                return self.live.for_user(str(user))
        return self.live.current

    def close(self) -> None:
        self.live.close()
        if self.owns_bus:
            self.bus.close()


def state_of(app: Flask | None = None) -> HotParamsState[Any]:
    """The extension's state of ``app`` (default: the current app)."""
    target = app if app is not None else current_app
    try:
        return cast(HotParamsState[Any], target.extensions[EXTENSION_KEY])
    except KeyError:
        raise RuntimeError(
            "hotparams.flask: HotParams.init_app(app) was not called for this app"
        ) from None


def pinned() -> Snapshot[Any]:
    """The snapshot of the current request (pinned at its start), or of the
    current app context outside a request."""
    if has_request_context():
        environ = request.environ
        snap = environ.get(_ENVIRON_KEY)
        if snap is None:
            snap = environ[_ENVIRON_KEY] = state_of().pin()
        return cast(Snapshot[Any], snap)
    if has_app_context():
        snap = g.get(_G_KEY)
        if snap is None:
            snap = state_of().live.current
            setattr(g, _G_KEY, snap)
        return cast(Snapshot[Any], snap)
    raise RuntimeError(
        "hotparams.flask: parameters are read in a request or an application context"
    )


#: the current request's :class:`~hotparams.Snapshot` (``.version``, ``.variant``, ...)
current_snapshot: Snapshot[Any] = cast(Snapshot[Any], LocalProxy(pinned))
#: the current request's parameters (the model instance of the pinned snapshot)
params: Any = LocalProxy(lambda: pinned().params)


class HotParams(Generic[M]):
    """The Flask extension; ``init_app`` may be called for several apps.

    ``namespace`` and ``model`` say what to watch (``HOTPARAMS_NAMESPACE`` may
    name the namespace instead); ``user_id`` returns the current request's
    user id (or None: the base values) so that A/B variants apply;
    ``register`` stores the model's schema at start (idempotent), so the
    namespace exists; ``admin`` mounts the admin JSON API; ``console``
    mounts the operators' console (:class:`hotparams.console.Console`, at
    its ``url_prefix``, on the app's Bus); ``watch``
    holds extra keyword arguments of :meth:`Bus.watch <hotparams.Bus.watch>`
    (``cache``, ``defaults``, ``reconcile_interval``).
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        namespace: str | None = None,
        model: type[M] | None = None,
        user_id: UserId | None = None,
        register: bool = False,
        admin: AdminAPI | None = None,
        console: Console | None = None,
        watch: dict[str, Any] | None = None,
    ) -> None:
        self.namespace = namespace
        self.model = model
        self.user_id = user_id
        self.register = register
        self.admin = admin
        self.console = console
        self.watch = dict(watch or {})
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, *, bus: Bus | None = None) -> HotParamsState[M]:
        """Watch the namespace for ``app``: connect (unless given a ``bus``),
        make the live handle, register the request hooks and the admin API."""
        if EXTENSION_KEY in app.extensions:
            raise ConfigError("hotparams.flask: init_app was already called for this app")
        namespace = self.namespace or app.config.get("HOTPARAMS_NAMESPACE")
        if not namespace:
            raise ConfigError("hotparams.flask: no namespace (HotParams(namespace=...))")
        if self.model is None:
            raise ConfigError("hotparams.flask: no model (HotParams(model=...))")
        admin = self._admin_for(app)
        owns = bus is None
        bus = bus or _connect_for(app)
        try:
            if self.register:
                bus.register(namespace, self.model, source="flask")
            else:
                bus.bind(namespace, self.model)  # writes run the model's cross-field rules
            live = bus.watch(namespace, self.model, **self.watch)
        except BaseException:
            if owns:
                bus.close()
            raise
        state = HotParamsState(
            bus=bus,
            live=live,
            namespace=namespace,
            model=self.model,
            user_id=self.user_id,
            version_header=app.config.get("HOTPARAMS_VERSION_HEADER"),
            owns_bus=owns,
        )
        app.extensions[EXTENSION_KEY] = state
        app.before_request(_pin_request)
        if state.version_header:
            app.after_request(_add_version_header)
        metrics_path = app.config.get("HOTPARAMS_METRICS_PATH")
        if metrics_path:
            app.add_url_rule(
                str(metrics_path), "hotparams_metrics", functools.partial(_metrics, live)
            )

        def changed(old: Snapshot[M], new: Snapshot[M]) -> None:
            with app.app_context():
                params_changed.send(app, old=old, new=new)

        live.on_change(changed)
        if admin is not None:
            app.register_blueprint(admin_blueprint(admin), url_prefix=admin.url_prefix)
        if self.console is not None:
            from ..console import console_blueprint

            mounted = console_blueprint(self.console, lambda: state_of().bus)
            app.register_blueprint(mounted, url_prefix=self.console.url_prefix.rstrip("/"))
        return state

    def _admin_for(self, app: Flask) -> AdminAPI | None:
        admin = self.admin
        if admin is None:
            return None
        token = app.config.get("HOTPARAMS_ADMIN_TOKEN")
        if admin.token is None and token:
            admin = admin.with_token(str(token))
        admin.check()
        return admin

    # ------------------------------------------------------------ typed access

    @property
    def current(self) -> Snapshot[M]:
        """The current request's snapshot, typed by the model."""
        return cast(Snapshot[M], pinned())

    @property
    def params(self) -> M:
        """The current request's parameters, typed by the model."""
        return self.current.params

    def live(self, app: Flask | None = None) -> Live[M]:
        """The app's live handle (``.current`` is the newest version, unpinned)."""
        return cast(Live[M], state_of(app).live)

    def close(self, app: Flask) -> None:
        """Close the app's live handle (and its Bus, if ``init_app`` made it)."""
        state = app.extensions.pop(EXTENSION_KEY, None)
        if state is not None:
            state.close()


def _connect_for(app: Flask) -> Bus:
    url = app.config.get("HOTPARAMS_URL") or os.environ.get(
        "HOTPARAMS_URL", "redis://127.0.0.1:6379/0"
    )
    return connect(str(url), **dict(app.config.get("HOTPARAMS_SETTINGS") or {}))


def _pin_request() -> None:
    pinned()


def _metrics(live: Live[Any]) -> Response:
    """The Prometheus exposition of the live handles (of every worker, in multiprocess mode)."""
    metrics = live.metrics
    return Response(metrics.exposition(), content_type=metrics.CONTENT_TYPE)


def _add_version_header(response: Response) -> Response:
    state = state_of()
    header = state.version_header
    if header and has_request_context() and _ENVIRON_KEY in request.environ:
        snap = request.environ[_ENVIRON_KEY]
        response.headers[header] = str(snap.version)
    return response
