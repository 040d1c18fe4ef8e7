"""Data from Redis never drives an operator's terminal: control characters
are shown as escapes and rich markup in data is printed as it is."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

import hotparams
from hotparams.fleet import WorkerReport
from hotparams.keys import keys_for
from tests.models import ChatParams

from .test_cli import run_cli

#: what a hostile writer or worker puts in the data
ESC = "\x1b[2J\x1b]8;;http://evil.example\x1b\\"
C1 = "\x9b31m"
MARKUP = "[bold red]ALERT[/bold red] [link=http://evil.example]x[/link] :warning:"


@pytest.fixture
def store(redis_url: str) -> Iterator[hotparams.Bus]:
    b = hotparams.connect(redis_url)
    b.register("chat", ChatParams, author="setup")
    yield b
    b.close()


def _assert_inert(text: str) -> None:
    for char in ("\x1b", "\x9b", "\x07", "\r"):
        assert char not in text, f"{char!r} reached the terminal"


def test_history_shows_authors_reasons_and_sources_with_escapes_and_no_markup(
    store: hotparams.Bus, redis_url: str
) -> None:
    store.set(
        "chat",
        {"system_prompt": f"hi{C1}there"},
        author=f"mallory{ESC}{MARKUP}",
        reason=f"why{C1}\a",
        source=f"src{ESC}",
    )
    for verb in (["history", "chat", "--limit", "1"], ["get", "chat"]):
        result = run_cli(redis_url, *verb)
        assert result.code == 0, result.err
        _assert_inert(result.out)
    out = run_cli(redis_url, "history", "chat", "--limit", "1").out.replace("\n", " ")
    assert "mallory\\x1b[2J" in out and "\\x9b31m" in out
    assert "[bold red]ALERT[/bold red]" in out and ":warning:" in out
    assert "\\x9b31m" in run_cli(redis_url, "get", "chat").out


def test_status_shows_worker_ids_and_errors_with_escapes_and_no_markup(
    store: hotparams.Bus, redis_url: str
) -> None:
    head = store.head("chat")
    now = int(time.time() * 1000)
    report = WorkerReport(
        f"web{ESC}{MARKUP}",
        "chat",
        0,
        head.epoch,
        applied_ms=now,
        confirmed_ms=now,
        last_error=f"boom{ESC}{C1}{MARKUP}",
    )
    # hp_report refuses control characters; a worker's user may still HSET
    # its fleet keys directly (see hotparams/acl.py), so the CLI must cope
    keys = keys_for("chat")
    store.client.zadd(keys.workers, {f"default\n{report.id}": now + 60_000})
    store.client.hset(keys.reports_of("default"), report.id, report.to_json())
    result = run_cli(redis_url, "status", "chat")
    assert result.code == 0, result.err
    _assert_inert(result.out)
    out = " ".join(result.out.split())  # the table wraps long cells
    assert "ALERT[/bold red]" in out and "[/link]" in out and ":warning:" in out
    assert "\\x1b[2J" in out
    # the one-line error of --wait names the laggard, escaped too
    waited = run_cli(redis_url, "set", "chat", "max_tokens=100", "--wait", "--timeout", "0.2")
    assert waited.code == 7
    _assert_inert(waited.err)
    assert "web\\x1b[2J" in waited.err and waited.err.count("\n") == 1
