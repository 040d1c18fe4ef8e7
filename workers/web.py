"""The fleet's web app: a chat UI and JSON API on :mod:`hotparams.flask`.

::

    HOTPARAMS_URL=redis://127.0.0.1:6379/0 gunicorn -c workers/gunicorn.conf.py

``create_app()`` is called once in the gunicorn master (``--preload``); every
worker it forks follows parameter changes on its own.  Each request runs
with one snapshot, pinned at its start, for its user (``X-User-Id`` header,
``?user=`` or the ``uid`` cookie): A/B variants apply per user.

Routes: ``GET /`` (an HTML chat page), ``POST /api/chat`` (``{"message": ...}``),
``GET /api/params`` (the pinned version, secrets masked), ``GET /healthz``,
``GET /metrics`` (Prometheus: every worker's, under gunicorn),
and, when ``HOTPARAMS_ADMIN_TOKEN`` is set, the admin API under ``/hotparams``.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Flask, Response, jsonify, render_template_string, request

from hotparams import MASK, Snapshot
from hotparams.flask import AdminAPI, HotParams, current_snapshot, params_changed, state_of

from .llm import Connection, LLMClient, Message, connection_of
from .params import NAMESPACE, ChatParams

__all__ = ["create_app"]

#: the longest simulated LLM latency a request may ask for (``latency_ms``)
MAX_LATENCY_MS = 5000

bp = Blueprint("chat", __name__)

PAGE = """<!doctype html>
<title>chat</title>
<h1>chat</h1>
<p>Served by process {{ pid }} with parameters version {{ snap.version }}
{% if snap.variant %}(A/B variant <b>{{ snap.variant }}</b>){% endif %}:
model <b>{{ p.model }}</b>, temperature {{ p.temperature }}, max_tokens {{ p.max_tokens }}.</p>
<form method="post">
  <input name="message" size="60" autofocus placeholder="Ask something">
  <button>Send</button>
</form>
{% if reply %}<p><i>you:</i> {{ message }}<br><i>assistant:</i> {{ reply }}</p>{% endif %}
"""


def current_user_id() -> str | None:
    """The user a request is for: decides the A/B variant it gets."""
    return (
        request.headers.get("X-User-Id") or request.args.get("user") or request.cookies.get("uid")
    )


@functools.lru_cache(maxsize=4)
def client_for(connection: Connection) -> LLMClient:
    """One client per connection settings: a changed key or endpoint makes a new one."""
    return LLMClient(connection)


def _params() -> tuple[Snapshot[ChatParams], ChatParams]:
    snap: Snapshot[ChatParams] = current_snapshot
    return snap, snap.params


def _answer(text: str, latency_s: float | None = None) -> dict[str, Any]:
    snap, p = _params()
    messages = [Message("system", p.system_prompt), Message("user", text)]
    reply = client_for(connection_of(p)).complete(
        messages,
        model=p.model,
        temperature=p.temperature,
        top_p=p.top_p,
        max_tokens=p.max_tokens,
        latency_s=latency_s,
    )
    after, _ = _params()  # read again after the (slow) call: the same pinned version
    return {
        "reply": reply.text,
        "pid": os.getpid(),
        "user": current_user_id(),
        "version": snap.version,
        "version_after_reply": after.version,
        "variant": snap.variant,
        "model": p.model,
        "temperature": p.temperature,
        "tokens": reply.completion_tokens,
    }


@bp.route("/", methods=["GET", "POST"])
def page() -> str:
    snap, p = _params()
    message = request.form.get("message", "") if request.method == "POST" else ""
    reply = _answer(message)["reply"] if message else ""
    return render_template_string(
        PAGE, snap=snap, p=p, pid=os.getpid(), message=message, reply=reply
    )


@bp.post("/api/chat")
def chat() -> Response | tuple[Response, int]:
    doc = request.get_json(silent=True)
    if not isinstance(doc, dict) or not isinstance(doc.get("message"), str):
        return jsonify({"error": "bad_request", "message": 'send {"message": "..."}'}), 400
    latency_ms = doc.get("latency_ms")
    latency_s = None
    if isinstance(latency_ms, int | float) and not isinstance(latency_ms, bool):
        latency_s = min(max(float(latency_ms), 0.0), MAX_LATENCY_MS) / 1000
    return jsonify(_answer(doc["message"], latency_s))


@bp.get("/api/params")
def show_params() -> Response:
    snap, _ = _params()
    state = state_of()
    secret = state.live.schema.secrets
    return jsonify(
        {
            "pid": os.getpid(),
            "namespace": snap.namespace,
            "version": snap.version,
            "variant": snap.variant,
            "values": {k: (MASK if k in secret else v) for k, v in sorted(snap.values.items())},
            "connected": state.live.connected,
        }
    )


@bp.get("/healthz")
def health() -> Response:
    """Healthy while serving: a Redis outage leaves the last good version served."""
    live = state_of().live
    return jsonify(
        {
            "ok": True,
            "pid": os.getpid(),
            "version": live.current.version,
            "connected": live.connected,
            "stale": live.stale,
        }
    )


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The app; configuration from the environment, then ``config``."""
    app = Flask(__name__)
    env = os.environ
    app.config.from_mapping(
        HOTPARAMS_URL=env.get("HOTPARAMS_URL", "redis://127.0.0.1:6379/0"),
        HOTPARAMS_NAMESPACE=env.get("HOTPARAMS_NAMESPACE", NAMESPACE),
        HOTPARAMS_ADMIN_TOKEN=env.get("HOTPARAMS_ADMIN_TOKEN") or None,
        HOTPARAMS_VERSION_HEADER="X-Hotparams-Version",
        HOTPARAMS_METRICS_PATH="/metrics",
    )
    app.config.from_mapping(config or {})
    app.logger.setLevel(logging.INFO)
    admin = AdminAPI() if app.config.get("HOTPARAMS_ADMIN_TOKEN") else None
    hp: HotParams[ChatParams] = HotParams(
        model=ChatParams,
        user_id=current_user_id,
        register=True,
        admin=admin,
        watch={"worker_name": env.get("WORKER_NAME", "web")},
    )
    hp.init_app(app)
    if admin is None:
        app.logger.warning("HOTPARAMS_ADMIN_TOKEN is not set: the admin API is off")
    app.register_blueprint(bp)

    def log_change(sender: Flask, old: Snapshot[Any], new: Snapshot[Any], **_: Any) -> None:
        sender.logger.info("parameters: version %d -> %d", old.version, new.version)

    params_changed.connect(log_change, sender=app, weak=False)
    return app
