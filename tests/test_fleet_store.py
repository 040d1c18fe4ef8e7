"""Worker reports in Redis: they expire by themselves and summarise a fleet."""

from __future__ import annotations

import pytest

import hotparams
from hotparams.fleet import WorkerReport, leave_op, report_op, workers_op

from .helpers import wait_until
from .models import ChatParams


def _report(bus: hotparams.Bus, worker: str, version: int, ttl: float, **kw: object) -> None:
    epoch = bus.head("chat").epoch
    report = WorkerReport(id=worker, namespace="chat", version=version, epoch=epoch, **kw)  # type: ignore[arg-type]
    bus.run(report_op("chat", report, ttl))


def test_reports_are_listed_and_expire_by_themselves(bus: hotparams.Bus) -> None:
    bus.register("chat", ChatParams)
    _report(bus, "h:1", 1, ttl=30, lag_ms=3.0)
    _report(bus, "h:2", 1, ttl=0.2, lag_ms=5.0)
    now, reports = bus.run(workers_op("chat"))
    assert [r.id for r in reports] == ["h:1", "h:2"]
    assert all(0 <= now - r.reported_ms < 5_000 for r in reports)
    assert wait_until(lambda: [r.id for r in bus.workers("chat")] == ["h:1"], timeout=5)
    assert bus.run(leave_op("chat", "h:1")) is True
    assert bus.workers("chat") == []


def test_convergence_counts_workers_on_the_current_version(bus: hotparams.Bus) -> None:
    bus.register("chat", ChatParams)
    v = bus.set("chat", {"temperature": 0.1})
    _report(bus, "a", v, ttl=30, lag_ms=2.0)
    _report(bus, "b", v, ttl=30, lag_ms=4.0)
    _report(bus, "c", v - 1, ttl=30, connected=False, last_error="partitioned")
    conv = bus.convergence("chat")
    assert (conv.target, conv.workers, conv.on_target, conv.complete) == (v, 3, 2, False)
    assert [r.id for r in conv.behind] == ["c"]
    assert [r.id for r in conv.disconnected] == ["c"]
    assert conv.lag_p50_ms == 3.0 and conv.lag_max_ms == 4.0
    _report(bus, "c", v, ttl=30, lag_ms=9.0)
    assert bus.convergence("chat").complete


def test_a_report_from_another_epoch_is_behind(bus: hotparams.Bus) -> None:
    bus.register("chat", ChatParams)
    bus.run(report_op("chat", WorkerReport("old", "chat", 50, "lost-epoch"), 30))
    conv = bus.convergence("chat")
    assert conv.on_target == 0 and [r.id for r in conv.behind] == ["old"]


@pytest.mark.parametrize("bad", ["[]", "not json", "{" + '"x":"' + "y" * 9000 + '"}'])
def test_a_malformed_report_is_refused(bus: hotparams.Bus, bad: str) -> None:
    import redis

    bus.load_library()
    with pytest.raises(redis.ResponseError, match="HP_BADARG"):
        bus.client.fcall("hp_report", 1, "chat", "w", bad, 1000)
    assert bus.client.exists("hp:{chat}:workers") == 0


def test_exposure_counts_add_up_per_experiment(bus: hotparams.Bus) -> None:
    bus.register("chat", ChatParams)
    assert bus.exposures("chat") == {}
    bus.set_variant("chat", "a", {"temperature": 0.3}, percent=10)
    salt = bus.variants("chat").salt
    bus.record_exposures("chat", salt, {"a": 3, None: 10})
    bus.record_exposures("chat", salt, {"a": 2, None: 0})
    bus.record_exposures("chat", "an-older-salt", {"a": 100})
    assert bus.exposures("chat") == {"a": 5, None: 10}
