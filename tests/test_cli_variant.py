"""``hotparams variant set|list|remove|which`` against a real redis-server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import hotparams
from hotparams.cli import run
from tests.models import ChatParams
from tests.test_cli import VaultParams, dump_all, run_cli

SECRET = "sk-variant-TOPSECRET-7"


@pytest.fixture
def store(redis_url: str) -> Iterator[hotparams.Bus]:
    b = hotparams.connect(redis_url)
    b.register("chat", ChatParams, author="setup")
    b.register("vault", VaultParams, author="setup")
    yield b
    b.close()


def _lines(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.splitlines()]


def test_variant_set_merges_like_set_and_list_which_remove_show_it(
    store: hotparams.Bus, redis_url: str
) -> None:
    store.set("chat", {"api_key": SECRET})
    # create, then widen and add an override: the first override stays
    r = run_cli(redis_url, "variant", "set", "chat", "cool", "temperature=0.3", "--percent", "10")
    assert r.code == 0, r.err
    assert _lines(r.out) == [
        "chat: version 2 -> 3 (variant cool created)",
        "percent 10%",
        "allow-list 0 users",
        "temperature 0.3",
    ]
    r = run_cli(
        redis_url, "variant", "set", "chat", "cool", "model=gpt-4o", "--percent", "20",
        "--author", "ana", "--reason", "wider",
    )  # fmt: skip
    assert r.code == 0, r.err
    assert _lines(r.out) == [
        "chat: version 3 -> 4 (variant cool changed)",
        "percent 10% -> 20%",
        'model (base) -> "gpt-4o"',
    ]
    cool = store.variants("chat").variants["cool"]
    assert (dict(cool.overrides), cool.percent) == ({"temperature": 0.3, "model": "gpt-4o"}, 20)
    last = store.history("chat", limit=1)[0]
    assert (last.op, last.author, last.reason) == ("variant", "ana", "wider")
    assert last.source.startswith("cli:")

    # an allow-list with a secret override; then take one user off, drop an override
    r = run_cli(
        redis_url, "variant", "set", "chat", "vip", f"api_key={SECRET}-vip", "tone=friendly",
        "--user", "alice", "--user", "bob", "--json",
    )  # fmt: skip
    assert r.code == 0, r.err
    assert r.json() == {
        "namespace": "chat",
        "version": 5,
        "previous": 4,
        "changed": True,
        "variant": "vip",
        "before": None,
        "after": {
            "percent": 0.0,
            "users": ["alice", "bob"],
            "overrides": {"api_key": "******", "tone": "friendly"},
            "buckets": [],
        },
    }
    r = run_cli(redis_url, "variant", "set", "chat", "vip", "--drop-user", "bob", "--unset", "tone")
    assert r.code == 0, r.err
    assert _lines(r.out) == [
        "chat: version 5 -> 6 (variant vip changed)",
        "allow-list 2 users -> 1 user",
        'tone "friendly" -> (base)',
    ]
    vip = store.variants("chat").variants["vip"]
    assert (dict(vip.overrides), vip.users) == ({"api_key": f"{SECRET}-vip"}, {"alice"})

    variants = store.variants("chat")
    store.record_exposures("chat", variants.salt, {"cool": 30, "vip": 10, None: 60})
    in_cool = next(u for u in (f"user-{i}" for i in range(1000)) if variants.assign("chat", u))
    outputs = {
        "list": run_cli(redis_url, "variant", "list", "chat"),
        "listj": run_cli(redis_url, "variant", "list", "chat", "--json"),
        "alice": run_cli(redis_url, "variant", "which", "chat", "alice"),
        "cool": run_cli(redis_url, "variant", "which", "chat", in_cool, "--json"),
        "history": run_cli(redis_url, "history", "chat", "--limit", "1"),
    }
    for name, r in outputs.items():
        assert (r.code, r.err) == (0, ""), name
        assert SECRET not in r.out, name
    rows = _lines(outputs["list"].out)
    assert rows[0] == "chat version 6"
    assert 'cool 20% 0 model="gpt-4o" 30 (30.0%)' in rows
    assert "temperature=0.3" in rows  # the second override of cool, on its own line
    assert "vip 0% 1 api_key=****** 10 (10.0%)" in rows
    assert "(base) 80% 60 (60.0%)" in rows
    listed = outputs["listj"].json()
    assert listed["salt"] == variants.salt
    assert listed["base"] == {"percent": 80.0, "exposures": 60}
    assert listed["variants"]["vip"] == {
        "percent": 0.0,
        "users": ["alice"],
        "overrides": {"api_key": "******"},
        "buckets": [],
        "exposures": 10,
    }
    assert listed["variants"]["cool"]["exposures"] == 30
    rows = _lines(outputs["alice"].out)
    assert rows[0] == "chat version 6 user 'alice' gets variant vip (on its allow-list)"
    assert "api_key ****** ******" in rows  # value, and the base it overrides
    assert "temperature 0.7" in rows
    which = outputs["cool"].json()
    assert (which["variant"], which["allow_list"]) == ("cool", False)
    assert 0 <= which["bucket"] < 10_000
    assert which["overrides"] == {"model": "gpt-4o", "temperature": 0.3}
    assert which["values"] == {
        **store.get("chat").values,
        "api_key": "******",
        "model": "gpt-4o",
        "temperature": 0.3,
    }
    assert _lines(outputs["history"].out)[1] == "variants: cool 20%, vip 0% + 1 user"

    # remove: its users get the base; "which" then says so
    r = run_cli(redis_url, "variant", "remove", "chat", "cool", "--reason", "done")
    assert r.code == 0, r.err
    assert _lines(r.out) == [
        "chat: version 6 -> 7 (variant cool removed)",
        "its users get the base values",
    ]
    assert set(store.variants("chat").variants) == {"vip"}
    r = run_cli(redis_url, "variant", "which", "chat", in_cool)
    assert r.code == 0, r.err
    assert f"user '{in_cool}' gets the base (bucket" in _lines(r.out)[0]
    r = run_cli(redis_url, "variant", "remove", "chat", "vip", "--json")
    assert r.code == 0, r.err
    assert (r.json()["after"], r.json()["before"]["overrides"]) == (None, {"api_key": "******"})
    r = run_cli(redis_url, "variant", "list", "chat")
    assert _lines(r.out) == ["chat version 8", "no variants: every user gets the base values"]


BAD_INPUT = [
    # (id, argv, exit code, text of the one stderr line)
    ("remove-unknown", ["remove", "chat", "nope"], 6, "no variant named 'nope' in 'chat'"),
    ("unset-on-unknown", ["set", "chat", "nope", "--unset", "tone"], 6, "no variant named 'nope'"),
    ("which-unknown-ns", ["which", "nope", "alice"], 6, "namespace 'nope' does not exist"),
    ("list-unknown-ns", ["list", "nope"], 6, "namespace 'nope' does not exist"),
    ("set-unknown-ns", ["set", "nope", "a", "--percent", "1"], 6, "namespace 'nope' does not"),
    ("percent-high", ["set", "chat", "b", "--percent", "150"], 3, "percent: must be a number"),
    ("percent-negative", ["set", "chat", "b", "--percent", "-1"], 3, "from 0 to 100"),
    ("percent-nan", ["set", "chat", "b", "--percent", "nan"], 3, "from 0 to 100"),
    ("percent-not-free", ["set", "chat", "b", "--percent", "40"], 3, "only 30% of users are free"),
    ("percent-text", ["set", "chat", "b", "--percent", "half"], 2, "Invalid value for '--percent'"),
    ("out-of-range", ["set", "chat", "b", "temperature=9"], 3, "variant b temperature: must be"),
    ("not-a-number", ["set", "chat", "b", "temperature=warm"], 3, "expected a number, got 'warm'"),
    ("unknown-field", ["set", "chat", "b", "colour=red"], 3, "colour: unknown field"),
    ("unset-unknown-field", ["set", "chat", "vip", "--unset", "colour"], 3, "colour: unknown"),
    (
        "cross-field-with-schema",
        ["set", "chat", "b", "quiet_from=5", "--schema", "tests.models:ChatParams"],
        3,
        "variant b: quiet_from must be <= quiet_to",
    ),
    (
        "user-on-two-allow-lists",
        ["set", "chat", "b", "--user", "carol", "--user", "alice"],
        3,
        "'alice' is already on the allow-list of variant 'vip'",
    ),
    (
        "conflict",
        ["set", "chat", "vip", "--percent", "1", "--expect-version", "1"],
        4,
        "expected version 1, current is 2",
    ),
    ("remove-conflict", ["remove", "chat", "vip", "--expect-version", "1"], 4, "current is 2"),
    ("bad-name", ["set", "chat", "b c", "--percent", "1"], 2, "variant name 'b c': must be"),
    ("nothing-to-change", ["set", "chat", "vip"], 2, "nothing to change"),
    ("no-equals", ["set", "chat", "b", "temperature"], 2, "'temperature' is not key=value"),
    ("set-and-unset", ["set", "chat", "vip", "tone=plain", "--unset", "tone"], 2, "both set"),
    ("add-and-drop", ["set", "chat", "vip", "--user", "x", "--drop-user", "x"], 2, "both added"),
    ("bad-timeout", ["set", "chat", "vip", "--percent", "5", "--wait", "--timeout", "-1"], 2, ""),
    ("secret-out-of-range", ["set", "vault", "v", "pin=12"], 3, "pin: must be >= 1000 (got ***"),
    ("secret-not-json", ["set", "vault", "v", "pin=98x7"], 3, "whole number, got ******"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [case[1:] for case in BAD_INPUT],
    ids=[case[0] for case in BAD_INPUT],
)
def test_bad_variant_input_exits_with_its_code_and_one_line_and_writes_nothing(
    store: hotparams.Bus, redis_url: str, argv: list[str], code: int, message: str
) -> None:
    store.set_variant("chat", "vip", {"model": "gpt-4o"}, percent=70, users=["alice"])  # v2
    before = dump_all(store.client)
    r = run_cli(redis_url, "variant", *argv)
    assert r.code == code, r.err
    assert r.out == ""
    assert r.err.count("\n") == 1 and r.err.startswith("hotparams: error: "), r.err
    assert message in r.err
    assert "Traceback" not in r.err
    for arg in argv:  # a secret's bad value is never echoed
        if arg.startswith("pin="):
            assert arg[4:] not in r.err
    assert dump_all(store.client) == before


def test_variant_set_merges_with_a_concurrent_change_instead_of_losing_it(
    store: hotparams.Bus,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The read-merge-write of ``variant set`` is compare-and-set: a change
    landing between its read and its write makes it read again and merge."""
    store.set_variant("chat", "cool", {"temperature": 0.3}, percent=10)  # v2
    original = hotparams.Bus.set_variant
    attempts: list[int | None] = []

    def racing(
        self: hotparams.Bus, namespace: str, name: str, overrides: Any = None, **kw: Any
    ) -> int:
        attempts.append(kw.get("expect_version"))
        if len(attempts) == 1:  # another operator adds an override meanwhile
            with hotparams.connect(redis_url) as other:
                original(other, "chat", "cool", {"temperature": 0.3, "tone": "friendly"})
        return original(self, namespace, name, overrides, **kw)

    monkeypatch.setattr(hotparams.Bus, "set_variant", racing)
    assert run(["--url", redis_url, "variant", "set", "chat", "cool", "model=gpt-4o"]) == 0
    assert attempts == [2, 3]  # conflicted at 2, merged with version 3
    cool = store.variants("chat").variants["cool"]
    assert dict(cool.overrides) == {"temperature": 0.3, "tone": "friendly", "model": "gpt-4o"}
    assert "version 3 -> 4" in capsys.readouterr().out

    # with --expect-version the operator asked for exactly that version: no retry
    attempts.clear()
    argv = [
        "--url",
        redis_url,
        "variant",
        "set",
        "chat",
        "cool",
        "tone=plain",
        "--expect-version",
        "4",
    ]
    assert run(argv) == 4
    assert attempts == [4]
    assert store.head("chat").version == 5  # only the concurrent change
    assert "expected version 4, current is 5" in capsys.readouterr().err
