"""`hotparams restore`: a worker's last good snapshot written back after a loss."""

from __future__ import annotations

from pathlib import Path

import hotparams

from .helpers import dump_namespace, wait_until
from .models import ChatParams
from .test_cli import run_cli


def test_restore_writes_a_cache_file_back_after_a_flush(redis_url: str, tmp_path: Path) -> None:
    bus = hotparams.connect(redis_url)
    bus.register("chat", ChatParams)
    bus.set("chat", {"temperature": 1.3, "api_key": "sk-restored-secret"})
    bus.set_variant("chat", "cool", {"temperature": 0.2}, percent=10)
    cache = tmp_path / "chat.json"
    with bus.watch("chat", ChatParams, cache=cache) as live:
        assert live.wait_for(3, timeout=10)
        assert wait_until(lambda: cache.exists() and "cool" in cache.read_text())
        saved = live.current
    bus.client.flushall()

    result = run_cli(
        redis_url,
        "restore",
        "chat",
        "--from-cache",
        str(cache),
        "--reason",
        "after the flush",
        "--json",
    )
    assert result.code == 0, result.err
    assert result.json()["restored_from"] == 3
    snap = bus.get("chat", ChatParams)
    assert snap.values == saved.values
    assert snap.variants == saved.variants
    assert snap.epoch != saved.epoch  # a new history
    assert "sk-restored-secret" not in result.out + result.err
    assert bus.history("chat", limit=1)[0].reason == "after the flush"
    bus.close()


def test_restore_refuses_a_bad_file_and_writes_nothing(redis_url: str, tmp_path: Path) -> None:
    bus = hotparams.connect(redis_url)
    bus.register("chat", ChatParams)
    before = dump_namespace(bus.client, "chat")
    junk = tmp_path / "junk.json"
    junk.write_text('{"not": "a cache"}')
    other = tmp_path / "other.json"
    with bus.watch("chat", ChatParams, cache=other) as live:
        live.wait_for(1, timeout=10)
        assert wait_until(other.exists)
    cases = [
        (["restore", "chat", "--from-cache", str(tmp_path / "missing.json")], 2),
        (["restore", "chat", "--from-cache", str(junk)], 2),
        (["restore", "rag", "--from-cache", str(other)], 2),  # another namespace's file
        (["restore", "chat", "--from-cache", str(other), "--schema", "no_such:Model"], 2),
    ]
    for args, code in cases:
        result = run_cli(redis_url, *args)
        assert result.code == code, (args, result)
        assert len(result.err.strip().splitlines()) == 1, result.err
    assert dump_namespace(bus.client, "chat") == before
    bus.close()


def test_the_cache_file_module_holds_no_second_restore_command() -> None:
    """Drift: ``python -m hotparams.lkg restore`` was a second, argparse CLI
    that dropped the A/B variants, exited 1 where ``hotparams restore``
    exits 2 and printed a RuntimeWarning; restoring is the CLI's alone."""
    from hotparams import lkg

    assert set(lkg.__all__) == {"FORMAT", "load", "read", "save"}
    for gone in ("main", "restore_op", "import_model", "masked_doc"):
        assert not hasattr(lkg, gone), gone
