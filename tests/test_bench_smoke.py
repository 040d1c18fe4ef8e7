"""The benchmark code (scripts/bench) still runs: each section on tiny sizes
(reads, ``for_user`` and its exposure counts, propagation with the lag the
fleet reports through ``bus.convergence``, scale, writes, the report).

No timing is asserted: the numbers of such short runs mean nothing.  The
benchmark itself is run by hand (``python -m scripts.bench``, see
BENCHMARKS.md); this only keeps its code from rotting.  django-constance
(the ``bench`` extra) is optional: without it the peer cases are skipped,
as the benchmark itself leaves them out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hotparams
from scripts.bench import peers, propagation, reads, report, run, scale, startup, suite, writes
from scripts.bench.common import NS, BenchParams


def test_report_renders_tiny_runs(redis_url: str, tmp_path: Path) -> None:
    results: dict[str, Any] = {"meta": run.metadata("python -m scripts.bench (smoke)", "quick")}
    results["meta"]["redis"] = "test"
    results["write"] = writes.run(redis_url, quick=True, n=200, rounds=1)
    assert set(results["write"]["cases"]) == {
        "bare_fcall",
        "bus_set",
        "bare_pipeline",
        "bus_set_many",
    }
    bus = hotparams.connect(redis_url)
    live = bus.watch(NS, BenchParams)
    try:
        cases = reads.build_cases(live, None)
        measured = reads.measure(cases, live, rounds=2, scale=0.001)
    finally:
        live.close()
        bus.close()
    assert {"floor", "live", "snapshot_via_holder", "locked_dict", "pydantic_model"} <= set(
        measured["cases"]
    )
    variants = reads.for_user(redis_url, rounds=2, scale=0.001)
    assert set(variants["cases"]) == {"floor", "current", "for_user", "for_user_no_variants"}
    assert variants["exposures_counted"] == variants["for_user_calls"]  # every call counted
    assert set(variants["split"]) == {"None", "cool", "vip"}
    results["read"] = {
        "rounds": 2,
        "labels": {c.name: c.label for c in cases if c.name != "loop"},
        "reads_per_batch": {c.name: 10 for c in cases},
        "idle": measured,
        "busy": {**measured, "write_rate_per_s": 0.0, "versions_applied": 0, "resyncs": 0},
        "for_user": variants,
    }
    if reads.flagd_available():  # the dev extra installs it; the bench extra too
        results["read"]["openfeature"] = reads.openfeature_reads(redis_url, rounds=1, scale=0.2)
        assert set(results["read"]["openfeature"]["cases"]) == {
            "current",
            "for_user",
            "hotparams",
            "flagd",
        }
    results["propagation"] = {
        "fleets": [propagation.fleet(redis_url, 1, updates=2, load_seconds=0)],
        "polling": [],
        "reconcile_interval_s": 5.0,
    }
    text = report.markdown(results)
    for part in ("## Targets", "## Read path", "## Propagation", "## Write path"):
        assert part in text
    assert "`live.for_user(user)`" in text and "`bus.convergence`" in text
    assert "`Bus.set`" in report.summary(results)


def test_propagation_and_scale_run_tiny_fleets(redis_url: str) -> None:
    one = propagation.fleet(redis_url, 1, updates=2, load_seconds=0)
    assert one["missing"] == {"live": 0, "bare": 0}
    assert one["live_per_worker_ms"]["n"] == 2 and one["bare_per_worker_ms"]["n"] == 2
    lag = one["reported_lag_ms"]  # what the fleet reports, through bus.convergence
    assert lag["incomplete"] == 0 and lag["pooled"]["n"] == propagation.CONVERGENCE_UPDATES
    polled = propagation.polling(redis_url, 1, interval=0.05, writes=2, load_seconds=0.1)
    assert polled["missing"] == 0 and polled["staleness_ms"]["n"] == 2
    fleet = scale.fleet(redis_url, handles=3, processes=2, updates=2, load_seconds=0)
    assert fleet["missing"] == 0 and fleet["per_handle_ms"]["n"] == 6
    memory = scale.memory(redis_url, namespaces=2, versions=3)
    assert memory["per_namespace_bytes"] > 0 and memory["version_hash_memory_usage_bytes"] > 0


def test_constance_peers_read_the_stored_value(redis_url: str) -> None:
    config = peers.config(redis_url, cached=False)
    config.TEMPERATURE = 0.25
    cached = peers.config(redis_url, cached=True, ttl=60)
    assert cached.TEMPERATURE == 0.25
    bus = hotparams.connect(redis_url)
    bus.register(NS, BenchParams)
    live = bus.watch(NS, BenchParams)
    try:
        cases = reads.build_cases(live, redis_url)
        measured = reads.measure(cases, live, rounds=1, scale=0.01)
    finally:
        live.close()
        bus.close()
    assert {"constance_redis", "constance_cached"} <= set(measured["cases"])


def test_fan_out_from_replicas_runs_a_tiny_fleet_and_renders(redis_url: str) -> None:
    fr = scale.from_replicas(handles=2, processes=1, updates=2, load_seconds=0)
    assert fr is not None and fr["replica_count"] == 2
    for case in ("primary", "replicas"):
        assert fr[case]["missing"] == 0 and fr[case]["per_handle_ms"]["n"] == 4
        assert len(fr[case]["others_cpu_ms_per_update"]) == 2  # each replica's CPU measured
    text = report._from_replicas(fr)
    assert "| 2 replicas |" in text and "master CPU per update" in text


def test_startup_times_the_cli_and_renders_with_a_suite_result(redis_url: str) -> None:
    """The start-up section runs ``hotparams get`` and its floors; the suite
    section (two minutes: only in a full run) renders from a result."""
    results: dict[str, Any] = {"meta": run.metadata("python -m scripts.bench (smoke)", "quick")}
    results["meta"]["redis"] = "test"
    results["startup"] = startup.run(redis_url, quick=True)
    assert set(results["startup"]["cases"]) == {"python", "bare_redis", "hotparams_get"}
    assert {"redis", "pydantic", "hotparams"} <= set(results["startup"]["imports_ms"])
    results["suite"] = {
        "seconds": 100.0,
        "pytest_seconds": 98.0,
        "workers": 4,
        "returncode": 0,
        "counts": {"passed": 10},
        "last_line": "10 passed in 98.00s",
        "cpu_seconds": 150.0,
        "cores": 2,
        "slowest": ["3.00s call tests/test_x.py::test_y"],
    }
    text = report.markdown(results)
    assert "`hotparams get` ≤ 250 ms" in text and "## Start-up" in text
    assert "the pytest phase of `scripts/test` ≤ 120 s" in text
    assert "a CLI call" in report.summary(results)
    assert suite._pytest_seconds("1 failed, 3 passed in 12.50s (0:00:12)") == 12.5
