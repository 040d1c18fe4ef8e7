"""A/B variants: versioned, validated, sticky, monotonic when widened."""

from __future__ import annotations

import hashlib
import multiprocessing
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import redis

import hotparams
from hotparams.keys import keys_for
from hotparams.variants import BUCKETS, VariantSet, bucket_of

from .helpers import dump_namespace
from .models import ChatParams

USERS = [f"user-{i}" for i in range(100_000)]


@pytest.fixture
def chat(bus: hotparams.Bus) -> hotparams.Bus:
    bus.register("chat", ChatParams)
    return bus


def _assignments(variants: VariantSet) -> list[str | None]:
    return [variants.assign("chat", u) for u in USERS]


def test_a_variant_change_is_a_new_audited_version(chat: hotparams.Bus) -> None:
    v = chat.set_variant("chat", "cool", {"temperature": 0.3}, percent=10, author="ana")
    assert v == 2
    entry = chat.history("chat", limit=1)[0]
    assert (entry.op, entry.author, entry.version) == ("variant", "ana", 2)
    assert entry.variants is not None
    assert entry.variants["variants"]["cool"]["overrides"] == {"temperature": 0.3}
    snap = chat.get("chat")
    assert snap.variants.variants["cool"].percent == 10
    assert snap.params.temperature == 0.7  # the base is untouched


def test_the_observed_split_is_within_one_point_of_the_configured_one(
    chat: hotparams.Bus,
) -> None:
    chat.set_variant("chat", "a", {"temperature": 0.3}, percent=10)
    chat.set_variant("chat", "b", {"model": "gpt-4o"}, percent=25)
    got = _assignments(chat.variants("chat"))
    share = {name: got.count(name) * 100 / len(USERS) for name in ("a", "b", None)}
    assert abs(share["a"] - 10) < 1
    assert abs(share["b"] - 25) < 1
    assert abs(share[None] - 65) < 1


def test_widening_keeps_everyone_and_narrowing_only_removes(chat: hotparams.Bus) -> None:
    chat.set_variant("chat", "a", {"temperature": 0.3}, percent=10)
    chat.set_variant("chat", "b", {"temperature": 0.5}, percent=10)
    before = _assignments(chat.variants("chat"))
    chat.set_variant("chat", "a", percent=20)
    wider = _assignments(chat.variants("chat"))
    assert all(w == "a" for b, w in zip(before, wider, strict=True) if b == "a")
    assert all(w == "b" for b, w in zip(before, wider, strict=True) if b == "b")
    assert sum(w == "a" for w in wider) > sum(b == "a" for b in before) * 1.7
    chat.set_variant("chat", "a", percent=5)
    narrower = _assignments(chat.variants("chat"))
    assert all(b == "a" for b, n in zip(before, narrower, strict=True) if n == "a")
    assert [n for n in narrower if n == "b"] == [b for b in before if b == "b"]


def test_an_allow_list_wins_over_percentages(chat: hotparams.Bus) -> None:
    chat.set_variant("chat", "a", {"temperature": 0.3}, percent=100)
    chat.set_variant("chat", "vip", {"model": "gpt-4o"}, users=["user-1", "alice"])
    variants = chat.variants("chat")
    assert variants.assign("chat", "alice") == "vip"
    assert variants.assign("chat", "user-1") == "vip"
    assert variants.assign("chat", "user-2") == "a"
    with pytest.raises(hotparams.InvalidParams, match="one allow-list"):
        chat.set_variant("chat", "other", users=["alice"])


def test_percentages_cannot_exceed_the_whole(chat: hotparams.Bus) -> None:
    chat.set_variant("chat", "a", {"temperature": 0.3}, percent=70)
    before = dump_namespace(chat.client, "chat")
    with pytest.raises(hotparams.InvalidParams) as info:
        chat.set_variant("chat", "b", {"temperature": 0.5}, percent=40)
    assert "30% of users are free" in info.value.errors["percent"]
    assert dump_namespace(chat.client, "chat") == before


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"temperature": 9}, "variant bad temperature"),
        ({"nope": 1}, "nope"),
        ({"quiet_from": 20}, "variant bad *"),  # cross-field, merged with the base
    ],
)
def test_invalid_overrides_are_refused_and_nothing_is_written(
    chat: hotparams.Bus, overrides: dict[str, object], field: str
) -> None:
    before = dump_namespace(chat.client, "chat")
    with pytest.raises(hotparams.InvalidParams) as info:
        chat.set_variant("chat", "bad", overrides, percent=10)
    assert field in info.value.errors
    assert dump_namespace(chat.client, "chat") == before


def test_a_base_change_that_breaks_a_variant_is_refused(chat: hotparams.Bus) -> None:
    chat.set("chat", {"quiet_to": 10})
    chat.set_variant("chat", "night", {"quiet_from": 8}, percent=10)
    before = dump_namespace(chat.client, "chat")
    with pytest.raises(hotparams.InvalidParams) as info:
        chat.set("chat", {"quiet_to": 5})  # fine for the base, not for "night"
    assert "variant night *" in info.value.errors
    assert dump_namespace(chat.client, "chat") == before


def test_redis_refuses_a_malformed_variants_document(chat: hotparams.Bus) -> None:
    before = dump_namespace(chat.client, "chat")
    overlapping = {
        "salt": "s",
        "variants": {
            "a": {"overrides": {}, "buckets": [[0, 600]], "users": []},
            "b": {"overrides": {}, "buckets": [[500, 900]], "users": []},
        },
    }
    bad_value = {"salt": "s", "variants": {"a": {"overrides": {"temperature": 7}}}}
    out_of_range = {"salt": "s", "variants": {"a": {"buckets": [[0, BUCKETS + 1]]}}}
    for doc, word in [
        (overlapping, "overlap"),
        (bad_value, "temperature"),
        (out_of_range, "ranges"),
        ({"variants": {}}, "salt"),
    ]:
        with pytest.raises(redis.ResponseError, match="HP_INVALID") as info:
            chat.client.fcall("hp_commit", 1, "chat", "@variants", orjson.dumps(doc).decode())
        assert word in str(info.value)
    assert dump_namespace(chat.client, "chat") == before


def test_rollback_restores_the_variants_of_the_target(chat: hotparams.Bus) -> None:
    chat.set_variant("chat", "a", {"temperature": 0.3}, percent=10)  # v2
    chat.set_variant("chat", "a", percent=50)  # v3
    chat.remove_variant("chat", "a")  # v4
    assert not chat.variants("chat")
    chat.rollback("chat", 2)
    restored = chat.variants("chat")
    assert restored.variants["a"].percent == 10
    assert restored.variants["a"].overrides == {"temperature": 0.3}


def test_the_change_event_carries_the_variants(chat: hotparams.Bus) -> None:
    pubsub = chat.client.pubsub()
    pubsub.ssubscribe(keys_for("chat").channel)
    pubsub.get_message(timeout=2)
    chat.set_variant("chat", "a", {"temperature": 0.3}, percent=10)
    chat.set_variant("chat", "key", {"api_key": "sk-variant-secret"}, users=["bob"])
    first = orjson.loads(pubsub.get_message(timeout=2)["data"])
    second = pubsub.get_message(timeout=2)["data"]
    pubsub.close()
    assert first["variants"]["variants"]["a"]["overrides"] == {"temperature": 0.3}
    assert b"sk-variant-secret" not in second
    assert orjson.loads(second)["redacted"] == ["@variants"]
    audit = repr(dump_namespace(chat.client, "chat")[keys_for("chat").audit])
    assert "sk-variant-secret" not in audit
    assert chat.get("chat").variants.variants["key"].overrides["api_key"] == "sk-variant-secret"


def test_a_new_experiment_gets_a_new_salt(chat: hotparams.Bus) -> None:
    chat.set_variant("chat", "a", {"temperature": 0.3}, percent=10)
    salt = chat.variants("chat").salt
    chat.set_variant("chat", "b", {"temperature": 0.4}, percent=10)
    assert chat.variants("chat").salt == salt  # same experiment
    chat.remove_variant("chat", "a")
    chat.remove_variant("chat", "b")
    chat.set_variant("chat", "c", {"temperature": 0.5}, percent=10)
    assert chat.variants("chat").salt not in ("", salt)


def _digest(salt: str) -> str:
    h = hashlib.sha256()
    for user in USERS:
        h.update(bucket_of("chat", salt, user).to_bytes(2, "big"))
    return h.hexdigest()


def test_assignment_is_the_same_in_separate_processes() -> None:
    here = _digest("s4lt")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        there = pool.apply(_digest, ("s4lt",))
    # and in a fresh interpreter with another hash seed
    code = (
        "import hashlib; from hotparams.variants import bucket_of; h = hashlib.sha256()\n"
        "for i in range(100000): h.update(bucket_of('chat', 's4lt', f'user-{i}')"
        ".to_bytes(2, 'big'))\nprint(h.hexdigest())"
    )
    fresh = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"},
    ).stdout.strip()
    assert here == there == fresh


def test_the_audit_of_a_secret_override_keeps_lists_as_lists(chat: hotparams.Bus) -> None:
    chat.set_variant("chat", "key", {"api_key": "sk-variant-secret"}, percent=5)
    raw = chat.client.xrevrange(keys_for("chat").audit, count=1)[0][1][b"variants"]
    doc = orjson.loads(raw)
    assert doc["variants"]["key"]["overrides"]["api_key"] == hotparams.MASK
    assert doc["variants"]["key"].get("users", []) == []
    assert chat.history("chat", limit=1)[0].variants == doc


def test_restore_brings_back_the_variants_of_a_snapshot(chat: hotparams.Bus) -> None:
    chat.set("chat", {"temperature": 0.2})
    chat.set_variant("chat", "a", {"temperature": 0.3}, percent=10, users=["vip"])
    saved = chat.get("chat")
    chat.client.flushall()  # the loss
    version = chat.restore("chat", saved, author="ops", reason="after the flush")
    snap = chat.get("chat")
    assert (version, snap.values, snap.variants) == (2, saved.values, saved.variants)
    assert snap.epoch != saved.epoch
    # and on a namespace that still exists, the variants are replaced too
    chat.remove_variant("chat", "a")
    chat.restore("chat", saved)
    assert chat.variants("chat") == saved.variants
    assert chat.history("chat", limit=1)[0].op == "restore"


def test_the_writer_the_handle_and_the_cache_refuse_a_bad_variant_alike(
    chat: hotparams.Bus, tmp_path: Path
) -> None:
    """One merge-and-validate of variants (``validate_merged``): a variant
    whose merge with the base breaks a cross-field rule is refused by the
    writer, by a live handle's view and by the cache file, with one reason."""
    import dataclasses

    from hotparams import lkg
    from hotparams.schema import ParamSchema
    from hotparams.variants import Variant
    from hotparams.views import build_view

    schema = ParamSchema.of(ChatParams)
    chat.set("chat", {"quiet_from": 1, "quiet_to": 5})
    before = dump_namespace(chat.client, "chat")
    with pytest.raises(hotparams.InvalidParams) as by_writer:
        chat.set_variant("chat", "late", {"quiet_from": 20}, percent=10)
    assert dump_namespace(chat.client, "chat") == before
    base = chat.get("chat", ChatParams)
    late = VariantSet.build("salt", [Variant("late", {"quiet_from": 20}, ((0, 1000),))])
    with pytest.raises(hotparams.InvalidParams) as by_handle:
        build_view(schema, dataclasses.replace(base, variants=late))
    assert by_writer.value.errors == by_handle.value.errors
    assert [key.split(" ")[:2] for key in by_writer.value.errors] == [["variant", "late"]]
    cache = tmp_path / "chat.json"
    assert lkg.save(cache, dataclasses.replace(base, variants=late), schema)
    assert lkg.load(cache, "chat", schema) is None  # refused, logged
