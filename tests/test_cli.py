"""The ``hotparams`` command line against a real redis-server: in this process
(:func:`run_cli`), and as the installed console script where the process is
the point (:func:`run_cli_process`)."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import BaseModel, Field, SecretStr

import hotparams
from hotparams.cli.values import UsageProblem, parse_assignments, parse_value
from tests.helpers import dead_port, dump_namespace, run_in_process
from tests.models import ChatParams

ROOT = Path(__file__).resolve().parent.parent
HOTPARAMS = str(Path(sys.executable).parent / "hotparams")
SECRET = "sk-live-TOPSECRET-42"


class VaultParams(BaseModel):
    """Secrets whose bad values must never be echoed."""

    pin: int = Field(1234, ge=1000, le=9999, json_schema_extra={"secret": True})
    token: SecretStr = SecretStr("tok-default-SECRET")


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def run_cli(url: str, *args: str, **env: str) -> Result:
    """``hotparams ARGS`` run in this process (what the console script runs:
    ``hotparams.cli.app.run``), with its own environment, standard streams
    and working directory for the call; :func:`run_cli_process` runs the
    real console script, for the tests where the process is the point."""
    code, out, err = run_in_process(
        list(args), env={"HOTPARAMS_URL": url, "COLUMNS": "100", **env}, cwd=ROOT
    )
    return Result(code, out, err)


def run_cli_process(url: str, *args: str, **env: str) -> Result:
    """``hotparams ARGS`` as a process of its own (the installed console script)."""
    environ = {**os.environ, "HOTPARAMS_URL": url, "COLUMNS": "100", **env}
    proc = subprocess.run(
        [HOTPARAMS, *args], capture_output=True, text=True, env=environ, cwd=ROOT, timeout=30
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def dump_all(client: redis.Redis) -> dict[str, Any]:
    """Every hotparams key of the server with its content."""
    names = {k.decode().split("{", 1)[1].split("}", 1)[0] for k in client.scan_iter("hp:*")}
    return {ns: dump_namespace(client, ns) for ns in sorted(names)}


@pytest.fixture
def store(redis_url: str) -> Iterator[hotparams.Bus]:
    """The session server, emptied, with "chat" (ChatParams) and "vault" registered."""
    b = hotparams.connect(redis_url)
    b.register("chat", ChatParams, author="setup")
    b.register("vault", VaultParams, author="setup")
    yield b
    b.close()


# ------------------------------------------------------------------ parsing (no I/O)


def test_values_parse_by_the_field_type_like_hp_set() -> None:
    rules = {"fields": hotparams.ParamSchema.of(ChatParams).rules["fields"]}
    f = rules["fields"]
    assert parse_value("gpt-4o", f["model"]) == "gpt-4o"
    assert parse_value('Say "hi"', f["system_prompt"]) == 'Say "hi"'
    assert parse_value('"  padded "', f["system_prompt"]) == "  padded "
    assert parse_value("0.9", f["temperature"]) == 0.9
    assert parse_value("1024", f["max_tokens"]) == 1024
    assert parse_value('["\\n"]', f["stop"]) == ["\n"]
    assert parse_value("false", f["streaming"]) is False
    assert parse_value("null", f["fallback_model"]) is None
    assert parse_value('"null"', f["fallback_model"]) == "null"
    assert parse_value("null", f["system_prompt"]) == "null"
    with pytest.raises(ValueError, match="expected a number, got 'NaN'"):
        parse_value("NaN", f["temperature"])
    with pytest.raises(ValueError, match="expected true or false"):
        parse_value("yes", f["streaming"])
    assert parse_assignments("chat", ["model=a=b", "tone=plain"], rules) == {
        "model": "a=b",
        "tone": "plain",
    }
    with pytest.raises(UsageProblem, match="not key=value"):
        parse_assignments("chat", ["temperature"], rules)
    with pytest.raises(UsageProblem, match="given twice"):
        parse_assignments("chat", ["tone=plain", "tone=friendly"], rules)
    with pytest.raises(hotparams.InvalidParams) as info:
        parse_assignments("chat", ["colour=red", "max_tokens=many"], rules)
    assert info.value.errors == {
        "colour": "unknown field",
        "max_tokens": "expected a whole number, got 'many'",
    }


# ------------------------------------------------------------------ verbs


def test_init_registers_a_model_idempotently(redis_url: str) -> None:
    first = run_cli(redis_url, "init", "chat", "--schema", "tests.models:ChatParams")
    assert (first.code, first.out) == (0, "chat: created at version 1 (schema revision 1)\n")
    again = run_cli(redis_url, "init", "chat", "--schema", "tests.models:ChatParams", "--json")
    assert again.code == 0
    assert again.json() == {
        "namespace": "chat",
        "version": 1,
        "schema_rev": 1,
        "created": False,
        "new_revision": False,
        "kept_rules": [],
    }
    with hotparams.connect(redis_url) as b:
        assert b.get("chat", ChatParams).params == ChatParams()
        (entry,) = b.history("chat")
        assert entry.op == "init" and entry.source.startswith("cli:")


def test_set_parses_values_by_the_stored_schema_and_shows_the_change(
    store: hotparams.Bus, redis_url: str
) -> None:
    r = run_cli(
        redis_url,
        "set",
        "chat",
        "temperature=0.9",
        "model=gpt-4o",
        'stop=["\\n"]',
        'system_prompt=Say "hi" [bold]',
        "fallback_model=null",
        "streaming=false",
        "--author",
        "ana",
        "--reason",
        "warmer replies",
    )
    assert r.code == 0, r.err
    lines = [" ".join(line.split()) for line in r.out.splitlines()]
    assert lines[0] == "chat: version 1 -> 2"
    assert "temperature 0.7 -> 0.9" in lines
    assert 'stop [] -> ["\\n"]' in lines
    assert 'system_prompt "You are a helpful assistant." -> "Say \\"hi\\" [bold]"' in lines
    params = store.get("chat", ChatParams).params
    assert (params.temperature, params.model, params.stop) == (0.9, "gpt-4o", ["\n"])
    assert (params.system_prompt, params.streaming) == ('Say "hi" [bold]', False)
    last = store.history("chat", limit=1)[0]
    assert (last.version, last.author, last.reason) == (2, "ana", "warmer replies")
    assert last.source.startswith("cli:")

    # a change that changes nothing writes nothing; --json for scripts
    before = dump_all(store.client)
    same = run_cli(redis_url, "set", "chat", "temperature=0.9", "--json")
    assert same.code == 0
    assert same.json() == {
        "namespace": "chat",
        "version": 2,
        "previous": 2,
        "changed": False,
        "changes": {},
    }
    assert dump_all(store.client) == before


def test_author_defaults_to_the_os_user(store: hotparams.Bus, redis_url: str) -> None:
    # a process of its own: the OS user is read once per process
    r = run_cli_process(redis_url, "set", "chat", "tone=friendly", LOGNAME="night-owl")
    assert r.code == 0, r.err
    assert store.history("chat", limit=1)[0].author == "night-owl"
    assert getpass.getuser()  # the default really is the OS user's name


def test_read_verbs_mask_secrets_in_tables_and_json(store: hotparams.Bus, redis_url: str) -> None:
    store.set("chat", {"api_key": SECRET, "temperature": 1.2}, author="ana")
    store.set("chat", {"model": "claude-sonnet"}, author="bob", reason="try claude")
    outputs = {
        "get": run_cli(redis_url, "get", "chat"),
        "get1": run_cli(redis_url, "get", "chat", "--version", "1", "--json"),
        "getj": run_cli(redis_url, "get", "chat", "--json"),
        "history": run_cli(redis_url, "history", "chat"),
        "historyj": run_cli(redis_url, "history", "chat", "--limit", "2", "--json"),
        "diff": run_cli(redis_url, "diff", "chat", "1", "3"),
        "diffj": run_cli(redis_url, "diff", "chat", "1", "3", "--json"),
        "schema": run_cli(redis_url, "schema", "chat"),
        "schemaj": run_cli(redis_url, "schema", "chat", "--json"),
    }
    for name, r in outputs.items():
        assert r.code == 0, (name, r.err)
        assert SECRET not in r.out and "sk-test-default" not in r.out, name
        assert r.err == "", name

    get = outputs["getj"].json()
    assert (get["namespace"], get["version"], get["schema_rev"]) == ("chat", 3, 1)
    expected = {**store.get("chat").values, "api_key": "******"}
    assert get["values"] == expected
    assert outputs["get1"].json()["values"]["temperature"] == 0.7
    table = {" ".join(line.split()) for line in outputs["get"].out.splitlines()}
    assert "api_key ****** ******" in table  # value, and the default it differs from
    assert "temperature 1.2 0.7" in table
    assert "max_tokens 512" in table

    history = outputs["historyj"].json()
    assert [(h["version"], h["op"], h["author"]) for h in history] == [
        (3, "set", "bob"),
        (2, "set", "ana"),
    ]
    assert history[0]["changes"] == {"model": {"old": "gpt-4o-mini", "new": "claude-sonnet"}}
    assert history[0]["epoch"] == store.head("chat").epoch
    assert history[1]["changes"]["api_key"] == {"old": "******", "new": "******"}
    assert "v3" in outputs["history"].out and '"try claude"' in outputs["history"].out

    assert outputs["diffj"].json() == {
        "namespace": "chat",
        "from": 1,
        "to": 3,
        "changes": {
            "api_key": {"old": "******", "new": "******"},
            "model": {"old": "gpt-4o-mini", "new": "claude-sonnet"},
            "temperature": {"old": 0.7, "new": 1.2},
        },
    }
    assert "temperature 0.7 -> 1.2" in " ".join(outputs["diff"].out.split())

    schema = outputs["schemaj"].json()
    assert schema["model"] == "tests.models:ChatParams"
    assert schema["fields"]["api_key"]["default"] == "******"
    assert schema["fields"]["temperature"] | {} == {
        "types": ["number"],
        "min": 0,
        "max": 2,
        "default": 0.7,
    }
    rows = {" ".join(line.split()) for line in outputs["schema"].out.splitlines()}
    assert "temperature number 0.7 >= 0, <= 2" in rows
    assert "api_key string ****** secret" in rows


def test_unset_and_rollback_write_new_versions(store: hotparams.Bus, redis_url: str) -> None:
    store.set("chat", {"temperature": 1.5, "tone": "friendly"})
    r = run_cli(redis_url, "unset", "chat", "temperature", "--reason", "back to default")
    assert r.code == 0, r.err
    assert " ".join(r.out.split()) == "chat: version 2 -> 3 temperature 1.5 -> 0.7"
    r = run_cli(redis_url, "rollback", "chat", "1", "--author", "ana", "--json")
    assert r.code == 0, r.err
    assert r.json() == {  # the admin API's answer to a rollback (it had its target only)
        "namespace": "chat",
        "version": 4,
        "previous": 3,
        "changed": True,
        "changes": {"tone": {"old": "friendly", "new": "plain"}},
        "target": 1,
    }
    assert store.get("chat", ChatParams).params == ChatParams()
    last = store.history("chat", limit=1)[0]
    assert (last.op, last.target, last.author) == ("rollback", 1, "ana")


@pytest.mark.parametrize("run", [run_cli, run_cli_process], ids=["in-process", "console-script"])
def test_help_lists_the_verbs_and_no_arguments_is_a_usage_error(
    redis_url: str, run: Callable[..., Result]
) -> None:
    r = run(redis_url, "--help")
    assert r.code == 0
    for verb in ("init", "get", "set", "unset", "history", "diff", "rollback", "watch", "schema"):
        assert verb in r.out
    assert run(redis_url).code == 2


# ------------------------------------------------------------------ bad input

BAD_INPUT = [
    # (id, argv, exit code, text of the one stderr line)
    ("unknown-namespace", ["set", "nope", "a=1"], 6, "namespace 'nope' does not exist"),
    ("unknown-namespace-get", ["get", "nope"], 6, "namespace 'nope' does not exist"),
    ("unknown-namespace-watch", ["watch", "nope"], 6, "namespace 'nope' does not exist"),
    ("unknown-field", ["set", "chat", "colour=red"], 3, "colour: unknown field"),
    ("unset-unknown-field", ["unset", "chat", "colour"], 3, "colour: unknown field"),
    ("no-equals", ["set", "chat", "temperature"], 2, "'temperature' is not key=value"),
    ("empty-key", ["set", "chat", "=1"], 2, "'=1' is not key=value"),
    ("not-a-number", ["set", "chat", "temperature=warm"], 3, "expected a number, got 'warm'"),
    ("not-a-bool", ["set", "chat", "streaming=yes"], 3, "streaming: expected true or false"),
    ("bad-json-list", ["set", "chat", "stop=[1,"], 3, "stop: expected a JSON array"),
    ("out-of-range", ["set", "chat", "temperature=5"], 3, "temperature: must be <= 2 (got 5)"),
    ("enum", ["set", "chat", "model=gpt-5"], 3, 'model: must be one of "gpt-4o"'),
    ("too-many-items", ["set", "chat", 'stop=["a","b","c","d","e"]'], 3, "at most 4 items"),
    (
        "cross-field-with-schema",
        ["set", "chat", "quiet_from=5", "--schema", "tests.models:ChatParams"],
        3,
        "quiet_from must be <= quiet_to",
    ),
    (
        "conflict",
        ["set", "chat", "max_tokens=1024", "--expect-version", "7"],
        4,
        "expected version 7, current is 1",
    ),
    ("no-such-version", ["get", "chat", "--version", "99"], 6, "version 99 of 'chat'"),
    ("rollback-no-such-version", ["rollback", "chat", "99"], 6, "version 99 of 'chat'"),
    ("bad-namespace", ["get", "bad ns"], 2, "invalid namespace 'bad ns'"),
    ("bad-flag", ["get", "chat", "--bogus"], 2, "No such option: --bogus"),
    ("bad-limit", ["history", "chat", "--limit", "x"], 2, "Invalid value for '--limit'"),
    (
        "missing-module",
        ["init", "chat2", "--schema", "no_such_module:Model"],
        2,
        "cannot import 'no_such_module'",
    ),
    (
        "missing-attribute",
        ["init", "chat2", "--schema", "tests.models:Nope"],
        2,
        "module 'tests.models' has no attribute 'Nope'",
    ),
    ("schema-without-colon", ["init", "chat2", "--schema", "tests.models"], 2, "module:Model"),
    (
        "not-a-model",
        ["init", "chat2", "--schema", "tests.models:Tone"],
        3,
        "Tone is not a pydantic model class",
    ),
    ("secret-out-of-range", ["set", "vault", "pin=12"], 3, "pin: must be >= 1000 (got ******)"),
    (
        "secret-not-json",
        ["set", "vault", "pin=98x7"],
        3,
        "pin: expected a whole number, got ******",
    ),
]


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [case[1:] for case in BAD_INPUT],
    ids=[case[0] for case in BAD_INPUT],
)
def test_bad_input_exits_with_its_code_and_one_line_and_writes_nothing(
    store: hotparams.Bus, redis_url: str, argv: list[str], code: int, message: str
) -> None:
    before = dump_all(store.client)
    r = run_cli(redis_url, *argv)
    assert r.code == code, r.err
    assert r.out == ""
    assert r.err.count("\n") == 1 and r.err.startswith("hotparams: error: "), r.err
    assert message in r.err
    assert "Traceback" not in r.err
    for arg in argv:  # a secret's bad value is never echoed
        if arg.startswith("pin="):
            assert arg[4:] not in r.err
    assert dump_all(store.client) == before


def test_unreachable_redis_fails_fast_with_exit_5_and_no_password(redis_url: str) -> None:
    port = dead_port()
    started = time.monotonic()
    bad_url = run_cli(redis_url, "--url", "http://example.com", "get", "chat")
    startup = time.monotonic() - started  # a call that ends before connecting: the baseline
    assert bad_url.code == 2 and "invalid Redis URL" in bad_url.err
    started = time.monotonic()
    r = run_cli(redis_url, "--url", f"redis://ops:hunter2@127.0.0.1:{port}/0", "get", "chat")
    assert r.code == 5
    assert r.err.startswith(
        f"hotparams: error: Redis unreachable at redis://ops:***@127.0.0.1:{port}"
    )
    assert r.err.count("\n") == 1 and "hunter2" not in r.err
    env_url = run_cli(f"redis://127.0.0.1:{port}/0", "set", "chat", "temperature=1")
    assert env_url.code == 5 and f"127.0.0.1:{port}" in env_url.err
    # no long retry loop: the two calls cost little more than starting the CLI twice
    assert time.monotonic() - started < 2 * startup + 5
