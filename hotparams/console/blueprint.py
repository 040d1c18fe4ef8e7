"""The console's settings, its blueprint (sessions, roles, CSRF, errors)
and a stand-alone app for ``hotparams console``."""

from __future__ import annotations

import fnmatch
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Flask, Response, g, redirect, render_template, request, url_for
from pydantic import BaseModel
from werkzeug.wrappers import Response as BaseResponse

from ..bus import Bus
from ..config import ConfigError
from ..errors import HotParamsError
from ..flask.guard import FailedLogins
from ..flask.operations import BadRequest, NotServed, error_message, status_of
from ..variants import BUCKETS
from .auth import COOKIE, MAX_AGE, Identity, Role, Session, Sessions, User, find_user

__all__ = ["Console", "Forbidden", "console_blueprint", "create_app", "here"]

log = logging.getLogger("hotparams.console")

BLUEPRINT = "hotparams_console"


class Forbidden(Exception):
    """The person's role may not do this (403)."""


@dataclass(frozen=True)
class Console:
    """Where the console is mounted and who may use it.

    ``users``: people who log in with a token; ``authorize``: called in the
    request, returns the person's :class:`Identity` (None: not allowed),
    e.g. from the host app's own login.  One of them is required.
    ``secret_key`` signs the session cookie (else the app's
    ``HOTPARAMS_CONSOLE_SECRET`` or ``SECRET_KEY``); ``namespaces``:
    the names (``fnmatch`` patterns) it shows, all when empty; ``models``:
    the pydantic model of each namespace pattern, for namespaces whose
    rules Redis cannot check alone (a model validator: without the model
    such a write is refused, as the CLI's without ``--schema``); ``wait``:
    how long Publish waits for the fleet to apply a change before it says
    how many workers did.  A form over ``max_body_bytes`` is refused (413),
    and an address with ``auth_failures`` failed logins within
    ``auth_window`` seconds gets 429 (as the admin API,
    :mod:`hotparams.flask.guard`).
    """

    url_prefix: str = "/hotparams/console"
    users: tuple[User, ...] = ()
    authorize: Callable[[], Identity | None] | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    namespaces: tuple[str, ...] = ()
    wait: float = 3.0
    #: (namespace pattern, model): writes to those namespaces go through the
    #: model (its cross-field rules too), as ``hotparams set --schema`` does
    models: tuple[tuple[str, type[BaseModel]], ...] = ()
    #: a form larger than this is refused (413) before it is read
    max_body_bytes: int = 1024 * 1024
    #: failed logins from one address within ``auth_window`` seconds before 429
    auth_failures: int = 10
    auth_window: float = 60.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "users", tuple(self.users))
        object.__setattr__(self, "namespaces", tuple(self.namespaces))
        object.__setattr__(self, "models", tuple((str(p), m) for p, m in self.models))
        names = [u.name for u in self.users]
        if len(set(names)) != len(names):
            raise ConfigError("console: two users have the same name")
        if len({u.token for u in self.users}) != len(self.users):
            raise ConfigError("console: two users have the same token")

    def check(self) -> None:
        if not self.users and self.authorize is None:
            raise ConfigError("console: give users (token login) or an authorize callable")

    def model_for(self, namespace: str) -> type[BaseModel] | None:
        """The model given for ``namespace`` (the first pattern that matches)."""
        for pattern, model in self.models:
            if fnmatch.fnmatchcase(namespace, pattern):
                return model
        return None

    def shows(self, namespace: str) -> bool:
        return not self.namespaces or any(
            fnmatch.fnmatchcase(namespace, p) for p in self.namespaces
        )

    def visible(self, names: Iterable[str]) -> list[str]:
        return sorted(n for n in names if self.shows(n))


@dataclass
class Here:
    """What a console request works with (``flask.g.hotparams_console``)."""

    console: Console
    bus: Bus
    session: Session
    identity: Identity | None
    secret_key: str
    dirty: bool = False

    def flash(self, message: str, category: str = "ok") -> None:
        self.session = self.session.flashed(category, message)
        self.dirty = True

    def need(self, role: Role) -> Identity:
        if self.identity is None or not self.identity.may(role):
            who = self.identity.role if self.identity else "signed out"
            raise Forbidden(f"this needs the {role} role (you are {who})")
        return self.identity

    def source(self) -> str:
        return f"console:{request.remote_addr or '?'}"

    def served(self, namespace: str) -> str:
        """``namespace`` if the console shows it (else 404), with its model
        bound to the Bus when the console was given one for it."""
        if not self.console.shows(namespace):
            raise NotServed(namespace)
        if self.bus.schema_of(namespace) is None:
            model = self.console.model_for(namespace)
            if model is not None:
                self.bus.bind(namespace, model)
        return namespace


def here() -> Here:
    return g.hotparams_console  # type: ignore[no-any-return]


def _secret_key(console: Console, app: Flask) -> str:
    key = console.secret_key or app.config.get("HOTPARAMS_CONSOLE_SECRET") or app.secret_key
    if not key:
        raise ConfigError(
            "console: no secret key to sign its session cookie "
            "(Console(secret_key=...), HOTPARAMS_CONSOLE_SECRET or app.secret_key)"
        )
    return str(key)


class _Gate:
    """The blueprint's hooks: the session, the identity, CSRF, the cookie."""

    def __init__(self, console: Console, bus: Callable[[], Bus]) -> None:
        self.console = console
        self.bus = bus
        self.key = ""
        self.sessions: Sessions | None = None
        self.failures = FailedLogins(console.auth_failures, console.auth_window)

    def setup(self, setup_state: Any) -> None:
        self.key = _secret_key(self.console, setup_state.app)
        self.sessions = Sessions(self.key)

    def begin(self) -> BaseResponse | tuple[str, int] | None:
        assert self.sessions is not None
        session = self.sessions.load(request.cookies.get(COOKIE))
        fresh = session is None
        session = session or Session.new()
        identity = _identity(self.console, session)
        static = request.endpoint == f"{BLUEPRINT}.static"
        g.hotparams_console = Here(
            self.console, self.bus(), session, identity, self.key, fresh and not static
        )
        if static:  # never a new session: it could replace the page's cookie
            return None
        size = request.content_length
        if size is not None and size > self.console.max_body_bytes:
            return _render_error(
                413, f"the form is larger than {self.console.max_body_bytes} bytes"
            )
        if request.method == "POST" and not session.csrf_ok(request.form.get("csrf")):
            log.warning("console: a POST to %s without a valid CSRF token", request.path)
            return _render_error(
                400,
                "This form is out of date or was not sent by the console "
                "(CSRF token missing or wrong). Reload the page and try again.",
            )
        if identity is None and request.endpoint not in (
            f"{BLUEPRINT}.login",
            f"{BLUEPRINT}.logout",
        ):
            if self.console.authorize is not None:
                return _render_error(403, "You may not use the hotparams console.")
            return redirect(url_for(f"{BLUEPRINT}.login", next=request.full_path))
        return None

    def end(self, response: Response) -> Response:
        now = g.get("hotparams_console")
        if now is not None and now.dirty and self.sessions is not None:
            response.set_cookie(
                COOKIE,
                self.sessions.dump(now.session),
                max_age=MAX_AGE,
                path=url_for(f"{BLUEPRINT}.namespaces"),
                httponly=True,
                samesite="Lax",
                secure=request.is_secure,
            )
        for header, value in SECURITY_HEADERS.items():
            response.headers.setdefault(header, value)
        return response

    def context(self) -> dict[str, Any]:
        now: Here | None = g.get("hotparams_console")

        def take_flashes() -> tuple[tuple[str, str], ...]:
            if now is None or not now.session.flashes:
                return ()
            now.session, flashes = now.session.popped()
            now.dirty = True
            return flashes

        return {
            "me": now.identity if now else None,
            "csrf": now.session.csrf if now else "",
            "take_flashes": take_flashes,
            "uses_login": self.console.authorize is None,
        }

    def login(self) -> BaseResponse | str | tuple[str, int] | tuple[str, int, dict[str, str]]:
        now = here()
        target = _safe_next(request.values.get("next"))
        if self.console.authorize is not None:
            return redirect(target or url_for(f"{BLUEPRINT}.namespaces"))
        if request.method == "GET":
            return render_template("hotparams_console/login.html", next=target, error="")
        address = request.remote_addr or "?"
        wait = self.failures.blocked_for(address)
        if wait > 0:
            page, status = _render_error(
                429, f"too many failed sign-ins from {address}: try again in {wait:.0f} s"
            )
            return page, status, {"Retry-After": str(max(1, round(wait)))}
        user = find_user(self.console.users, request.form.get("token", "").strip())
        if user is None:
            self.failures.failed(address)
            log.warning("console: a failed login from %s", address)  # never the token
            page = render_template(
                "hotparams_console/login.html", next=target, error="this token is not valid"
            )
            return page, 401
        log.info("console: %s (%s) signed in from %s", user.name, user.role, request.remote_addr)
        now.session = now.session.signed_in(user.name)
        now.identity = user.identity
        now.flash(f"signed in as {user.name} ({user.role})")
        return redirect(target or url_for(f"{BLUEPRINT}.namespaces"), 303)

    def logout(self) -> BaseResponse:
        now = here()
        now.session = Session.new()
        now.identity = None
        now.dirty = True
        return redirect(url_for(f"{BLUEPRINT}.login"), 303)


#: headers of every console response: no caching of pages that show
#: values, no framing, no script or style from anywhere but the package
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'"
    ),
}


def _on_error(exc: Exception) -> tuple[str, int]:
    if isinstance(exc, Forbidden):
        return _render_error(403, str(exc))
    status, _ = status_of(exc)
    if status == 500:
        log.error("console: %s: %s", type(exc).__name__, error_message(exc))
        return _render_error(500, f"{type(exc).__name__}: {error_message(exc)}")
    return _render_error(status, error_message(exc))


def console_blueprint(console: Console, bus: Callable[[], Bus]) -> Blueprint:
    """The console as a blueprint (register it on one app); ``bus`` returns
    the Bus to use in the current request."""
    from . import changes, pages, variant_page
    from .views import text_of

    console.check()
    bp = Blueprint(
        BLUEPRINT,
        __name__,
        template_folder="templates",
        static_folder="static",
        static_url_path="/static",
    )
    gate = _Gate(console, bus)
    bp.record_once(gate.setup)
    bp.before_request(gate.begin)
    bp.after_request(gate.end)
    bp.context_processor(gate.context)
    for kind in (HotParamsError, BadRequest, NotServed, Forbidden):
        bp.register_error_handler(kind, _on_error)
    bp.add_url_rule("/login", "login", gate.login, methods=["GET", "POST"])
    bp.add_url_rule("/logout", "logout", gate.logout, methods=["POST"])
    bp.add_app_template_filter(text_of, "hp_text")
    bp.add_app_template_filter(_iso, "hp_iso")
    bp.add_app_template_filter(_ago, "hp_ago")
    bp.add_app_template_filter(_share, "hp_share")
    pages.register(bp)
    changes.register(bp)
    variant_page.register(bp)
    return bp


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")


def _ago(ms: int) -> str:
    """A commit time as people read it: "12 s ago", "5 min ago", then the date (UTC)."""
    seconds = max(0.0, time.time() - ms / 1000)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.0f} h ago"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def _share(spec: Any) -> float:
    """A variant's share in percent, from its audit document (bucket ranges)."""
    ranges = (spec.get("buckets") or []) if isinstance(spec, dict) else []
    return float(sum(end - start for start, end in ranges) * 100 / BUCKETS)


def _identity(console: Console, session: Session) -> Identity | None:
    if console.authorize is not None:
        return console.authorize()
    if session.user is None:
        return None
    user = next((u for u in console.users if u.name == session.user), None)
    return user.identity if user else None


def _safe_next(target: str | None) -> str | None:
    """A redirect target inside this site only (never ``//host`` or ``http:``)."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return None
    if "\\" in target or any(c.isspace() or ord(c) < 32 for c in target):
        return None
    return target.rstrip("?") or None


def _render_error(status: int, message: str) -> tuple[str, int]:
    return render_template("hotparams_console/error.html", status=status, message=message), status


def create_app(bus: Bus, console: Console) -> Flask:
    """A Flask app that serves only the console, at ``console.url_prefix``
    (``hotparams console`` mounts it at ``/``)."""
    app = Flask("hotparams.console")
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024  # forms of parameters, never more
    prefix = console.url_prefix.rstrip("/")
    app.register_blueprint(console_blueprint(console, lambda: bus), url_prefix=prefix or None)
    if prefix:

        @app.get("/")
        def root() -> BaseResponse:
            return redirect(url_for(f"{BLUEPRINT}.namespaces"))

    return app
