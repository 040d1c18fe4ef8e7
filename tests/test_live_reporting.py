"""The fleet side of a live handle without Redis: views, lags, log lines,
exposure tallies and the reporting phase."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Generator
from typing import Any

import orjson
import pytest

from hotparams.codec import dumps
from hotparams.events import Event
from hotparams.fleet import worker_id
from hotparams.protocol import FCall, Stored
from hotparams.reporting import DEBOUNCE, GATHER, Idle, Reporter, Tally, Write, farewell, reporting
from hotparams.schema import ParamSchema
from hotparams.tracker import Tracker
from hotparams.variants import Variant, VariantSet

from .models import PairParams

NS = "pair"
SCHEMA = ParamSchema.of(PairParams)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def stored(
    version: int, committed_ms: int, variants: VariantSet | None = None, **values: Any
) -> Stored:
    raw = {"a": "0", "b": "0", "note": '""'}
    raw.update({k: dumps(v) for k, v in values.items()})
    doc = variants.to_json() if variants else None
    return Stored(NS, version, "e1", committed_ms, 1, raw, doc)


def event(version: int, committed_ms: int, **changed: Any) -> Event:
    return Event(NS, "e1", version, version - 1, committed_ms, "set", 1, changed)


TWO = VariantSet.build(
    "salt1",
    [
        Variant("hi", {"a": 7, "b": 7}, ((0, 5000),)),
        Variant("vip", {"note": "v"}, (), frozenset({"ann"})),
    ],
)


def tracker(wall: Clock) -> Tracker[PairParams]:
    return Tracker(NS, SCHEMA, reconcile_interval=1.0, clock=Clock(0.0), wall=wall)


# ---------------------------------------------------------------- views and lags


def test_applying_a_version_builds_its_merged_variants_once() -> None:
    t = tracker(Clock(1000.0))
    step = t.on_stored(stored(3, 999_000, TWO, a=1))
    view = step.view
    assert view is not None and view is t.view and view.base is t.current
    assert set(view.merged) == {"hi", "vip"}
    hi, vip = view.merged["hi"], view.merged["vip"]
    assert (hi.variant, hi.version, hi.params.a, hi.params.b, hi.params.note) == ("hi", 3, 7, 7, "")
    assert (vip.params.a, vip.params.note) == (1, "v") and vip.variants == TWO
    assert TWO.assign(NS, "ann") == "vip"  # Live.for_user picks from view.merged


def test_a_version_whose_variant_breaks_the_model_is_refused_whole() -> None:
    t = tracker(Clock(1000.0))
    t.on_stored(stored(1, 999_000))
    bad = VariantSet.build("s", [Variant("oops", {"a": "not a number"}, ((0, 10),))])
    step = t.on_stored(stored(2, 999_500, bad, a=5))
    assert step.action == "keep" and t.current is not None and t.current.version == 1
    assert t.rejected is not None and set(t.rejected.errors) == {"variant oops a"}


def test_the_lag_is_counted_from_the_commit_or_from_the_start_if_later() -> None:
    wall = Clock(1000.0)  # the handle starts at 1,000,000 ms
    t = tracker(wall)
    wall.now = 1000.004
    t.on_stored(stored(1, 900_000))  # committed long before the start
    assert t.view is not None and t.view.lag_ms == pytest.approx(4, abs=1)
    assert t.view.applied_ms == 1_000_004
    wall.now = 1001.5
    t.on_events([event(2, 1_001_488, a=2)])
    assert t.view.lag_ms == pytest.approx(12, abs=1) and t.view.applied_ms == 1_001_500


def test_applied_changes_and_faults_are_logged_with_fields_in_extra(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="hotparams")
    wall = Clock(1000.0)
    t = tracker(wall)
    t.on_stored(stored(1, 999_000))
    wall.now = 1000.02
    t.on_events([event(2, 1_000_010, a=5, note="TOP-SECRET-VALUE")])
    t.on_events([event(4, 1_000_015, a=6)])  # a gap
    t.connection(True)
    t.connection(False, ConnectionError("boom"))
    t.connection(True)
    records = {r.__dict__.get("event"): r for r in caplog.records}
    applied = [r for r in caplog.records if r.__dict__.get("event") == "applied"][-1]
    assert (applied.namespace, applied.version, applied.previous) == (NS, 2, 1)  # type: ignore[attr-defined]
    assert applied.fields == ["a", "note"] and applied.lag_ms == pytest.approx(10)  # type: ignore[attr-defined]
    assert "applied version 2 (was 1)" in applied.getMessage()
    gap = records["gap"]
    assert gap.levelno == logging.WARNING and gap.version == 2  # type: ignore[attr-defined]
    assert "gap: at version 2, got 4" in gap.getMessage()
    assert records["disconnect"].levelno == logging.WARNING
    assert "reconnected" in records["reconnect"].getMessage()
    assert t.status().reconnects == 1 and t.resyncs == 1
    assert "TOP-SECRET-VALUE" not in caplog.text  # names, never values


# ---------------------------------------------------------------- exposure tallies


def test_a_tally_sends_each_count_once_at_the_next_flush() -> None:
    tally = Tally()
    for _ in range(3):
        tally.count("s1", "a")
    tally.count("s1", None)
    assert tally.collect() == {"s1": {"a": 3, None: 1}}
    assert tally.collect() == {}  # nothing counted since
    tally.count("s1", "a")
    tally.restore("s1", {"a": 3, None: 1})  # a flush that failed is sent again
    tally.count("s2", "b")
    assert tally.collect() == {"s1": {"a": 4, None: 1}, "s2": {"b": 1}}
    assert tally.collect() == {}


def _tally_round(tally: Tally, names: list[str | None], per_thread: int) -> dict[str | None, int]:
    """Threads count while the caller flushes as fast as it can; the sum of
    every flush."""
    totals: dict[str | None, int] = {}

    def take() -> None:
        for name, n in tally.collect().get("s", {}).items():
            totals[name] = totals.get(name, 0) + n

    def hammer(name: str | None) -> None:
        for _ in range(per_thread):
            tally.count("s", name)

    threads = [threading.Thread(target=hammer, args=(n,)) for n in names]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):  # flushes race the counting
        take()
    for t in threads:
        t.join()
    take()
    return totals


def test_a_tally_counts_exactly_from_many_threads() -> None:
    # A thread switch every microsecond puts flushes between a count's
    # lookup of its counter and its next() on it: the double-buffered tally
    # this replaces lost counts in most of these rounds.
    names: list[str | None] = ["a", "b", None, "a", "b", None, "a", "c"]
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        wrong = []
        for round_ in range(40):
            totals = _tally_round(Tally(), names, 2_000)
            if totals != {"a": 6_000, "b": 4_000, None: 4_000, "c": 2_000}:
                wrong.append((round_, totals))
    finally:
        sys.setswitchinterval(previous)
    assert wrong == []


# ---------------------------------------------------------------- the reporting phase


def fcall(action: Any) -> FCall:
    assert isinstance(action, Write)
    call = next(action.op)
    assert isinstance(call, FCall)
    return call


_made: list[Reporter] = []


@pytest.fixture(autouse=True)
def _ids_given_back() -> Generator[None, None, None]:
    """Each reporter takes a worker id of the process; give them back, or a
    later test of this process (any order, under xdist) gets ``web-1#2``."""
    yield
    while _made:
        reporter = _made.pop()
        reporting_ids().give_back(reporter.namespace, reporter.id)


def reporting_ids() -> Any:
    from hotparams import reporting as module

    return module._ids


def make_reporter(clock: Clock) -> Reporter:
    t = tracker(Clock(1000.0))
    t.on_stored(stored(1, 999_000, TWO))
    t.connection(True)
    r = Reporter(t, name="web-1", interval=5.0, exposure_interval=2.0, clock=clock)
    _made.append(r)
    return r


def test_the_reporter_reports_at_once_then_debounces_and_beats() -> None:
    clock = Clock(10.0)
    r = make_reporter(clock)
    phase: Generator[Any, Any, None] = reporting(r)
    assert next(phase) == Idle(2.0)  # nothing to report before the listener connects
    r.touch()  # connected: the first report is due at once (watch() waits for it)
    assert r.wait() == 0.0
    call = fcall(phase.send(None))
    assert call.function == "hp_report" and call.args[0] == worker_id("web-1") == r.id
    doc = orjson.loads(call.args[1])
    assert (doc["version"], doc["epoch"], doc["name"], doc["connected"]) == (1, "e1", "web-1", True)
    assert doc["committed_ms"] == 999_000 and doc["started_ms"] == 1_000_000
    assert call.args[2] == "15000"  # three intervals to live
    idle = phase.send(1)
    assert idle == Idle(2.0)  # next: the exposure flush
    r.touch()  # a version was applied right after the last report: it waits for
    clock.now = 10.03  # the debounce (and GATHER: other handles' reports go along)
    assert r.wait() == pytest.approx(max(DEBOUNCE, GATHER) - 0.03)
    clock.now = 10.2
    assert fcall(phase.send(None)).function == "hp_report"
    assert isinstance(phase.send(1), Idle)
    clock.now = 15.3  # the heartbeat is due (and the flush, with nothing to send)
    assert fcall(phase.send(None)).function == "hp_report"
    assert phase.send(1) == Idle(pytest.approx(2.0))  # the next flush


def test_a_failed_report_is_logged_once_and_retried_with_jittered_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="hotparams.fleet")
    clock = Clock(10.0)
    r = make_reporter(clock)
    r.touch()
    clock.now += GATHER
    phase = reporting(r)
    next(phase)
    for attempt in range(1, 4):
        assert fcall(phase.send(None)).function == "hp_report"
        idle = phase.throw(ConnectionError("refused"))
        # the one backoff policy (hotparams.backoff): jittered, doubling, at most the interval
        assert isinstance(idle, Idle) and 0 <= idle.timeout <= min(0.1 * 2**attempt, r.interval)
        clock.now += idle.timeout
    warnings = [rec for rec in caplog.records if rec.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot send the report" in warnings[0].getMessage()
    fcall(phase.send(None))
    phase.send(1)
    assert "reporting to Redis again" in caplog.text and r.failures == 0


def test_exposures_are_flushed_per_salt_and_leave_is_sent_on_close() -> None:
    clock = Clock(10.0)
    r = make_reporter(clock)
    phase = farewell(r)
    with pytest.raises(StopIteration):  # never reported, nothing counted: nothing to send
        next(phase)
    r.sent(clock.now)  # it reported once
    r.tally.count("salt1", "hi")
    r.tally.count("salt1", None)
    phase = farewell(r)
    call = fcall(next(phase))
    assert (call.function, call.args) == ("hp_expose", ("salt1", "hi", "1", "", "1"))
    call = fcall(phase.send(2))
    assert (call.function, call.args) == ("hp_leave", (r.id, "default"))
    with pytest.raises(StopIteration):
        phase.send(1)
