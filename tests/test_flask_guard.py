"""The admin API's guard: a bounded body (413 before Redis), bounded JSON
(400, never 500), failed authentication logged and limited (429), the
author taken from the authenticated identity, short tokens refused."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask, request

import hotparams
from hotparams.flask import AdminAPI, HotParams, state_of
from hotparams.flask.guard import FailedLogins
from workers.params import ChatParams

from .helpers import dump_namespace, wait_until

TOKEN = "guard-token-" + "k" * 30
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def make(redis_url: str) -> Iterator[Callable[..., tuple[Flask, list[Any]]]]:
    """An app with the admin API; returns it and the list of calls its Bus sent."""
    made: list[tuple[Flask, HotParams[ChatParams]]] = []

    def build(**admin: Any) -> tuple[Flask, list[Any]]:
        app = Flask("guard")
        app.config.update(HOTPARAMS_URL=redis_url, HOTPARAMS_ADMIN_TOKEN=TOKEN)
        hp: HotParams[ChatParams] = HotParams(
            namespace="chat", model=ChatParams, register=True, admin=AdminAPI(**admin)
        )
        hp.init_app(app)
        made.append((app, hp))
        sent: list[Any] = []
        bus = state_of(app).bus
        execute = bus.perform

        def recording(call: Any) -> Any:
            sent.append(call)
            return execute(call)

        bus.perform = recording  # type: ignore[method-assign]
        return app, sent

    yield build
    for app, hp in made:
        hp.close(app)


def test_a_body_over_the_limit_is_413_and_never_reaches_redis(
    make: Callable[..., tuple[Flask, list[Any]]],
) -> None:
    app, sent = make()
    client = app.test_client()
    before = dump_namespace(state_of(app).bus.client, "chat")
    big = b'{"values": {"system_prompt": "' + b"x" * (50 << 20) + b'"}}'
    r = client.patch(
        "/hotparams/chat", headers={**AUTH, "Content-Type": "application/json"}, data=big
    )
    assert r.status_code == 413 and r.get_json()["error"] == "too_large"
    assert sent == []  # nothing was sent to Redis
    just_over = b'{"reason": "' + b"y" * (1 << 20) + b'"}'
    r = client.post(
        "/hotparams/chat/rollback",
        headers={**AUTH, "Content-Type": "application/json"},
        data=just_over,
    )
    assert r.status_code == 413 and sent == []
    assert dump_namespace(state_of(app).bus.client, "chat") == before
    small, _ = make(url_prefix="/small", max_body_bytes=100)
    r = small.test_client().patch(
        "/small/chat", headers=AUTH, json={"values": {"system_prompt": "z" * 200}}
    )
    assert r.status_code == 413


@pytest.mark.parametrize("depth", [33, 2_000, 100_000])
def test_json_nested_too_deep_is_400_never_500(
    make: Callable[..., tuple[Flask, list[Any]]], depth: int
) -> None:
    app, sent = make()
    body = '{"values": {"stop": ' + "[" * depth + "]" * depth + "}}"
    r = app.test_client().patch(
        "/hotparams/chat", headers={**AUTH, "Content-Type": "application/json"}, data=body
    )
    assert r.status_code == 400, r.get_data(as_text=True)
    assert r.get_json()["error"] == "bad_request" and "nested" in r.get_json()["message"]
    assert sent == []
    ok = app.test_client().patch(
        "/hotparams/chat", headers=AUTH, json={"values": {"temperature": 0.5}}
    )
    assert ok.status_code == 200


def test_failed_authentication_is_logged_without_the_token_and_limited_with_429(
    make: Callable[..., tuple[Flask, list[Any]]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="hotparams.flask")
    app, _ = make(auth_failures=5, auth_window=1.0)
    client = app.test_client()
    guesses = [f"guess-{i}-not-the-token" for i in range(5)]
    for guess in guesses:
        r = client.get("/hotparams/chat", headers={"Authorization": f"Bearer {guess}"})
        assert r.status_code == 401
    failed = [r for r in caplog.records if "failed authentication" in r.getMessage()]
    assert len(failed) == 5 and all("127.0.0.1" in r.getMessage() for r in failed)
    assert not any(g in caplog.text for g in guesses) and TOKEN not in caplog.text
    blocked = client.get("/hotparams/chat", headers=AUTH)  # even the right token, for now
    assert blocked.status_code == 429 and blocked.get_json()["error"] == "too_many_requests"
    assert int(blocked.headers["Retry-After"]) >= 1
    other = client.get("/hotparams/chat", headers=AUTH, environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert other.status_code == 200  # another address is not blocked
    assert wait_until(lambda: client.get("/hotparams/chat", headers=AUTH).status_code == 200, 5)


def test_the_failure_window_slides_and_forgets() -> None:
    now = [0.0]
    logins = FailedLogins(3, 10.0, clock=lambda: now[0])
    assert not logins.failed("a") and not logins.failed("a")
    assert logins.blocked_for("a") == 0
    assert logins.failed("a")
    assert logins.blocked_for("a") == 10.0 and logins.blocked_for("b") == 0
    now[0] = 10.5
    assert logins.blocked_for("a") == 0


def test_the_author_is_the_identity_authorize_returns_never_the_body(
    make: Callable[..., tuple[Flask, list[Any]]],
) -> None:
    app, _ = make(authorize=lambda: request.headers.get("X-User") or False)
    client = app.test_client()
    r = client.patch(
        "/hotparams/chat",
        headers={**AUTH, "X-User": "ana@example.com"},
        json={"values": {"max_tokens": 100}, "reason": "shorter"},
    )
    assert r.status_code == 200
    (last,) = state_of(app).bus.history("chat", limit=1)
    assert (last.author, last.reason) == ("ana@example.com", "shorter")
    forged = client.patch(
        "/hotparams/chat",
        headers={**AUTH, "X-User": "mallory"},
        json={"values": {"max_tokens": 200}, "author": "ana@example.com"},
    )
    assert forged.status_code == 400 and "author" in forged.get_json()["message"]
    assert state_of(app).bus.history("chat", limit=1)[0].version == last.version
    assert client.get("/hotparams/chat", headers=AUTH).status_code == 403  # no identity


@pytest.mark.parametrize("token", ["change-me", "x" * 31])
def test_a_token_under_32_characters_is_refused_at_start(redis_url: str, token: str) -> None:
    app = Flask("short")
    app.config.update(HOTPARAMS_URL=redis_url, HOTPARAMS_ADMIN_TOKEN=token)
    hp: HotParams[ChatParams] = HotParams(namespace="chat", model=ChatParams, admin=AdminAPI())
    with pytest.raises(hotparams.ConfigError, match="at least 32"):
        hp.init_app(app)
    assert token not in repr(AdminAPI(token=token))
