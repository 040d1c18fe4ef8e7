"""The admin JSON API of :mod:`hotparams.flask`: read, change and roll back
the app's namespace over HTTP, with the CLI's checks and messages.

===========================  ==================================================
``GET    /<ns>``             current values (secrets ``******``), version, epoch,
                             variants, and what this process serves
``GET    /<ns>/history``     changes, newest first (``?limit=20``)
``GET    /<ns>/diff``        fields that differ (``?from=A&to=B``; ``to``:
                             the current version)
``PATCH  /<ns>``             a change: ``{"values": {...}, "expect_version": N,
                             "reason": "...", "author": "..."}``
``POST   /<ns>/rollback``    ``{"version": N, "expect_version": M, "reason": "..."}``
===========================  ==================================================

Every request is authorised first: a bearer token of at least 32
characters (``Authorization: Bearer <token>``; missing or wrong: 401)
and/or a callable returning who makes the request (a name, the audit's
author) or False (403).  A body over 1 MiB is 413, JSON nested too deep
400, and a client address with too many failed authentications 429 (see
:mod:`hotparams.flask.guard`).  Errors are JSON
``{"error": code, "message": text, ...}`` with the CLI's message: 400
``bad_request`` / ``invalid_params`` (with ``fields``), 404 ``not_found``
(a namespace this app does not serve, or a version that is not retained),
403 ``permission_denied`` (the Redis user's ACL), 409 ``version_conflict``
(with ``expected``, ``actual``), 503 ``redis_unavailable``: the rows of
:data:`hotparams.outcomes.OUTCOMES`, the table the CLI's exit codes come
from too.  Secret values never appear in a response.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from ..config import ConfigError
from ..errors import HotParamsError, InvalidParams, VersionConflict
from ..redact import masked
from ..snapshot import changes_to_json
from .guard import MIN_TOKEN_LENGTH, BodyTooLarge, FailedLogins, MalformedBody, parse_json
from .operations import (
    BadRequest,
    NotServed,
    error_message,
    set_values,
    status_of,
    variants_doc,
)
from .operations import (
    rollback as rollback_op,
)

if TYPE_CHECKING:
    from . import HotParamsState

__all__ = ["AdminAPI", "admin_blueprint", "admin_identity", "error_message"]

log = logging.getLogger("hotparams.flask")

#: the author of a change made with the bearer token alone
TOKEN_IDENTITY = "admin-api"
_IDENTITY_KEY = "_hotparams_admin_identity"
_ADMIN_KEY = "_hotparams_admin"


@dataclass(frozen=True, slots=True)
class AdminAPI:
    """Where the admin API is mounted, who may use it, and its limits.

    ``token``: the bearer token (else ``app.config["HOTPARAMS_ADMIN_TOKEN"]``),
    at least 32 characters; ``authorize``: called in the request, returns
    who makes it (a name: the audit's author) or False to refuse it (403);
    True lets it in as ``"admin-api"``.  At least one of them is required;
    with both, both must pass.  The author of a change is this identity,
    never a field of the body.
    """

    url_prefix: str = "/hotparams"
    token: str | None = None
    authorize: Callable[[], bool | str | None] | None = None
    #: the largest request body, in bytes (larger: 413, unread)
    max_body_bytes: int = 1 << 20
    #: the deepest nesting of lists and objects in a JSON body (deeper: 400)
    max_json_depth: int = 32
    #: failed authentications of one client address within ``auth_window``
    #: seconds after which it gets 429 until the window has passed
    auth_failures: int = 10
    auth_window: float = 60.0

    def __repr__(self) -> str:  # the token never shows
        token = "******" if self.token else None
        return (
            f"AdminAPI(url_prefix={self.url_prefix!r}, token={token!r}, "
            f"authorize={self.authorize!r})"
        )

    def with_token(self, token: str) -> AdminAPI:
        return replace(self, token=token)

    def check(self) -> None:
        if not self.token and self.authorize is None:
            raise ConfigError(
                "hotparams.flask: the admin API needs a token (HOTPARAMS_ADMIN_TOKEN) "
                "or an authorize callable"
            )
        if self.token is not None and len(self.token) < MIN_TOKEN_LENGTH:
            raise ConfigError(
                f"hotparams.flask: the admin API token is {len(self.token)} characters; "
                f"use at least {MIN_TOKEN_LENGTH} random ones "
                '(python -c "import secrets; print(secrets.token_urlsafe(32))")'
            )
        if self.max_body_bytes < 1 or self.max_json_depth < 2 or self.auth_failures < 1:
            raise ConfigError("hotparams.flask: AdminAPI limits must be positive")


class Denied(Exception):
    def __init__(self, status: int, code: str, message: str, retry_after: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after = retry_after


# ---------------------------------------------------------------- errors


def _error(status: int, code: str, message: str, **extra: Any) -> Response:
    response = jsonify({"error": code, "message": message, **extra})
    response.status_code = status
    return response


def error_response(exc: BaseException) -> Response:
    """An exception as the API's JSON error, with its status code
    (:data:`hotparams.outcomes.OUTCOMES`)."""
    message = error_message(exc)
    if isinstance(exc, Denied):
        response = _error(exc.status, exc.code, message)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="hotparams"'
        if exc.retry_after:
            response.headers["Retry-After"] = str(exc.retry_after)
        return response
    if isinstance(exc, BodyTooLarge):
        return _error(413, "too_large", message)
    if isinstance(exc, MalformedBody):
        return _error(400, "bad_request", message)
    status, code = status_of(exc)
    if status == 500:
        current_app.logger.error("hotparams admin API: %s: %s", type(exc).__name__, message)
        return _error(500, code, f"{type(exc).__name__}: {message}")
    extra: dict[str, Any] = {}
    if isinstance(exc, InvalidParams):
        extra["fields"] = dict(exc.errors)
    elif isinstance(exc, VersionConflict):
        extra = {"expected": exc.expected, "actual": exc.actual}
    response = _error(status, code, message, **extra)
    if status == 503:
        response.headers["Retry-After"] = "1"
    return response


# ---------------------------------------------------------------- reading input


def _body() -> dict[str, Any]:
    """The JSON object of the body, read within the admin API's limits."""
    admin: AdminAPI = g.get(_ADMIN_KEY) or AdminAPI()
    limit = admin.max_body_bytes
    if not request.is_json:
        raise BadRequest("the body must be a JSON object (Content-Type: application/json)")
    raw = request.stream.read(limit + 1)
    if len(raw) > limit:
        raise BodyTooLarge(limit)
    data = parse_json(raw, admin.max_json_depth)
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object (Content-Type: application/json)")
    return data


def _int(value: Any, name: str, *, minimum: int = 0) -> int:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BadRequest(f"{name} must be an integer >= {minimum}")
    return value


def _optional_int(doc: Mapping[str, Any], name: str) -> int | None:
    value = doc.get(name)
    return None if value is None else _int(value, name)


def _text(doc: Mapping[str, Any], name: str, default: str = "") -> str:
    value = doc.get(name, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string")
    return value


def admin_identity() -> str:
    """Who makes the current admin request: what ``authorize`` returned, or
    ``"admin-api"`` for the bearer token alone."""
    return str(g.get(_IDENTITY_KEY) or TOKEN_IDENTITY)


def _who(doc: Mapping[str, Any]) -> dict[str, str]:
    if "author" in doc:
        raise BadRequest(
            '"author" is not taken from the body: it is the authenticated identity '
            "(what AdminAPI.authorize returns)"
        )
    return {
        "author": admin_identity(),
        "reason": _text(doc, "reason"),
        "source": f"admin-api:{request.remote_addr or '?'}",
    }


# ---------------------------------------------------------------- the views


def _served(namespace: str) -> HotParamsState[Any]:
    from . import state_of

    state = state_of()
    if namespace != state.namespace:
        raise NotServed(namespace)
    return state


def show(namespace: str) -> Response:
    state = _served(namespace)
    snap = state.bus.get(namespace)
    secret = state.live.schema.secrets
    live = state.live
    values = masked(snap.values, secret)
    return jsonify(
        {
            "namespace": namespace,
            "version": snap.version,
            "epoch": snap.epoch,
            "committed_ms": snap.committed_ms,
            "committed_at": snap.committed_at.isoformat(timespec="milliseconds"),
            "schema_rev": snap.schema_rev,
            "values": values,
            "variants": variants_doc(snap.variants, secret),
            "served": {
                "version": live.current.version,
                "connected": live.connected,
                "stale": live.stale,
            },
        }
    )


def history(namespace: str) -> Response:
    state = _served(namespace)
    limit = _int(request.args.get("limit", "20"), "limit", minimum=1)
    head = state.bus.head(namespace)  # an unknown namespace is a 404, not an empty list
    changes = state.bus.history(namespace, limit=min(limit, 1000))
    return jsonify({"namespace": namespace, "changes": [c.to_json(head.epoch) for c in changes]})


def diff(namespace: str) -> Response:
    state = _served(namespace)
    if "from" not in request.args:
        raise BadRequest("diff needs ?from=VERSION (and optionally &to=VERSION)")
    a = _int(request.args["from"], "from", minimum=1)
    to = request.args.get("to")
    b = _int(to, "to", minimum=1) if to else state.bus.head(namespace).version
    changes = changes_to_json(state.bus.diff(namespace, a, b))
    return jsonify({"namespace": namespace, "from": a, "to": b, "changes": changes})


def _checked_keys(doc: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = set(doc) - allowed
    if unknown:
        raise BadRequest(f"unknown keys in the body: {', '.join(sorted(unknown))}")


def change(namespace: str) -> Response:
    state = _served(namespace)
    doc = _body()
    _checked_keys(doc, {"values", "expect_version", "reason", "author"})
    who = _who(doc)
    values = doc.get("values")
    if not isinstance(values, dict) or not values:
        raise BadRequest('a change needs "values": an object of field: new value')
    expect = _optional_int(doc, "expect_version")
    result = set_values(state.bus, namespace, values, expect_version=expect, **who)
    return jsonify(result.doc())


def rollback(namespace: str) -> Response:
    state = _served(namespace)
    doc = _body()
    _checked_keys(doc, {"version", "expect_version", "reason", "author"})
    who = _who(doc)
    if "version" not in doc:
        raise BadRequest("rollback needs the version to go back to")
    target = _int(doc["version"], "version", minimum=1)
    expect = _optional_int(doc, "expect_version")
    result = rollback_op(state.bus, namespace, target, expect_version=expect, **who)
    return jsonify(result.doc())


def _authenticate(admin: AdminAPI) -> None:
    """401 without the right bearer token; 403 when ``authorize`` refuses;
    else the identity is kept for :func:`admin_identity`."""
    if admin.token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise Denied(401, "unauthorized", "this API needs Authorization: Bearer <token>")
        if not hmac.compare_digest(given.strip().encode(), admin.token.encode()):
            raise Denied(401, "unauthorized", "the bearer token is not valid")
    identity: bool | str | None = True
    if admin.authorize is not None:
        identity = admin.authorize()
        if not identity:
            raise Denied(403, "forbidden", "this request may not use the hotparams admin API")
    g.setdefault(_IDENTITY_KEY, identity if isinstance(identity, str) else TOKEN_IDENTITY)


def admin_blueprint(admin: AdminAPI) -> Blueprint:
    """The admin API as a blueprint (``init_app`` registers it at ``admin.url_prefix``)."""
    bp = Blueprint("hotparams_admin", __name__)
    failures = FailedLogins(admin.auth_failures, admin.auth_window)

    @bp.before_request
    def guard() -> Response | None:
        address = request.remote_addr or "?"
        setattr(g, _ADMIN_KEY, admin)
        try:
            if (request.content_length or 0) > admin.max_body_bytes:
                raise BodyTooLarge(admin.max_body_bytes)
            wait = failures.blocked_for(address)
            if wait:
                raise Denied(
                    429,
                    "too_many_requests",
                    "too many failed authentications from this address; try again later",
                    retry_after=max(1, round(wait)),
                )
            try:
                _authenticate(admin)
            except Denied as exc:
                log.warning(
                    "hotparams admin API: failed authentication from %s: %s (%s %s)",
                    address,
                    exc,
                    request.method,
                    request.path,
                    extra={"event": "auth_failed", "address": address, "status": exc.status},
                )
                if exc.status == 401 and failures.failed(address):
                    log.warning(
                        "hotparams admin API: %s failed %d times in %g s: refused for now",
                        address,
                        admin.auth_failures,
                        admin.auth_window,
                        extra={"event": "auth_blocked", "address": address},
                    )
                raise
        except (Denied, BodyTooLarge) as exc:
            return error_response(exc)
        return None

    for kind in (HotParamsError, BadRequest, NotServed, BodyTooLarge, MalformedBody):
        bp.register_error_handler(kind, error_response)
    bp.add_url_rule("/<namespace>", view_func=show, methods=["GET"])
    bp.add_url_rule("/<namespace>", view_func=change, methods=["PATCH"])
    bp.add_url_rule("/<namespace>/history", view_func=history, methods=["GET"])
    bp.add_url_rule("/<namespace>/diff", view_func=diff, methods=["GET"])
    bp.add_url_rule("/<namespace>/rollback", view_func=rollback, methods=["POST"])
    return bp
