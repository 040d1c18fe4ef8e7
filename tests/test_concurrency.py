"""Concurrent writer processes lose no update and leave gapless versions."""

from __future__ import annotations

import multiprocessing

import pytest
from pydantic import BaseModel

import hotparams

WRITERS = 4
INCREMENTS = 40


class Counters(BaseModel):
    total: int = 0
    w0: int = 0
    w1: int = 0
    w2: int = 0
    w3: int = 0


def _cas_incrementer(url: str, n: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """Read-modify-write with expect_version, retrying on conflict."""
    bus = hotparams.connect(url)
    conflicts = 0
    for _ in range(n):
        while True:
            snap = bus.get("cnt")
            try:
                bus.set("cnt", {"total": snap.values["total"] + 1}, expect_version=snap.version)
                break
            except hotparams.VersionConflict:
                conflicts += 1
    out.put(conflicts)
    bus.close()


def _field_writer(url: str, index: int, n: int) -> None:
    """Blind writes of one's own field: the server-side merge keeps the others'."""
    bus = hotparams.connect(url)
    bus.bind("cnt", Counters)
    for i in range(1, n + 1):
        bus.set("cnt", {f"w{index}": i}, author=f"writer-{index}")
    bus.close()


@pytest.mark.slow
def test_compare_and_set_loops_lose_no_update(redis_url: str) -> None:
    bus = hotparams.connect(redis_url)
    bus.register("cnt", Counters)
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [
        ctx.Process(target=_cas_incrementer, args=(redis_url, INCREMENTS, out))
        for _ in range(WRITERS)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    conflicts = sum(out.get(timeout=5) for _ in procs)
    snap = bus.get("cnt")
    total = WRITERS * INCREMENTS
    assert snap.values["total"] == total
    assert snap.version == total + 1
    history = bus.history("cnt", limit=10_000)
    assert [c.version for c in history] == list(range(total + 1, 0, -1))
    assert all(c.changes["total"].new == c.changes["total"].old + 1 for c in history[:-1])
    assert conflicts > 0, "the writers never raced: the test proves nothing"
    bus.close()


@pytest.mark.slow
def test_blind_writers_of_different_fields_keep_each_others_changes(redis_url: str) -> None:
    bus = hotparams.connect(redis_url)
    bus.register("cnt", Counters)
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(target=_field_writer, args=(redis_url, i, INCREMENTS)) for i in range(WRITERS)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    snap = bus.get("cnt")
    assert [snap.values[f"w{i}"] for i in range(WRITERS)] == [INCREMENTS] * WRITERS
    assert snap.version == WRITERS * INCREMENTS + 1
    history = bus.history("cnt", limit=10_000)
    assert len(history) == snap.version
    assert sorted(c.version for c in history) == list(range(1, snap.version + 1))
    bus.close()
