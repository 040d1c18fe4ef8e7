"""Quick edits with the real ``redis-cli`` (Debian's redis-tools): the FCALL path."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import redis

import hotparams
from hotparams.keys import keys_for
from hotparams.server import LocalRedis
from tests.helpers import dump_namespace, wait_until
from tests.models import ChatParams

from .conftest import need

REDIS_CLI = "/usr/bin/redis-cli" if shutil.which("/usr/bin/redis-cli") else "redis-cli"
SECRET = "sk-live-CLI-SECRET"


def redis_cli(server: LocalRedis, *args: str, raw: bool = False) -> str:
    """One redis-cli call; output as a person sees it at a terminal (or ``--raw``)."""
    mode = "--raw" if raw else "--no-raw"
    proc = subprocess.run(
        [REDIS_CLI, "-p", str(server.port), mode, *args],
        capture_output=True,
        text=True,
        timeout=10,
    )
    return proc.stdout + proc.stderr


@pytest.fixture
def chat(redis_url: str, redis_server: LocalRedis) -> Iterator[hotparams.Bus]:
    need(shutil.which(REDIS_CLI) is not None, "redis-cli (redis-tools)")
    bus = hotparams.connect(redis_url)
    bus.register("chat", ChatParams)
    yield bus
    bus.close()


def test_hp_set_takes_plain_strings_and_json_and_reaches_subscribers(
    chat: hotparams.Bus, redis_server: LocalRedis
) -> None:
    events: list[dict[str, Any]] = []
    pubsub = chat.client.pubsub()  # type: ignore[no-untyped-call]  # what workers read
    pubsub.ssubscribe(keys_for("chat").channel)
    assert wait_until(lambda: pubsub.get_message(timeout=0.1) is not None)

    reply = redis_cli(
        redis_server,
        *("FCALL", "hp_set", "1", "chat"),
        *("model", "gpt-4o", "temperature", "0.9", "system_prompt", "Be brief, be kind."),
        *("stop", '["\\n", "###"]', "fallback_model", "null", "streaming", "false"),
        *("api_key", SECRET, "@author", "bob", "@reason", "night shift"),
    )
    assert reply == "(integer) 2\n"

    params = chat.get("chat", ChatParams).params
    assert (params.model, params.temperature, params.system_prompt) == (
        "gpt-4o",
        0.9,
        "Be brief, be kind.",
    )
    assert (params.stop, params.fallback_model, params.streaming) == (["\n", "###"], None, False)
    assert params.api_key.get_secret_value() == SECRET
    entry = chat.history("chat", limit=1)[0]
    assert (entry.version, entry.author, entry.reason, entry.source) == (
        2,
        "bob",
        "night shift",
        "redis-cli",
    )
    assert entry.changes["api_key"].new == "******"

    def got_event() -> bool:
        message = pubsub.get_message(timeout=0.1)
        if message and message["type"] == "smessage":
            events.append(json.loads(message["data"]))
        return bool(events)

    assert wait_until(got_event)
    assert (events[0]["v"], events[0]["prev"], events[0]["changed"]["model"]) == (2, 1, "gpt-4o")
    assert events[0]["redacted"] == ["api_key"] and SECRET not in json.dumps(events[0])
    pubsub.close()

    # a quoted JSON string is decoded; a string field's "null" is text unless nullable
    assert redis_cli(redis_server, "FCALL", "hp_set", "1", "chat", "model", '"claude-sonnet"') == (
        "(integer) 3\n"
    )
    assert chat.get("chat", ChatParams).params.model == "claude-sonnet"


def test_hp_unset_hp_rollback_and_the_read_functions(
    chat: hotparams.Bus, redis_server: LocalRedis
) -> None:
    chat.set("chat", {"temperature": 1.5, "api_key": SECRET, "tone": "friendly"})
    assert redis_cli(redis_server, "FCALL", "hp_unset", "1", "chat", "temperature") == (
        "(integer) 3\n"
    )
    assert chat.get("chat", ChatParams).params.temperature == 0.7
    out = redis_cli(redis_server, "FCALL", "hp_rollback", "1", "chat", "1", "@author", "bob")
    assert out == "(integer) 4\n"
    assert chat.get("chat", ChatParams).params == ChatParams()
    entry = chat.history("chat", limit=1)[0]
    assert (entry.op, entry.target, entry.source, entry.author) == (
        "rollback",
        1,
        "redis-cli",
        "bob",
    )

    chat.set("chat", {"api_key": SECRET})
    shown = json.loads(redis_cli(redis_server, "FCALL_RO", "hp_show", "1", "chat", raw=True))
    assert shown["version"] == 5 and shown["values"]["api_key"] == "******"
    assert shown["values"]["temperature"] == 0.7

    lines = redis_cli(redis_server, "FCALL_RO", "hp_history", "1", "chat", "3", raw=True)
    docs = [json.loads(line) for line in lines.splitlines()]
    assert [(d["v"], d["op"]) for d in docs] == [(5, "set"), (4, "rollback"), (3, "unset")]
    assert docs[1]["target"] == 1 and docs[1]["author"] == "bob"
    assert docs[2]["changes"] == {"temperature": [1.5, 0.7]}
    assert docs[0]["changes"] == {"api_key": ["******", "******"]}
    everything = redis_cli(redis_server, "FCALL_RO", "hp_history", "1", "chat", raw=True)
    assert len(everything.splitlines()) == 5  # the default count (10) covers all 5
    assert SECRET not in lines

    head = redis_cli(redis_server, "FCALL_RO", "hp_head", "1", "chat").splitlines()
    assert head[0] == "1) (integer) 5" and head[3] == "4) (integer) 1"


BAD_FCALLS = [
    # (id, "function namespace arguments..." as a shell would split it, the error reply)
    ("out-of-range", "hp_set chat temperature 5", "HP_INVALID temperature: must be <= 2 (got 5)"),
    ("not-json", "hp_set chat max_tokens many", "HP_INVALID max_tokens: not valid JSON"),
    ("nan", "hp_set chat temperature NaN", "HP_INVALID temperature: not valid JSON"),
    ("infinite", "hp_set chat temperature 1e400", "temperature: numbers must be finite"),
    ("wrong-type", "hp_set chat streaming 1", "streaming: expected boolean, got integer"),
    ("float-for-int", "hp_set chat max_tokens 1.5", "max_tokens: expected integer, got number"),
    ("enum", "hp_set chat model gpt-5", 'HP_INVALID model: must be one of "gpt-4o"'),
    ("too-short", "hp_set chat system_prompt ''", "must be at least 1 characters (got 0)"),
    ("items", "hp_set chat stop '[1]'", "HP_INVALID stop: item 1: expected string, got integer"),
    (
        "unknown-field",
        "hp_set chat colour red temperature 3",
        "HP_INVALID colour: unknown field; temperature: must be <= 2 (got 3)",
    ),
    ("odd-arguments", "hp_set chat temperature", "HP_BADARG arguments must be field/value pairs"),
    ("no-fields", "hp_set chat @author bob", "HP_BADARG usage: FCALL hp_set 1 <namespace> <field>"),
    ("unknown-option", "hp_set chat tone plain @who me", "HP_BADARG unknown option @who"),
    ("bad-expect", "hp_set chat tone plain @expect one", "@expect must be a version number"),
    ("conflict", "hp_set chat tone friendly @expect 7", "HP_CONFLICT 7 1 (expected version 7"),
    ("unknown-namespace", "hp_set nope tone plain", "HP_NONS namespace nope does not exist"),
    ("bad-namespace", "hp_set 'no pe' tone plain", "HP_BADARG namespace: must be 1-64 characters"),
    ("unset-unknown", "hp_unset chat colour", "HP_INVALID colour: unknown field"),
    ("unset-nothing", "hp_unset chat", "HP_BADARG usage: FCALL hp_unset 1 <namespace> <field>"),
    ("rollback-missing", "hp_rollback chat 9", "HP_NOVERSION version 9 of chat is not retained"),
    ("rollback-usage", "hp_rollback chat", "HP_BADARG usage: FCALL hp_rollback 1 <namespace>"),
    ("get-bad-version", "hp_get chat x", "HP_BADARG version must be a number"),
    ("history-bad-count", "hp_history chat 0", "HP_BADARG count must be a positive integer"),
    ("show-unknown", "hp_show nope", "HP_NONS namespace nope does not exist"),
]


@pytest.mark.parametrize(
    ("call", "error"), [c[1:] for c in BAD_FCALLS], ids=[c[0] for c in BAD_FCALLS]
)
def test_bad_redis_cli_edits_are_error_replies_that_change_nothing(
    chat: hotparams.Bus, redis_server: LocalRedis, call: str, error: str
) -> None:
    client: redis.Redis = chat.client
    before = {ns: dump_namespace(client, ns) for ns in ("chat", "nope")}
    function, namespace, *args = shlex.split(call)
    out = redis_cli(redis_server, "FCALL", function, "1", namespace, *args)
    assert out.startswith("(error) ") and out.count("\n") == 1, out
    assert error in out
    assert {ns: dump_namespace(client, ns) for ns in ("chat", "nope")} == before
