"""hotparams.flask with Flask's test client against a real redis-server:
one snapshot per request, per-user A/B variants, the change signal, and the
admin JSON API (auth, status codes, the CLI's messages, secrets masked)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, current_app, request

import hotparams
from hotparams.cli import run
from hotparams.flask import (
    AdminAPI,
    HotParams,
    current_snapshot,
    params,
    params_changed,
    state_of,
)
from hotparams.server import LocalRedis
from workers.params import ChatParams

from .helpers import dump_namespace

TOKEN = "admin-token-7-" + "x" * 24  # the API refuses tokens under 32 characters
SECRET = "sk-live-never-shown-42"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def make_app(
    url: str, settings: dict[str, Any] | None = None, **options: Any
) -> tuple[Flask, HotParams[ChatParams]]:
    app = Flask("test_flask")
    app.config.update(
        HOTPARAMS_URL=url,
        HOTPARAMS_ADMIN_TOKEN=TOKEN,
        HOTPARAMS_VERSION_HEADER="X-Hotparams-Version",
        HOTPARAMS_SETTINGS={"reconcile_interval": 0.5, **(settings or {})},
    )
    hp: HotParams[ChatParams] = HotParams(
        namespace="chat",
        model=ChatParams,
        user_id=lambda: request.headers.get("X-User-Id"),
        register=True,
        admin=options.pop("admin", AdminAPI()),
        **options,
    )
    hp.init_app(app)

    @app.get("/read")
    def read() -> dict[str, Any]:
        return {
            "version": current_snapshot.version,
            "variant": current_snapshot.variant,
            "temperature": params.temperature,
            "typed": hp.params.temperature,
        }

    @app.get("/read-change-read")
    def read_change_read() -> dict[str, Any]:
        first, t1 = current_snapshot.version, params.temperature
        bus = state_of().bus
        v = bus.set("chat", {"temperature": round(t1 + 0.1, 2)}, reason="mid-request")
        assert state_of().live.wait_for(v, 10)  # this process applied it meanwhile
        return {
            "first": first,
            "second": current_snapshot.version,
            "temperatures": [t1, params.temperature],
            "applied": state_of().live.current.version,
            "written": v,
        }

    return app, hp


@pytest.fixture
def fleet_app(redis_url: str) -> Iterator[tuple[Flask, HotParams[ChatParams], hotparams.Bus]]:
    app, hp = make_app(redis_url)
    bus = hotparams.connect(redis_url)
    # the fleet's model has a model validator (Python-only): write with the model
    bus.bind("chat", ChatParams)
    yield app, hp, bus
    hp.close(app)
    bus.close()


def test_a_request_sees_the_version_pinned_at_its_start_throughout(fleet_app: Any) -> None:
    app, _, _ = fleet_app
    client = app.test_client()
    doc = client.get("/read-change-read").get_json()
    assert doc["first"] == doc["second"] == 1
    assert doc["temperatures"][0] == doc["temperatures"][1] == 0.7
    assert doc["applied"] == doc["written"] == 2  # the change landed during the request
    after = client.get("/read")
    assert after.get_json()["version"] == 2 and after.get_json()["temperature"] == 0.8
    assert after.headers["X-Hotparams-Version"] == "2"


def test_each_user_gets_their_ab_variant_for_the_whole_request(fleet_app: Any) -> None:
    app, _, bus = fleet_app
    bus.register("chat", ChatParams)
    v = bus.set_variant("chat", "warm", {"temperature": 1.3}, users=["alice"])
    assert state_of(app).live.wait_for(v, 10)
    client = app.test_client()
    alice = client.get("/read", headers={"X-User-Id": "alice"}).get_json()
    bob = client.get("/read", headers={"X-User-Id": "bob"}).get_json()
    anonymous = client.get("/read").get_json()
    assert alice == {"version": v, "variant": "warm", "temperature": 1.3, "typed": 1.3}
    assert bob == anonymous == {"version": v, "variant": None, "temperature": 0.7, "typed": 0.7}


def test_the_signal_is_sent_with_the_app_inside_an_app_context(fleet_app: Any) -> None:
    app, _, bus = fleet_app
    got: list[tuple[int, int, str]] = []
    done = threading.Event()

    def receiver(sender: Flask, old: Any, new: Any, **_: Any) -> None:
        got.append((old.version, new.version, current_app.name))
        done.set()

    params_changed.connect(receiver, sender=app)
    try:
        v = bus.set("chat", {"model": "gpt-4o"})
        assert done.wait(10)
    finally:
        params_changed.disconnect(receiver, sender=app)
    assert got == [(v - 1, v, app.name)]


def test_state_lives_in_app_extensions_not_on_the_extension(redis_url: str) -> None:
    one, hp = make_app(redis_url)
    two = Flask("second")
    two.config.update(HOTPARAMS_URL=redis_url, HOTPARAMS_ADMIN_TOKEN=TOKEN)
    try:
        hp.init_app(two)  # one extension object, two apps
        assert not any(isinstance(v, Flask) for v in vars(hp).values())
        assert state_of(one) is not state_of(two)
        assert state_of(one).live is not state_of(two).live
        with pytest.raises(hotparams.ConfigError):
            hp.init_app(two)
        with two.app_context():  # outside a request: the app context's version
            assert current_snapshot.version == 1 and params.model == "gpt-4o-mini"
        with pytest.raises(RuntimeError):
            _ = params.model
    finally:
        hp.close(one)
        hp.close(two)


def test_the_admin_api_needs_a_token_or_an_authorize_callable(redis_url: str) -> None:
    app = Flask("no-auth")
    app.config["HOTPARAMS_URL"] = redis_url
    hp: HotParams[ChatParams] = HotParams(namespace="chat", model=ChatParams, admin=AdminAPI())
    with pytest.raises(hotparams.ConfigError, match="needs a token"):
        hp.init_app(app)
    assert "hotparams" not in app.extensions
    assert TOKEN not in repr(AdminAPI(token=TOKEN))


def test_admin_auth_401_without_or_with_a_wrong_token_403_when_not_authorised(
    redis_url: str,
) -> None:
    allowed = {"yes": False}
    app, hp = make_app(
        redis_url, admin=AdminAPI(url_prefix="/ops", authorize=lambda: allowed["yes"])
    )
    client = app.test_client()
    try:
        missing = client.get("/ops/chat")
        assert missing.status_code == 401
        assert missing.get_json()["error"] == "unauthorized"
        assert missing.headers["WWW-Authenticate"].startswith("Bearer")
        wrong = client.get("/ops/chat", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        denied = client.get("/ops/chat", headers=AUTH)
        assert denied.status_code == 403 and denied.get_json()["error"] == "forbidden"
        allowed["yes"] = True
        assert client.get("/ops/chat", headers=AUTH).status_code == 200
        patch = client.patch("/ops/chat", json={"values": {"temperature": 1}})
        assert patch.status_code == 401  # writes too
    finally:
        hp.close(app)
    assert hotparams.connect(redis_url).head("chat").version == 1


class CLI:
    """The CLI's one-line message for the same change (without its prefix)."""

    def __init__(self, url: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.url = url
        self.capsys = capsys

    def error(self, *args: str) -> str:
        self.capsys.readouterr()
        code = run(["--url", self.url, *args])
        line = self.capsys.readouterr().err.strip()
        assert code != 0 and line.startswith("hotparams: error: "), line
        return line.removeprefix("hotparams: error: ")


def test_admin_errors_are_the_clis_messages_with_http_status_codes(
    fleet_app: Any, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    app, _, bus = fleet_app
    cli = CLI(redis_url, capsys)
    client = app.test_client()
    before = dump_namespace(bus.client, "chat")

    bad = client.patch("/hotparams/chat", headers=AUTH, json={"values": {"temperature": 5}})
    assert bad.status_code == 400
    doc = bad.get_json()
    assert doc["error"] == "invalid_params" and set(doc["fields"]) == {"temperature"}
    schema = "workers.params:ChatParams"
    assert doc["message"] == cli.error("set", "chat", "temperature=5", "--schema", schema)

    cross = client.patch("/hotparams/chat", headers=AUTH, json={"values": {"quiet_from": 22}})
    assert cross.status_code == 400
    assert cross.get_json()["message"] == cli.error(
        "set", "chat", "quiet_from=22", "--schema", schema
    )
    assert "set together" in cross.get_json()["message"]

    unknown = client.patch("/hotparams/chat", headers=AUTH, json={"values": {"colour": "red"}})
    assert unknown.status_code == 400 and "colour" in unknown.get_json()["fields"]

    stale = client.patch(
        "/hotparams/chat",
        headers=AUTH,
        json={"values": {"temperature": 0.2}, "expect_version": 0},
    )
    assert stale.status_code == 409
    assert stale.get_json() == {
        "error": "version_conflict",
        "message": cli.error("set", "chat", "temperature=0.2", "--expect-version", "0"),
        "expected": 0,
        "actual": 1,
    }

    for path, method, body in [
        ("/hotparams/chat/rollback", "post", {"version": 99}),
        ("/hotparams/chat/diff?from=99", "get", None),
        ("/hotparams/other", "get", None),
        ("/hotparams/other/history", "get", None),
    ]:
        response = getattr(client, method)(path, headers=AUTH, json=body)
        assert response.status_code == 404, path
        assert response.get_json()["error"] == "not_found"
    assert client.post("/hotparams/chat/rollback", headers=AUTH, json={"version": 99}).get_json()[
        "message"
    ] == cli.error("rollback", "chat", "99")

    for body in [None, [], {"values": {}}, {"values": {"temperature": 1}, "colour": 1}]:
        response = client.patch("/hotparams/chat", headers=AUTH, json=body)
        assert response.status_code == 400, body
        assert response.get_json()["error"] == "bad_request"
    assert client.get("/hotparams/chat/diff", headers=AUTH).status_code == 400
    assert client.get("/hotparams/chat/history?limit=x", headers=AUTH).status_code == 400

    assert dump_namespace(bus.client, "chat") == before  # nothing was written


def test_admin_change_history_diff_rollback_never_show_a_secret(fleet_app: Any) -> None:
    app, _, _ = fleet_app
    client = app.test_client()
    seen: list[str] = []

    def call(method: str, path: str, body: Any = None, status: int = 200) -> Any:
        response = getattr(client, method)(path, headers=AUTH, json=body)
        seen.append(response.get_data(as_text=True))
        assert response.status_code == status, response.get_data(as_text=True)
        return response.get_json()

    changed = call(
        "patch",
        "/hotparams/chat",
        {
            "values": {"model": "claude-sonnet", "api_key": SECRET},
            "expect_version": 1,
            "reason": "new vendor",
        },
    )
    assert changed == {
        "namespace": "chat",
        "version": 2,
        "previous": 1,
        "changed": True,
        "changes": {
            "api_key": {"old": "******", "new": "******"},
            "model": {"old": "gpt-4o-mini", "new": "claude-sonnet"},
        },
    }
    shown = call("get", "/hotparams/chat")
    assert shown["version"] == 2 and shown["values"]["api_key"] == "******"
    assert shown["values"]["model"] == "claude-sonnet"
    assert shown["served"]["connected"] is True
    history = call("get", "/hotparams/chat/history?limit=5")["changes"]
    assert [c["version"] for c in history] == [2, 1]
    assert (history[0]["author"], history[0]["reason"]) == ("admin-api", "new vendor")
    assert history[0]["source"].startswith("admin-api:")
    diff = call("get", "/hotparams/chat/diff?from=1")
    assert diff["to"] == 2 and diff["changes"]["api_key"] == {"old": "******", "new": "******"}
    back = call("post", "/hotparams/chat/rollback", {"version": 1, "reason": "too pricey"})
    assert (back["version"], back["target"]) == (3, 1)
    assert back["changes"]["model"] == {"old": "claude-sonnet", "new": "gpt-4o-mini"}
    bad_secret = call("patch", "/hotparams/chat", {"values": {"api_key": 12345}}, status=400)
    assert "api_key" in bad_secret["fields"]
    same = call("patch", "/hotparams/chat", {"values": {"model": "gpt-4o-mini"}})
    assert same["changed"] is False and same["version"] == 3
    assert not any(SECRET in text for text in seen)
    assert not any("12345" in text for text in seen)


def test_the_cli_and_the_admin_api_show_a_change_as_one_document(
    fleet_app: Any, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Drift: the admin API's history left out ``target`` and ``schema_rev``
    (and said the time in UTC where the CLI said it in local time)."""
    app, _, bus = fleet_app
    bus.set("chat", {"api_key": SECRET}, author="ana", reason="vendor")
    bus.rollback("chat", 1, author="ana", reason="back")
    response = app.test_client().get("/hotparams/chat/history?limit=5", headers=AUTH)
    assert response.status_code == 200
    api = response.get_json()["changes"]
    capsys.readouterr()
    assert run(["--url", redis_url, "history", "chat", "--limit", "5", "--json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out) == api
    assert [(c["version"], c["op"], c["target"]) for c in api] == [
        (3, "rollback", 1),
        (2, "set", None),
        (1, "init", None),
    ]
    head = bus.head("chat")
    assert all(c["schema_rev"] == head.schema_rev and c["epoch"] == head.epoch for c in api)
    assert api[1]["changes"]["api_key"] == {"old": "******", "new": "******"}
    assert SECRET not in out + response.get_data(as_text=True)


def test_admin_answers_503_when_redis_is_unreachable(private_redis: LocalRedis) -> None:
    app, hp = make_app(private_redis.url, {"retry_attempts": 1, "connect_timeout": 0.5})
    client = app.test_client()
    try:
        assert client.get("/hotparams/chat", headers=AUTH).status_code == 200
        private_redis.stop()
        down = client.get("/hotparams/chat", headers=AUTH)
        assert down.status_code == 503
        assert down.get_json()["error"] == "redis_unavailable"
        assert down.headers["Retry-After"] == "1"
        assert "Redis unreachable" in down.get_json()["message"]
        write = client.patch("/hotparams/chat", headers=AUTH, json={"values": {"retries": 3}})
        assert write.status_code == 503
        # requests keep being served the last good version
        assert client.get("/read").get_json()["version"] == 1
    finally:
        hp.close(app)


def test_the_web_app_serves_chat_with_the_pinned_version(redis_url: str) -> None:
    from workers.web import create_app

    app = create_app({"HOTPARAMS_URL": redis_url, "HOTPARAMS_ADMIN_TOKEN": TOKEN})
    client = app.test_client()
    try:
        page = client.get("/?user=ana")
        assert page.status_code == 200 and b"gpt-4o-mini" in page.data
        reply = client.post("/api/chat", json={"message": "hi"}, headers={"X-User-Id": "ana"})
        doc = reply.get_json()
        assert doc["version"] == doc["version_after_reply"] == 1 and doc["user"] == "ana"
        assert reply.headers["X-Hotparams-Version"] == "1"
        assert client.post("/api/chat", json={}).status_code == 400
        shown = client.get("/api/params").get_json()
        assert shown["values"]["api_key"] == "******"
        assert json.loads(client.get("/healthz").data)["ok"] is True
        assert client.get("/hotparams/chat", headers=AUTH).status_code == 200
    finally:
        state_of(app).close()
