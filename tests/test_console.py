"""The operators' console with Flask's test client, on a real redis-server:
every route and its status codes, CSRF and role refusals, the edit ->
review -> publish flow with compare-and-set, roll back, variants, the
extension's mount, and secrets that never reach a response."""

from __future__ import annotations

import html
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, request
from flask.testing import FlaskClient

import hotparams
from hotparams.config import ConfigError
from hotparams.console import Console, Identity, User, create_app
from hotparams.flask import AdminAPI, HotParams
from hotparams.server import LocalRedis
from workers.params import ChatParams

from .helpers import dump_namespace, wait_until

SECRET = "sk-live-never-shown-4242"
NEW_SECRET = "sk-rotated-never-shown-9999"
TOKENS = {"viewer": "v" * 32, "editor": "e" * 40, "admin": "a" * 36}
USERS = (
    User("vic", "viewer", TOKENS["viewer"]),
    User("ana", "editor", TOKENS["editor"]),
    User("root", "admin", TOKENS["admin"]),
)
ROOT = Path(__file__).resolve().parent.parent
CLI = (sys.executable, "-c", "from hotparams.cli import main; main()")


@pytest.fixture
def bus(redis_url: str) -> Iterator[hotparams.Bus]:
    b = hotparams.connect(redis_url)
    b.register("chat", ChatParams)
    b.set("chat", {"api_key": SECRET}, author="ops", reason="the real key")
    b.register("other", ChatParams)
    yield b
    b.close()


@pytest.fixture
def app(bus: hotparams.Bus) -> Flask:
    raw = hotparams.connect(bus.url)  # a Bus of its own: the console binds the model
    console = Console(
        url_prefix="/", users=USERS, secret_key="k" * 32, wait=0.2, models=(("*", ChatParams),)
    )
    return create_app(raw, console)


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def login(client: FlaskClient, role: str) -> str:
    page = client.get("/login")
    r = client.post("/login", data={"csrf": csrf_of(page.text), "token": TOKENS[role]})
    assert r.status_code == 303, r.text
    return csrf_of(client.get("/").text)


def client_as(app: Flask, role: str) -> tuple[FlaskClient, str]:
    client = app.test_client()
    return client, login(client, role)


def review_form(
    csrf: str, base: int, reason: str = "warmer replies", **fields: str
) -> dict[str, str]:
    return {"csrf": csrf, "base": str(base), "reason": reason} | {
        f"f.{k}": v for k, v in fields.items()
    }


def hidden_fields(page: str) -> dict[str, str]:
    found = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page)
    return {name: html.unescape(value) for name, value in found}


# ---------------------------------------------------------------- routes and auth


def test_every_page_answers_200_for_a_viewer_and_a_signed_out_person_is_sent_to_login(
    app: Flask,
) -> None:
    anonymous = app.test_client()
    r = anonymous.get("/ns/chat")
    assert r.status_code == 302 and "/login?next=" in r.headers["Location"]
    assert anonymous.get("/login").status_code == 200
    client, _ = client_as(app, "viewer")
    for path in (
        "/",
        "/?q=cha",
        "/ns/chat",
        "/ns/chat/history",
        "/ns/chat/variants",
        "/ns/chat/fleet",
        "/ns/chat/fleet?fragment=1",
        "/ns/chat/fleet?format=json",
        "/static/console.css",
        "/static/console.js",
    ):
        with client.get(path) as r:
            assert r.status_code == 200, path
    search = client.get("/?q=oth").text
    assert "/ns/other" in search and "/ns/chat" not in search
    assert client.get("/ns/nope").status_code == 404
    assert client.get("/ns/bad%20name").status_code == 400
    assert client.get("/ns/chat/history?limit=x").status_code == 400
    assert client.get("/ns/chat/fleet?format=json").json["total"] == 0


def test_a_wrong_token_is_401_and_short_or_duplicate_tokens_are_refused_at_start(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    client = app.test_client()
    csrf = csrf_of(client.get("/login").text)
    for _ in range(10):
        r = client.post("/login", data={"csrf": csrf, "token": "x" * 32})
        assert r.status_code == 401 and "this token is not valid" in r.text
    assert "a failed login from 127.0.0.1" in caplog.text and "x" * 32 not in caplog.text
    r = client.post("/login", data={"csrf": csrf, "token": TOKENS["admin"]})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1  # even the right one
    assert client.get("/ns/chat").status_code == 302  # not signed in
    big = client.post("/login", data={"csrf": csrf, "token": "t" * (2 * 1024 * 1024)})
    assert big.status_code == 413
    with pytest.raises(ConfigError, match="shorter than 32"):
        User("ana", "editor", "change-me")
    with pytest.raises(ConfigError, match="role"):
        User("ana", "owner", "t" * 32)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="same token"):
        Console(users=(User("a", "viewer", "t" * 32), User("b", "admin", "t" * 32)))
    with pytest.raises(ConfigError, match="users"):
        Console().check()


def test_signing_out_ends_the_session(app: Flask) -> None:
    client, csrf = client_as(app, "editor")
    assert client.get("/ns/chat").status_code == 200
    assert client.post("/logout", data={}).status_code == 400  # without its CSRF token
    r = client.post("/logout", data={"csrf": csrf})
    assert r.status_code == 303 and r.headers["Location"].endswith("/login")
    assert client.get("/ns/chat").status_code == 302


def test_a_login_never_redirects_off_the_site(app: Flask) -> None:
    for target in ("//evil.example/", "https://evil.example/", "/\t/evil.example", "/\\evil"):
        client = app.test_client()
        page = client.get("/login")
        data = {"csrf": csrf_of(page.text), "token": TOKENS["viewer"], "next": target}
        r = client.post("/login", data=data)
        assert r.status_code == 303 and r.headers["Location"] == "/", target
    client = app.test_client()
    page = client.get("/login")
    data = {"csrf": csrf_of(page.text), "token": TOKENS["viewer"], "next": "/ns/chat/history"}
    assert client.post("/login", data=data).headers["Location"] == "/ns/chat/history"


def test_pages_answer_503_with_the_clis_message_when_redis_is_unreachable(
    private_redis: LocalRedis,
) -> None:
    with hotparams.connect(private_redis.url) as setup:
        setup.register("chat", ChatParams)
    down = hotparams.connect(private_redis.url, retry_attempts=1, connect_timeout=0.5)
    app = create_app(down, Console(url_prefix="/", users=USERS, secret_key="k" * 32))
    client, _ = client_as(app, "viewer")
    private_redis.stop()
    r = client.get("/ns/chat")
    assert r.status_code == 503 and "Redis unreachable at" in r.text
    down.close()


def test_the_session_cookie_is_httponly_samesite_and_secure_behind_tls(
    app: Flask, bus: hotparams.Bus
) -> None:
    plain = app.test_client()
    with plain.get("/static/console.css") as r:
        assert "Set-Cookie" not in r.headers  # an asset never starts a session
    cookie = plain.get("/login").headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    tls = app.test_client()
    cookie = tls.get("/login", base_url="https://console.example").headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" in cookie
    from hotparams.console.server import ConsoleServer

    proxied = ConsoleServer(bus, USERS, port=0, behind_proxy=True)
    try:
        forwarded = proxied.app.test_client().get("/login", headers={"X-Forwarded-Proto": "https"})
        assert "Secure" in forwarded.headers["Set-Cookie"]
    finally:
        proxied.close()
    r = plain.get("/login")
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    assert r.headers["X-Frame-Options"] == "DENY"


def test_a_post_without_or_with_a_wrong_csrf_token_is_refused_and_writes_nothing(
    app: Flask, bus: hotparams.Bus
) -> None:
    client, csrf = client_as(app, "admin")
    before = dump_namespace(bus.client, "chat")
    for token in (None, "forged", csrf[:-1] + ("x" if csrf[-1] != "x" else "y")):
        form = review_form(csrf, 2, temperature="0.9")
        form.pop("csrf")
        if token is not None:
            form["csrf"] = token
        for path in ("/ns/chat/review", "/ns/chat/publish", "/ns/chat/rollback/1"):
            r = client.post(path, data=form)
            assert r.status_code == 400 and "CSRF" in r.text, path
        r = client.post("/ns/chat/variants", data={**form, "name": "warm", "percent": "50"})
        assert r.status_code == 400
        r = client.post(
            "/login", data={"token": TOKENS["admin"], **({"csrf": token} if token else {})}
        )
        assert r.status_code == 400
    other = app.test_client()  # another session's token is not this one's
    other_csrf = csrf_of(other.get("/login").text)
    assert (
        client.post(
            "/ns/chat/publish", data=review_form(other_csrf, 2, temperature="0.9")
        ).status_code
        == 400
    )
    assert dump_namespace(bus.client, "chat") == before


def test_a_viewer_may_read_but_not_edit_publish_roll_back_or_change_variants(
    app: Flask, bus: hotparams.Bus
) -> None:
    client, csrf = client_as(app, "viewer")
    before = dump_namespace(bus.client, "chat")
    assert ">Edit<" not in client.get("/ns/chat").text
    assert "Roll back to" not in client.get("/ns/chat/history").text
    assert "Create a variant" not in client.get("/ns/chat/variants").text
    assert client.get("/ns/chat/edit").status_code == 403
    assert client.get("/ns/chat/rollback/1").status_code == 403
    form = review_form(csrf, 2, temperature="0.9")
    for path in ("/ns/chat/review", "/ns/chat/publish", "/ns/chat/rollback/1"):
        r = client.post(path, data=form)
        assert r.status_code == 403 and "needs the editor role" in r.text, path
    r = client.post("/ns/chat/variants", data={**form, "name": "warm", "percent": "50"})
    assert r.status_code == 403
    assert dump_namespace(bus.client, "chat") == before


def test_an_editor_may_not_set_a_secret_or_remove_a_variant(app: Flask, bus: hotparams.Bus) -> None:
    bus.set_variant("chat", "warm", {"temperature": 0.9}, percent=10, author="ops")
    client, csrf = client_as(app, "editor")
    before = dump_namespace(bus.client, "chat")
    r = client.post("/ns/chat/review", data=review_form(csrf, 3, api_key="sk-mine-1234"))
    assert r.status_code == 400 and "only an admin may change a secret field" in r.text
    form = {"csrf": csrf, "base": "3", "reason": "stop", "name": "warm", "action": "remove"}
    r = client.post("/ns/chat/variants", data=form)
    assert r.status_code == 403 and "needs the admin role" in r.text
    assert dump_namespace(bus.client, "chat") == before


# ---------------------------------------------------------------- edit -> review -> publish


def cli_message(redis_url: str, *args: str, capsys: pytest.CaptureFixture[str]) -> str:
    from hotparams.cli import run

    capsys.readouterr()
    run(["--url", redis_url, *args])
    return capsys.readouterr().err.strip()


def test_a_bad_value_shows_the_clis_message_inline_and_writes_nothing(
    app: Flask, bus: hotparams.Bus, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client, csrf = client_as(app, "editor")
    before = dump_namespace(bus.client, "chat")
    r = client.post(
        "/ns/chat/review",
        data=review_form(csrf, 2, temperature="5", max_tokens="many", model="gpt-4o"),
    )
    assert r.status_code == 400
    schema = "--schema=workers.params:ChatParams"
    said = cli_message(redis_url, "set", "chat", "temperature=5", schema, capsys=capsys)
    assert said.endswith("invalid parameters for 'chat': temperature: must be <= 2 (got 5)")
    assert "temperature: must be &lt;= 2 (got 5)" in r.text
    said = cli_message(redis_url, "set", "chat", "max_tokens=many", schema, capsys=capsys)
    assert "max_tokens: expected a whole number, got 'many'" in said
    assert "max_tokens: expected a whole number, got &#39;many&#39;" in r.text
    assert 'aria-invalid="true"' in r.text and "nothing was written" in r.text
    r = client.post("/ns/chat/review", data=review_form(csrf, 2, reason="  ", temperature="0.9"))
    assert r.status_code == 400 and "reason: say why" in r.text
    r = client.post("/ns/chat/review", data=review_form(csrf, 2, temperature="0.7"))
    assert r.status_code == 400 and "nothing to change" in r.text
    assert dump_namespace(bus.client, "chat") == before


def test_without_the_model_a_python_checked_namespace_is_refused_as_the_cli_refuses_it(
    bus: hotparams.Bus, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bare = hotparams.connect(bus.url)
    app = create_app(bare, Console(url_prefix="/", users=USERS, secret_key="k" * 32))
    client, csrf = client_as(app, "editor")
    before = dump_namespace(bus.client, "chat")
    r = client.post("/ns/chat/review", data=review_form(csrf, 2, temperature="0.9"))
    said = cli_message(redis_url, "set", "chat", "temperature=0.9", capsys=capsys)
    assert r.status_code == 400 and "checked by Python only" in said
    for part in said.split("'chat': ", 1)[1].split("; "):  # every word of it, unescaped
        assert html.escape(part) in r.text
    assert dump_namespace(bus.client, "chat") == before
    bare.close()


def test_review_shows_the_diff_and_publish_writes_with_the_persons_name_and_reason(
    app: Flask, bus: hotparams.Bus
) -> None:
    client, csrf = client_as(app, "editor")
    before = dump_namespace(bus.client, "chat")
    edit = client.get("/ns/chat/edit").text
    assert '<label for="f-temperature">temperature</label>' in edit
    assert 'type="number" step="any" min="0" max="2"' in edit
    assert '<select id="f-model"' in edit and 'role="switch"' not in edit
    assert '<textarea id="f-system_prompt"' in edit
    r = client.post(
        "/ns/chat/review",
        data=review_form(csrf, 2, temperature="0.9", model="gpt-4o", top_p="1.0"),
    )
    assert r.status_code == 200
    assert re.search(
        r"temperature</th><td class=\"old\"><code>0.7</code>.*<code>0.9</code>", r.text
    )
    assert "Publish v3" in r.text
    assert dump_namespace(bus.client, "chat") == before  # the review wrote nothing
    publish = hidden_fields(r.text)
    assert publish["f.temperature"] == "0.9" and "f.top_p" not in publish  # unchanged
    r = client.post("/ns/chat/publish", data=publish)
    assert r.status_code == 303 and r.headers["Location"].endswith("/ns/chat")
    page = client.get("/ns/chat").text
    assert "v3 published, no live worker reports on this namespace" in page
    assert "v3 published" not in client.get("/ns/chat").text  # a flash shows once
    change = bus.history("chat", limit=1)[0]
    assert (change.version, change.author, change.reason) == (3, "ana", "warmer replies")
    assert change.source.startswith("console:")
    assert bus.get("chat").values["temperature"] == 0.9
    assert bus.get("chat").values["model"] == "gpt-4o"


def test_a_conflict_shows_what_changed_meanwhile_and_publishes_rebased_on_the_new_version(
    app: Flask, bus: hotparams.Bus
) -> None:
    client, csrf = client_as(app, "editor")
    review = client.post("/ns/chat/review", data=review_form(csrf, 2, temperature="0.9"))
    bus.set("chat", {"max_tokens": 1024}, author="bob", reason="longer")  # meanwhile: v3
    r = client.post("/ns/chat/publish", data=hidden_fields(review.text))
    assert r.status_code == 409
    assert (
        "Published meanwhile" in r.text and "v3 by bob" in r.text and "<code>1024</code>" in r.text
    )
    rebased = hidden_fields(r.text)
    assert rebased["base"] == "3"
    assert bus.head("chat").version == 3  # nothing written by the conflict
    r = client.post("/ns/chat/publish", data=rebased)
    assert r.status_code == 303
    snap = bus.get("chat")
    assert (snap.version, snap.values["temperature"], snap.values["max_tokens"]) == (4, 0.9, 1024)


def test_roll_back_shows_the_diff_then_writes_a_new_version(app: Flask, bus: hotparams.Bus) -> None:
    bus.set("chat", {"temperature": 1.5}, author="bob", reason="too hot")
    client, csrf = client_as(app, "editor")
    history = client.get("/ns/chat/history").text
    assert "Roll back to v2" in history and "Roll back to v3" not in history  # v3 is current
    assert "too hot" in history and "bob" in history
    r = client.get("/ns/chat/rollback/2")
    assert r.status_code == 200 and "<code>1.5</code>" in r.text and "<code>0.7</code>" in r.text
    before = dump_namespace(bus.client, "chat")
    r = client.post("/ns/chat/rollback/2", data={"csrf": csrf, "base": "3", "reason": ""})
    assert r.status_code == 400 and "reason: say why" in r.text
    r = client.post("/ns/chat/rollback/2", data={"csrf": csrf, "base": "2", "reason": "back"})
    assert r.status_code == 303  # a stale base: review again
    assert dump_namespace(bus.client, "chat") == before
    r = client.post("/ns/chat/rollback/2", data={"csrf": csrf, "base": "3", "reason": "back"})
    assert r.status_code == 303
    assert "v4 published (rollback to v2)" in client.get("/ns/chat/history").text
    change = bus.history("chat", limit=1)[0]
    assert (change.op, change.target, change.author) == ("rollback", 2, "ana")
    assert bus.get("chat").values["temperature"] == 0.7
    assert client.get("/ns/chat/rollback/99").status_code == 404


def test_variants_create_widen_narrow_edit_and_remove_with_exposures(
    app: Flask, bus: hotparams.Bus
) -> None:
    client, csrf = client_as(app, "admin")

    def post(**form: str) -> Any:
        base = str(bus.head("chat").version)
        return client.post("/ns/chat/variants", data={"csrf": csrf, "base": base, **form})

    r = post(name="warm", percent="50", overrides='{"temperature": 3}', reason="try")
    assert r.status_code == 400 and "must be &lt;= 2 (got 3)" in r.text
    r = post(name="warm", percent="50", overrides='{"temperature": 0.9}', reason="")
    assert r.status_code == 400 and "reason" in r.text
    r = post(name="warm", percent="50", overrides='{"temperature": 0.9}', reason="try warm")
    assert r.status_code == 303
    variant = bus.variants("chat").variants["warm"]
    assert (variant.percent, dict(variant.overrides)) == (50.0, {"temperature": 0.9})
    users = [f"u{i}" for i in range(400)]
    inside = {u for u in users if bus.variants("chat").assign("chat", u) == "warm"}
    assert post(name="warm", percent="70", reason="widen").status_code == 303
    widened = {u for u in users if bus.variants("chat").assign("chat", u) == "warm"}
    assert inside <= widened  # sticky: widening only adds users
    assert post(name="warm", percent="20", reason="narrow").status_code == 303
    narrowed = {u for u in users if bus.variants("chat").assign("chat", u) == "warm"}
    assert narrowed <= inside
    r = post(name="warm", overrides='{"temperature": 1.1, "model": "gpt-4o"}', reason="edit")
    assert r.status_code == 303
    assert dict(bus.variants("chat").variants["warm"].overrides) == {
        "temperature": 1.1,
        "model": "gpt-4o",
    }
    assert post(name="warm", users="u1\nu2", reason="two testers").status_code == 303
    assert bus.variants("chat").variants["warm"].users == {"u1", "u2"}
    assert "u1\nu2</textarea>" in client.get("/ns/chat/variants").text
    bus.record_exposures("chat", bus.variants("chat").salt, {"warm": 7, None: 30})
    page = client.get("/ns/chat/variants").text
    assert "20%" in page and "<td>7</td>" in page and "<td>30</td>" in page
    assert post(name="warm", action="remove", reason="done").status_code == 303
    assert bus.variants("chat").variants == {}
    assert [c.author for c in bus.history("chat", limit=6)] == ["root"] * 6


def test_the_fleet_page_lists_a_live_worker_on_the_current_version(
    app: Flask, bus: hotparams.Bus
) -> None:
    live = bus.watch("chat", ChatParams, worker_name="w1", reconcile_interval=0.5)
    try:
        client, _ = client_as(app, "viewer")
        # watch() waits for its first report at most connect_timeout: poll for it
        assert wait_until(lambda: len(bus.workers("chat")) == 1, 10)
        doc = client.get("/ns/chat/fleet?format=json").json
        assert (doc["on_target"], doc["total"], doc["complete"]) == (1, 1, True)
        assert doc["workers"][0]["id"].endswith(":w1") and doc["workers"][0]["behind"] is False
        fragment = client.get("/ns/chat/fleet?fragment=1").text
        assert "1/1 on v2" in fragment and "<html" not in fragment
        assert "1/1 on v2" in client.get("/").text
    finally:
        live.close()


# ---------------------------------------------------------------- secrets


def test_secrets_never_reach_a_response_and_an_admin_sets_one_by_typing_it_twice(
    app: Flask, bus: hotparams.Bus
) -> None:
    bus.set_variant(
        "chat", "vip", {"api_key": SECRET, "temperature": 0.2}, users=["u1"], author="ops"
    )
    client, csrf = client_as(app, "admin")
    pages = [
        client.get(p)
        for p in (
            "/",
            "/ns/chat",
            "/ns/chat/edit",
            "/ns/chat/history",
            "/ns/chat/variants",
            "/ns/chat/fleet",
            "/ns/chat/fleet?format=json",
            "/ns/chat/rollback/1",
        )
    ]
    review = client.post("/ns/chat/review", data=review_form(csrf, 3, api_key=NEW_SECRET))
    assert review.status_code == 200 and "type the new value again" in review.text
    fields = hidden_fields(review.text)
    wrong = client.post("/ns/chat/publish", data={**fields, "f.api_key": "sk-typo-0000"})
    assert wrong.status_code == 400 and "does not match" in wrong.text
    assert bus.head("chat").version == 3
    done = client.post("/ns/chat/publish", data={**fields, "f.api_key": NEW_SECRET})
    assert done.status_code == 303
    assert bus.get("chat").values["api_key"] == NEW_SECRET
    after = [client.get(p) for p in ("/ns/chat", "/ns/chat/history", "/ns/chat/variants")]
    for r in [*pages, review, wrong, done, *after]:
        body = r.get_data(as_text=True)
        assert SECRET not in body and NEW_SECRET not in body
        assert "sk-" not in body.replace("sk-typo", "")  # no other secret either
    assert "******" in after[0].text


# ---------------------------------------------------------------- the extension and the CLI


def test_the_extension_mounts_the_console_under_a_prefix_with_authorize(redis_url: str) -> None:
    people = {"t-ana": Identity("ana", "editor"), "t-vic": Identity("vic", "viewer")}

    def authorize() -> Identity | None:
        return people.get(request.headers.get("X-Test-Person", ""))

    app = Flask("mounted")
    app.config.update(
        HOTPARAMS_URL=redis_url,
        SECRET_KEY="s" * 32,
        HOTPARAMS_ADMIN_TOKEN="t" * 32,
        HOTPARAMS_SETTINGS={"reconcile_interval": 0.5},  # converges by reconcile, if need be
    )
    hp: HotParams[ChatParams] = HotParams(
        namespace="chat",
        model=ChatParams,
        register=True,
        admin=AdminAPI(url_prefix="/hotparams"),
        console=Console(url_prefix="/hotparams/console", authorize=authorize, namespaces=("chat",)),
    )
    hp.init_app(app)
    try:
        client = app.test_client()
        nobody = client.get("/hotparams/console/")
        assert nobody.status_code == 403
        assert "Path=/hotparams/console/" in nobody.headers["Set-Cookie"]
        ana = {"X-Test-Person": "t-ana"}
        page = client.get("/hotparams/console/", headers=ana)
        assert page.status_code == 200 and "/hotparams/console/ns/chat" in page.text
        assert "Sign out" not in page.text  # the host app signs people in
        csrf = csrf_of(client.get("/hotparams/console/ns/chat/edit", headers=ana).text)
        r = client.post(
            "/hotparams/console/ns/chat/review",
            headers=ana,
            data=review_form(csrf, 1, quiet_from="3"),
        )
        assert r.status_code == 400  # the model's cross-field rule, from the bound model
        assert "quiet_from and quiet_to are set together" in r.text
        r = client.post(
            "/hotparams/console/ns/chat/review",
            headers=ana,
            data=review_form(csrf, 1, temperature="1.2"),
        )
        r = client.post(
            "/hotparams/console/ns/chat/publish", headers=ana, data=hidden_fields(r.text)
        )
        assert r.status_code == 303
        assert wait_until(lambda: hp.live(app).current.version == 2, 10)
        assert hp.live(app).current.params.temperature == 1.2
        assert client.get("/hotparams/console/ns/other", headers=ana).status_code == 404
        vic = {"X-Test-Person": "t-vic"}
        assert client.get("/hotparams/console/ns/chat/edit", headers=vic).status_code == 403
        admin = client.get("/hotparams/chat", headers={"Authorization": "Bearer " + "t" * 32})
        assert admin.status_code == 200 and admin.json["version"] == 2
    finally:
        hp.close(app)


def test_hotparams_console_serves_the_console_and_stops_on_sigterm(redis_url: str) -> None:
    with hotparams.connect(redis_url) as setup:
        setup.register("chat", ChatParams)
    proc = subprocess.Popen(
        [*CLI, "--url", redis_url, "console", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        second = proc.stdout.readline()
        url = re.search(r"(http://\S+/)", first)
        token = re.search(r"with this token: (\S+)", second)
        assert url and token, (first, second)
        app_client = _http(url.group(1), token.group(1))
        assert app_client == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err


def _http(base: str, token: str) -> int:
    import http.cookiejar
    import urllib.parse
    import urllib.request

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    deadline = time.monotonic() + 10
    while True:
        try:
            with opener.open(base + "login", timeout=5) as r:
                page = r.read().decode()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    data = urllib.parse.urlencode({"csrf": csrf_of(page), "token": token}).encode()
    with opener.open(base + "login", data=data, timeout=5):
        pass
    with opener.open(base + "ns/chat", timeout=5) as r:
        assert "chat" in r.read().decode()
        return int(r.status)


def test_the_fleet_page_lists_laggards_first_and_marks_them_behind(
    app: Flask, bus: hotparams.Bus
) -> None:
    from hotparams.fleet import WorkerReport, report_op

    head = bus.head("chat")
    now = int(time.time() * 1000)
    for worker, version, error in (("h:1:fresh", head.version, ""), ("h:2:stale", 1, SECRET)):
        report = WorkerReport(
            id=worker,
            namespace="chat",
            version=version,
            epoch=head.epoch,
            confirmed_ms=now,
            last_error=f"rejected v2: api_key {error}" if error else "",
        )
        bus.run(report_op("chat", report, 30))
    client, _ = client_as(app, "viewer")
    fragment = client.get("/ns/chat/fleet?fragment=1").text
    assert "1/2 on v2" in fragment
    rows = re.findall(r'<tr class="(\w+)" data-worker="([^"]+)"', fragment)
    assert rows == [("behind", "h:2:stale"), ("ok", "h:1:fresh")]  # laggards first
    assert '<strong class="tag">behind</strong>' in fragment  # not only a colour
    assert SECRET not in fragment and "api_key ******" in fragment  # scrubbed error text
    assert "1/2 on v2" in client.get("/").text


def test_the_edit_form_has_a_toggle_a_select_and_json_editors_from_the_schema(
    redis_url: str,
) -> None:
    from .models import ChatParams as RichParams

    with hotparams.connect(redis_url) as setup:
        setup.register("rich", RichParams)
    raw = hotparams.connect(redis_url)
    app = create_app(raw, Console(url_prefix="/", users=USERS, secret_key="k" * 32, wait=0))
    client, csrf = client_as(app, "editor")
    edit = client.get("/ns/rich/edit").text
    assert 'type="checkbox" role="switch" id="f-streaming"' in edit
    assert '<select id="f-tone"' in edit and '<option value="plain" selected>' in edit
    assert '<textarea id="f-stop"' in edit and 'class="json"' in edit
    form = review_form(csrf, 1, stop='["\\n\\n", "END"]', tone="friendly", fallback_model="gpt-4o")
    form["f.streaming"] = "false"  # the hidden input alone: the switch is off
    r = client.post("/ns/rich/review", data=form)
    assert r.status_code == 200, r.text
    r = client.post("/ns/rich/publish", data=hidden_fields(r.text))
    assert r.status_code == 303
    values = raw.get("rich").values
    assert values["stop"] == ["\n\n", "END"] and values["tone"] == "friendly"
    assert values["streaming"] is False and values["fallback_model"] == "gpt-4o"
    bad = review_form(csrf, 2, stop='["a", 1]')
    r = client.post("/ns/rich/review", data=bad)
    assert r.status_code == 400 and "stop: " in r.text
    raw.close()


def test_the_users_file_names_people_roles_and_tokens_and_a_bad_one_is_a_usage_error(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from hotparams.cli import run
    from hotparams.console.server import read_users

    good = tmp_path / "users.json"
    good.write_text(json.dumps({"ana": {"role": "editor", "token": "t" * 32}}))
    assert read_users(good) == (User("ana", "editor", "t" * 32),)
    for doc, problem in (
        ({"ana": {"role": "owner", "token": "t" * 32}}, "role 'owner'"),
        ({"ana": {"role": "editor", "token": "short"}}, "shorter than 32"),
        ({"ana": {"role": "editor", "token": "t" * 32, "extra": 1}}, "exactly a role"),
        ([], "a JSON object"),
    ):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(doc))
        with pytest.raises(ConfigError, match=problem):
            read_users(bad)
        capsys.readouterr()
        assert run(["--url", redis_url, "console", "--users", str(bad), "--port", "0"]) == 2
        err = capsys.readouterr().err
        assert problem in err and "t" * 32 not in err
