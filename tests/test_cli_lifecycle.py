"""``hotparams list``, ``configure``, ``migrate`` and ``delete`` in subprocesses,
against a real redis-server."""

from __future__ import annotations

import hotparams

from .helpers import dump_namespace
from .models import ChatParams, ChatParamsV1
from .test_cli import dump_all, run_cli


def test_list_shows_every_namespace(redis_url: str) -> None:
    assert run_cli(redis_url, "list").out.strip() == "no namespaces"
    bus = hotparams.connect(redis_url)
    bus.register("chat", ChatParams, author="ana")
    bus.register("pair", ChatParamsV1)
    bus.set("pair", {"tokens": 5}, author="bob")
    shown = run_cli(redis_url, "list")
    assert shown.code == 0, shown.err
    lines = [line.split() for line in shown.out.splitlines() if line.strip()]
    assert [line[0] for line in lines[-2:]] == ["chat", "pair"]
    doc = run_cli(redis_url, "list", "--json").json()
    assert [(d["namespace"], d["version"], d["last_author"], d["workers"]) for d in doc] == [
        ("chat", 1, "ana", 0),
        ("pair", 2, "bob", 0),
    ]
    assert doc[0]["epoch"] == bus.head("chat").epoch
    bus.close()


def test_configure_changes_settings_within_caps_and_audits(redis_url: str) -> None:
    bus = hotparams.connect(redis_url)
    bus.register("chat", ChatParams)
    shown = run_cli(redis_url, "configure", "chat", "--json").json()
    assert (shown["retention"], shown["audit_maxlen"]) == (100, 10_000)
    done = run_cli(redis_url, "configure", "chat", "--retention", "20", "--author", "ops", "--json")
    assert done.code == 0, done.err
    assert done.json()["retention"] == 20
    change = bus.history("chat", limit=1)[0]
    assert (change.op, change.author) == ("configure", "ops")
    history = run_cli(redis_url, "history", "chat", "--json", "--limit", "1").json()
    assert history[0]["settings"] == {"retention": {"old": 100, "new": 20}}
    before = dump_all(bus.client)
    refused = run_cli(redis_url, "configure", "chat", "--max-value-bytes", "536870912")
    assert refused.code == 2
    assert refused.err.startswith("hotparams: error: chat: max_value_bytes must be an integer")
    assert "Traceback" not in refused.err
    assert dump_all(bus.client) == before
    bus.close()


def test_migrate_shows_the_plan_refuses_what_would_not_fit_and_applies(redis_url: str) -> None:
    bus = hotparams.connect(redis_url)
    bus.register("chat", ChatParamsV1)
    bus.set("chat", {"temperature": 1.5, "tokens": 1024})
    before = dump_namespace(bus.client, "chat")
    args = ["migrate", "chat", "--schema", "tests.models:ChatParamsV2"]
    args += ["--drop", "legacy", "--rename", "tokens=max_tokens"]
    dry = run_cli(redis_url, *args, "--dry-run")
    assert dry.code == 3  # temperature 1.5 would not fit le=1
    assert "would not fit" in dry.out and "renamed" in dry.out and "dropped" in dry.out
    assert dry.err.startswith("hotparams: error: invalid parameters for 'chat': temperature")
    refused = run_cli(redis_url, *args)
    assert refused.code == 3
    assert dump_namespace(bus.client, "chat") == before
    bus.set("chat", {"temperature": 0.5})
    plan = run_cli(redis_url, *args, "--dry-run", "--json")
    assert plan.code == 0, plan.err
    assert {f["field"]: f["action"] for f in plan.json()["fields"]} == {
        "legacy": "dropped",
        "temperature": "kept",
        "tokens": "renamed",
    }
    done = run_cli(redis_url, *args, "--reason", "v2", "--json")
    assert done.code == 0, done.err
    assert done.json()["applied"] is True
    assert bus.get("chat").values == {"temperature": 0.5, "max_tokens": 1024}
    assert bus.history("chat", limit=1)[0].op == "migrate"
    bad = run_cli(
        redis_url, "migrate", "chat", "--schema", "tests.models:ChatParamsV2", "--rename", "tokens"
    )
    assert bad.code == 2 and "--rename must be OLD=NEW" in bad.err
    bus.close()


def test_delete_needs_yes_and_leaves_a_tombstone(redis_url: str) -> None:
    bus = hotparams.connect(redis_url)
    bus.register("chat", ChatParams)
    before = dump_all(bus.client)
    refused = run_cli(redis_url, "delete", "chat")
    assert refused.code == 2 and "needs --yes" in refused.err
    assert dump_all(bus.client) == before
    done = run_cli(redis_url, "delete", "chat", "--yes", "--author", "ana", "--reason", "old")
    assert done.code == 0, done.err
    assert "deleted at version 1" in done.out
    gone = run_cli(redis_url, "get", "chat")
    assert gone.code == 6
    assert "was deleted by ana" in gone.err and "(old)" in gone.err
    assert run_cli(redis_url, "list", "--json").json() == []
    again = run_cli(redis_url, "delete", "chat", "--yes")
    assert again.code == 6
    bus.close()


def test_init_says_which_stored_rules_it_kept(redis_url: str) -> None:
    bus = hotparams.connect(redis_url)
    bus.register("chat", ChatParamsV1)
    before = dump_namespace(bus.client, "chat")
    shown = run_cli(redis_url, "init", "chat", "--schema", "tests.models:ChatParamsV2")
    assert shown.code == 0, shown.err
    assert "the stored rules of temperature differ from the model's and were kept" in shown.out
    assert "hotparams migrate chat --schema tests.models:ChatParamsV2" in shown.out
    doc = run_cli(redis_url, "init", "chat", "--schema", "tests.models:ChatParamsV2", "--json")
    assert doc.json()["kept_rules"] == ["temperature"]
    after = dump_namespace(bus.client, "chat")
    assert after["hp:{chat}:meta"]["schema_rev"] == "2"  # max_tokens added, nothing else
    assert before["hp:{chat}:v:1"] == after["hp:{chat}:v:1"]
    assert bus.get("chat").values == {
        "temperature": 0.7,
        "legacy": "x",
        "tokens": 256,
        "max_tokens": 512,
    }
    bus.close()
