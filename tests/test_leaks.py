"""No password and no secret value leaks through a repr, an exception, a log
line, a status or a CLI message: each leak of issue 14, provoked."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr, field_validator, model_validator

import hotparams
from hotparams.redact import redact_url, terminal_safe, url_secrets
from hotparams.variants import Variant, VariantSet

from .helpers import dead_port, run_in_process, wait_until
from .test_cli import run_cli

ROOT = Path(__file__).resolve().parent.parent
HOTPARAMS = str(Path(sys.executable).parent / "hotparams")
SECRET = "sk-quoted-SECRET-77"

# a password in every form a URL can hold it; the port is closed (nothing listens)
PORT = dead_port()  # refuses connections: every URL below is unreachable
URLS = {
    "user-info": (f"redis://ana:Us3r-PW1@127.0.0.1:{PORT}/0", "Us3r-PW1"),
    "no user": (f"redis://:NoUser-PW2@127.0.0.1:{PORT}/0", "NoUser-PW2"),
    "query": (f"redis://127.0.0.1:{PORT}/0?password=Query-PW3", "Query-PW3"),
    "query and user": (f"redis://ana@127.0.0.1:{PORT}/0?password=Query-PW4&db=0", "Query-PW4"),
    "percent-encoded": (f"redis://ana:Pct%2F%23%3F%40PW5@127.0.0.1:{PORT}/0", "Pct%2F%23%3F%40PW5"),
    "unencoded slash": (f"redis://ana:Sl/ash-PW6@127.0.0.1:{PORT}/0", "Sl/ash-PW6"),
    "unencoded hash": (f"redis://ana:Ha#sh-PW7@127.0.0.1:{PORT}/0", "Ha#sh-PW7"),
    "unencoded question mark": (f"redis://ana:Qu?est-PW8@127.0.0.1:{PORT}/0", "Qu?est-PW8"),
    "unencoded at and colon": (f"redis://ana:A@t:Co-PW9@127.0.0.1:{PORT}/0", "A@t:Co-PW9"),
    "rediss": (f"rediss://ana:Tls-PW10@127.0.0.1:{PORT}/0", "Tls-PW10"),
    "unix": ("unix://ana:Unix-PW11@/nonexistent/redis.sock?db=0", "Unix-PW11"),
}


def _fragments(password: str) -> list[str]:
    """The password and every piece of it a parser could cut out at / # ? @ :."""
    pieces = {password, *password.replace("%", " ").split()}
    for sep in "/#?@:":
        pieces |= {p for piece in list(pieces) for p in piece.split(sep)}
    return sorted(p for p in pieces if len(p) >= 3 and p not in {"ana", "PW"})


def _assert_clean(text: str, password: str, where: str) -> None:
    for piece in _fragments(password):
        assert piece not in text, f"{piece!r} of the password leaked into {where}: {text}"


@pytest.mark.parametrize("form", sorted(URLS))
def test_a_password_in_any_url_form_never_shows_in_reprs_or_errors(form: str) -> None:
    url, password = URLS[form]
    assert password in url or password.replace("%", "") in url.replace("%", "")
    assert password not in redact_url(url)
    assert url_secrets(url)
    seen: list[str] = [redact_url(url)]
    try:
        bus = hotparams.connect(url, retry_attempts=1, connect_timeout=0.5)
    except hotparams.ConfigError as exc:  # redis-py cannot parse it: the error says so
        seen.append(str(exc))
    else:
        seen.append(repr(bus))
        with pytest.raises(hotparams.ConnectionFailed) as caught:
            bus.head("chat")
        seen += [str(caught.value), repr(caught.value), caught.value.target]
        bus.close()
    _assert_clean("\n".join(seen), password, f"the {form} URL's repr and errors")


@pytest.mark.parametrize("form", ["query", "unencoded slash", "unencoded hash", "user-info"])
def test_the_cli_never_prints_a_password_of_its_url(form: str) -> None:
    url, password = URLS[form]
    for args in (["--url", url, "get", "chat"], ["get", "chat"]):
        code, out, err = run_in_process(args, env={"HOTPARAMS_URL": url}, cwd=ROOT)
        assert code in (2, 5), err
        assert err.startswith("hotparams: error: ")
        _assert_clean(out + err, password, f"the CLI with the {form} URL")


def test_terminal_safe_escapes_every_control_character() -> None:
    raw = "a\x1b[31mred\x07\x9b2J\r\x00\u202eevil\x7f"
    out = terminal_safe(raw)
    assert out == "a\\x1b[31mred\\x07\\x9b2J\\x0d\\x00\\u202eevil\\x7f"
    assert terminal_safe("plain ünïcode [bold]x[/bold]") == "plain ünïcode [bold]x[/bold]"


# ------------------------------------------------------------------ reprs


def test_variant_and_variant_set_reprs_name_overridden_fields_never_their_values() -> None:
    vip = Variant("vip", {"api_key": SECRET, "tone": "friendly"}, ((0, 100),), frozenset({"u"}))
    variants = VariantSet.build("salt1", [vip])
    for text in (
        repr(vip),
        repr(variants),
        str(variants),
        repr(VariantSet.from_json(variants.to_json())),
    ):
        assert SECRET not in text and "friendly" not in text
        assert "api_key" in text and "vip" in text


class Creds(BaseModel):
    api_key: SecretStr = SecretStr("sk-default-0000")
    region: str = "eu"


def test_committed_and_batch_error_results_never_show_secret_values(redis_url: str) -> None:
    with hotparams.connect(redis_url) as bus:
        bus.register("creds", Creds)
        bus.set_variant("creds", "vip", {"api_key": SECRET + "-variant"}, percent=10)
        bus.get("creds")  # the bus now knows the state: its Committed holds it whole
        with pytest.raises(hotparams.BatchError) as caught:
            bus.set_many([("creds", {"api_key": SECRET}), ("missing", {"region": "us"})])
        texts = [repr(caught.value.results), str(caught.value), repr(bus._states)]
        for text in texts:
            assert SECRET not in text
        assert bus.get("creds", Creds).params.api_key.get_secret_value() == SECRET


def test_restore_dry_run_masks_the_secret_overrides_of_variants(
    redis_url: str, tmp_path: Path
) -> None:
    cache = tmp_path / "creds.json"
    with hotparams.connect(redis_url) as bus:
        bus.register("creds", Creds)
        bus.set("creds", {"api_key": SECRET})
        v = bus.set_variant(
            "creds", "vip", {"api_key": SECRET + "-vip", "region": "us"}, users=["x"]
        )
        live = bus.watch("creds", Creds, cache=cache)
        assert live.wait_for(v)
        assert wait_until(lambda: cache.exists() and json.loads(cache.read_text())["version"] == v)
        live.close()
    assert SECRET in cache.read_text()  # the worker needs the real values
    args = ["restore", "creds", "--from-cache", str(cache)]  # the file names the model
    shown = run_cli(redis_url, *args, "--dry-run", "--json")
    assert shown.code == 0, shown.err
    assert SECRET not in shown.out + shown.err
    doc = shown.json()
    assert doc["values"]["api_key"] == hotparams.MASK
    assert doc["variants"]["variants"]["vip"]["overrides"] == {
        "api_key": hotparams.MASK,
        "region": "us",
    }
    table = run_cli(redis_url, *args, "--dry-run")
    assert table.code == 0, table.err
    assert SECRET not in table.out + table.err and "vip" in table.out


# ------------------------------------------------------------------ validator messages


class Strict(BaseModel):
    """A model whose validators quote the secret in their messages."""

    api_key: SecretStr = SecretStr("sk-default-0000")
    region: str = "eu"

    @field_validator("api_key")
    @classmethod
    def key_prefix(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith("sk-default") and "quoted" in str(
            value.get_secret_value()
        ):
            raise ValueError(f"{value.get_secret_value()} is not a key we issued")
        return value


class StrictModel(BaseModel):
    api_key: SecretStr = SecretStr("sk-default-0000")
    region: str = "eu"

    @model_validator(mode="after")
    def key_matches_region(self) -> StrictModel:
        key = self.api_key.get_secret_value()
        if "quoted" in key:
            raise ValueError(f"key {key} is not valid in region {self.region}")
        return self


@pytest.mark.parametrize("model", [Strict, StrictModel])
def test_a_validator_that_quotes_a_secret_is_masked_for_writers(
    redis_url: str, model: type[BaseModel]
) -> None:
    with hotparams.connect(redis_url) as bus:
        bus.register("creds", model)
        with pytest.raises(hotparams.InvalidParams) as caught:
            bus.set("creds", {"api_key": SECRET})
        assert SECRET not in str(caught.value) and SECRET not in repr(caught.value.errors)
        assert caught.value.errors  # the field (or "*") is still named
    proc = subprocess.run(
        [
            HOTPARAMS,
            "set",
            "creds",
            f"api_key={SECRET}",
            "--schema",
            f"tests.test_leaks:{model.__name__}",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HOTPARAMS_URL": redis_url},
        cwd=ROOT,
        timeout=30,
    )
    assert proc.returncode == 3, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr


def test_a_worker_refusing_a_secret_by_a_quoting_validator_never_logs_or_reports_it(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with hotparams.connect(redis_url) as bus:
        bus.register("creds", Creds)
        live = bus.watch("creds", StrictModel)
        anyone = hotparams.connect(redis_url)  # a writer without the validator
        v = anyone.set("creds", {"api_key": SECRET})
        anyone.close()
        assert wait_until(lambda: live.status().rejected is not None)
        status = live.status()
        live.close()
    assert status.rejected is not None and status.rejected.version == v
    texts = [repr(status), status.rejected.reason, repr(status.rejected.errors), caplog.text]
    for text in texts:
        assert SECRET not in text
    assert any(
        r.levelno == logging.ERROR and "does not fit" in r.getMessage() for r in caplog.records
    )


def test_the_admin_api_never_returns_a_secret_quoted_by_a_validator(redis_url: str) -> None:
    from flask import Flask

    from hotparams.flask import AdminAPI, HotParams

    token = "t" * 40
    app = Flask("leaks")
    app.config.update(HOTPARAMS_URL=redis_url, HOTPARAMS_ADMIN_TOKEN=token)
    hp: HotParams[Any] = HotParams(namespace="creds", model=Strict, register=True, admin=AdminAPI())
    hp.init_app(app)
    try:
        r = app.test_client().patch(
            "/hotparams/creds",
            headers={"Authorization": f"Bearer {token}"},
            json={"values": {"api_key": SECRET}},
        )
        assert r.status_code == 400
        assert SECRET not in r.get_data(as_text=True)
    finally:
        hp.close(app)


@pytest.mark.slow
def test_the_demo_passes_its_url_to_workers_by_environment_never_argv() -> None:
    from hotparams.demo import Fleet
    from hotparams.server import LocalRedis

    password = "Demo-PW-in-argv-42"
    with LocalRedis(extra=["--requirepass", password]) as server:
        url = f"redis://:{password}@127.0.0.1:{server.port}/0"
        with Fleet(url, "chat", 2) as fleet:
            fleet.start()
            for worker in fleet.workers:
                argv = " ".join(str(a) for a in worker.proc.args)  # what ps shows
                assert password not in argv and "--url" not in argv
            # each worker reached Redis: it got the URL (and password) by environment
            assert fleet.wait(lambda views: all(v.ready for v in views), 60), fleet.failed()
