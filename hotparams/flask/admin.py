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

Every request is authorised first: a bearer token (``Authorization: Bearer
<token>``; missing or wrong: 401) and/or a callable returning whether the
current request may use the API (False: 403).  Errors are JSON
``{"error": code, "message": text, ...}`` with the CLI's message: 400
``bad_request`` / ``invalid_params`` (with ``fields``), 404 ``not_found``
(a namespace this app does not serve, or a version that is not retained),
409 ``version_conflict`` (with ``expected``, ``actual``), 503
``redis_unavailable``.  Secret values never appear in a response.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, current_app, jsonify, request

from ..codec import MASK
from ..config import ConfigError
from ..errors import (
    ConnectionFailed,
    HotParamsError,
    InvalidNamespace,
    InvalidParams,
    NamespaceNotFound,
    SchemaError,
    VersionConflict,
    VersionNotFound,
)
from ..snapshot import Change, FieldChange

if TYPE_CHECKING:
    from . import HotParamsState

__all__ = ["AdminAPI", "admin_blueprint", "error_message"]


@dataclass(frozen=True, slots=True)
class AdminAPI:
    """Where the admin API is mounted and who may use it.

    ``token``: the bearer token (else ``app.config["HOTPARAMS_ADMIN_TOKEN"]``);
    ``authorize``: called in the request, returns whether it may go on.
    At least one of them is required; with both, both must pass.
    """

    url_prefix: str = "/hotparams"
    token: str | None = None
    authorize: Callable[[], bool] | None = None

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


class BadRequest(Exception):
    """A malformed body or query (400)."""


class NotServed(LookupError):
    """A namespace this app does not serve (404)."""

    def __init__(self, namespace: str) -> None:
        super().__init__(f"namespace {namespace!r} is not served by this app")


class Denied(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


# ---------------------------------------------------------------- errors


def error_message(exc: BaseException) -> str:
    """The one-line message the CLI prints for ``exc`` (without its prefix)."""
    return " ".join(str(exc).split())


def _error(status: int, code: str, message: str, **extra: Any) -> Response:
    response = jsonify({"error": code, "message": message, **extra})
    response.status_code = status
    return response


def error_response(exc: BaseException) -> Response:
    """An exception as the API's JSON error, with its status code."""
    message = error_message(exc)
    if isinstance(exc, Denied):
        response = _error(exc.status, exc.code, message)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="hotparams"'
        return response
    if isinstance(exc, BadRequest | InvalidNamespace):
        return _error(400, "bad_request", message)
    if isinstance(exc, InvalidParams):
        return _error(400, "invalid_params", message, fields=dict(exc.errors))
    if isinstance(exc, SchemaError):
        return _error(400, "invalid_params", message)
    if isinstance(exc, VersionConflict):
        return _error(409, "version_conflict", message, expected=exc.expected, actual=exc.actual)
    if isinstance(exc, NamespaceNotFound | VersionNotFound | NotServed):
        return _error(404, "not_found", message)
    if isinstance(exc, ConnectionFailed):
        response = _error(503, "redis_unavailable", message)
        response.headers["Retry-After"] = "1"
        return response
    current_app.logger.error("hotparams admin API: %s: %s", type(exc).__name__, message)
    return _error(500, "internal", f"{type(exc).__name__}: {message}")


# ---------------------------------------------------------------- reading input


def _body() -> dict[str, Any]:
    data = request.get_json(silent=True)
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


def _who(doc: Mapping[str, Any]) -> dict[str, str]:
    return {
        "author": _text(doc, "author") or "admin-api",
        "reason": _text(doc, "reason"),
        "source": f"admin-api:{request.remote_addr or '?'}",
    }


# ---------------------------------------------------------------- documents


def _changes_doc(changes: Mapping[str, FieldChange]) -> dict[str, Any]:
    return {name: {"old": c.old, "new": c.new} for name, c in changes.items()}


def _change_doc(change: Change) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "version": change.version,
        "previous": change.previous,
        "op": change.op,
        "author": change.author,
        "reason": change.reason,
        "source": change.source,
        "committed_ms": change.committed_ms,
        "committed_at": change.at.isoformat(timespec="milliseconds"),
        "changes": _changes_doc(change.changes),
    }
    if change.target is not None:
        doc["target"] = change.target
    if change.variants is not None:
        doc["variants"] = dict(change.variants)
    return doc


def _variants_doc(state: HotParamsState[Any], variants: Any) -> dict[str, Any]:
    secret = state.live.schema.secrets
    return {
        name: {
            "percent": variant.percent,
            "users": len(variant.users),
            "overrides": {
                k: (MASK if k in secret else v) for k, v in sorted(variant.overrides.items())
            },
        }
        for name, variant in sorted(variants.variants.items())
    }


# ---------------------------------------------------------------- the views


def _served(namespace: str) -> HotParamsState[Any]:
    from . import state_of

    state = state_of()
    if namespace != state.namespace:
        raise NotServed(namespace)
    return state


def _change_result(state: HotParamsState[Any], before: int, after: int) -> Response:
    """What a write answers: the new version and what changed (the CLI's ``--json``)."""
    change = None
    if after != before:
        recent = state.bus.history(state.namespace, limit=10)
        change = next((c for c in recent if c.version == after), None)
    doc: dict[str, Any] = {
        "namespace": state.namespace,
        "version": after,
        "previous": before,
        "changed": after != before,
        "changes": _changes_doc(change.changes) if change else {},
    }
    if change is not None and change.target is not None:
        doc["target"] = change.target
    return jsonify(doc)


def show(namespace: str) -> Response:
    state = _served(namespace)
    snap = state.bus.get(namespace)
    secret = state.live.schema.secrets
    live = state.live
    values = {k: (MASK if k in secret else v) for k, v in sorted(snap.values.items())}
    return jsonify(
        {
            "namespace": namespace,
            "version": snap.version,
            "epoch": snap.epoch,
            "committed_ms": snap.committed_ms,
            "committed_at": snap.committed_at.isoformat(timespec="milliseconds"),
            "schema_rev": snap.schema_rev,
            "values": values,
            "variants": _variants_doc(state, snap.variants),
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
    state.bus.head(namespace)  # an unknown namespace is a 404, not an empty list
    changes = state.bus.history(namespace, limit=min(limit, 1000))
    return jsonify({"namespace": namespace, "changes": [_change_doc(c) for c in changes]})


def diff(namespace: str) -> Response:
    state = _served(namespace)
    if "from" not in request.args:
        raise BadRequest("diff needs ?from=VERSION (and optionally &to=VERSION)")
    a = _int(request.args["from"], "from", minimum=1)
    to = request.args.get("to")
    b = _int(to, "to", minimum=1) if to else state.bus.head(namespace).version
    changes = _changes_doc(state.bus.diff(namespace, a, b))
    return jsonify({"namespace": namespace, "from": a, "to": b, "changes": changes})


def _checked_keys(doc: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = set(doc) - allowed
    if unknown:
        raise BadRequest(f"unknown keys in the body: {', '.join(sorted(unknown))}")


def change(namespace: str) -> Response:
    state = _served(namespace)
    doc = _body()
    _checked_keys(doc, {"values", "expect_version", "reason", "author"})
    values = doc.get("values")
    if not isinstance(values, dict) or not values:
        raise BadRequest('a change needs "values": an object of field: new value')
    expect = _optional_int(doc, "expect_version")
    before = state.bus.head(namespace).version
    after = state.bus.set(namespace, values, expect_version=expect, **_who(doc))
    return _change_result(state, before, after)


def rollback(namespace: str) -> Response:
    state = _served(namespace)
    doc = _body()
    _checked_keys(doc, {"version", "expect_version", "reason", "author"})
    if "version" not in doc:
        raise BadRequest("rollback needs the version to go back to")
    target = _int(doc["version"], "version", minimum=1)
    expect = _optional_int(doc, "expect_version")
    before = state.bus.head(namespace).version
    after = state.bus.rollback(namespace, target, expect_version=expect, **_who(doc))
    return _change_result(state, before, after)


def _authorise(admin: AdminAPI) -> None:
    if admin.token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise Denied(401, "unauthorized", "this API needs Authorization: Bearer <token>")
        if not hmac.compare_digest(given.strip().encode(), admin.token.encode()):
            raise Denied(401, "unauthorized", "the bearer token is not valid")
    if admin.authorize is not None and not admin.authorize():
        raise Denied(403, "forbidden", "this request may not use the hotparams admin API")


def admin_blueprint(admin: AdminAPI) -> Blueprint:
    """The admin API as a blueprint (``init_app`` registers it at ``admin.url_prefix``)."""
    bp = Blueprint("hotparams_admin", __name__)

    @bp.before_request
    def authorise() -> Response | None:
        try:
            _authorise(admin)
        except Denied as exc:
            return error_response(exc)
        return None

    for kind in (HotParamsError, BadRequest, NotServed):
        bp.register_error_handler(kind, error_response)
    bp.add_url_rule("/<namespace>", view_func=show, methods=["GET"])
    bp.add_url_rule("/<namespace>", view_func=change, methods=["PATCH"])
    bp.add_url_rule("/<namespace>/history", view_func=history, methods=["GET"])
    bp.add_url_rule("/<namespace>/diff", view_func=diff, methods=["GET"])
    bp.add_url_rule("/<namespace>/rollback", view_func=rollback, methods=["POST"])
    return bp
