"""Prometheus metrics and log lines of a live handle, against a real redis-server."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import hotparams
from hotparams.metrics import Metrics, default_metrics

from .helpers import wait_until
from .models import ChatParams, PairParams
from .test_live import PairV2

LABEL = (("namespace", "pair"),)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def wsgi_get(metrics: Metrics) -> tuple[str, str]:
    status: list[str] = []
    body = b"".join(
        metrics.wsgi_app()(
            {"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics", "QUERY_STRING": ""},
            lambda s, headers, *_: status.append(s),
        )
    )
    return status[0], body.decode()


@pytest.fixture
def bus(redis_url: str) -> Iterator[hotparams.Bus]:
    b = hotparams.connect(redis_url, reconcile_interval=0.2, reconnect_base_wait=0.05)
    b.register("pair", PairParams)
    yield b
    b.close()


def test_the_metrics_count_applies_faults_and_callback_errors(
    bus: hotparams.Bus, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hotparams")
    metrics = Metrics(CollectorRegistry())
    live = bus.watch("pair", PairParams, metrics=metrics)
    try:

        def broken(old: Any, new: Any) -> None:
            raise RuntimeError("a bug in user code")

        live.on_change(broken)
        for i in range(1, 4):
            v = bus.set("pair", {"a": i, "b": i})
        assert live.wait_for(v)
        # a lost message: an event that skips a version makes the handle re-read
        bus.client.spublish(
            "hp:{pair}:events",
            orjson.dumps(
                {
                    "ns": "pair",
                    "epoch": live.current.epoch,
                    "v": v + 5,
                    "prev": v + 4,
                    "ts": 0,
                    "op": "set",
                    "schema": 1,
                    "changed": {},
                }
            ),
        )
        assert wait_until(lambda: live.status().resyncs >= 1)
        # a version the model refuses, then a good one
        writer = hotparams.Bus(bus.client, url=bus.url)
        writer.migrate("pair", PairV2)
        bad = writer.set("pair", {"a": "five"})
        assert wait_until(lambda: live.rejected is not None and live.rejected.version == bad)
        good = writer.set("pair", {"a": 7})
        assert live.wait_for(good)
        # the subscription killed by the server: the handle reconnects
        bus.client.client_kill_filter(_type="pubsub")
        assert wait_until(lambda: live.status().reconnects == 1 and live.connected)
        assert wait_until(lambda: live.callback_errors == live.status().applied - 1)
        status = live.status()
        got = samples(metrics.exposition().decode())
        assert got[("hotparams_applied_version", LABEL)] == good
        assert got[("hotparams_connected", LABEL)] == 1
        assert got[("hotparams_apply_lag_seconds_count", LABEL)] == status.applied
        assert got[("hotparams_apply_lag_seconds_sum", LABEL)] < 5 * status.applied
        assert (
            got[("hotparams_resyncs_total", LABEL)] == status.resyncs >= 2
        )  # the gap, the refused version
        assert got[("hotparams_rejected_snapshots_total", LABEL)] == 1
        assert got[("hotparams_reconnects_total", LABEL)] == 1
        assert got[("hotparams_callback_errors_total", LABEL)] == live.callback_errors >= 2
        # mounted in a WSGI server: the same exposition
        code, text = wsgi_get(metrics)
        assert code.startswith("200") and samples(text) == got
    finally:
        live.close()
    events = [r.__dict__.get("event") for r in caplog.records]
    for kind in ("applied", "gap", "resync", "rejected", "disconnect", "reconnect"):
        assert kind in events, kind
    for record in caplog.records:
        if record.__dict__.get("event"):
            assert record.namespace == "pair" and isinstance(record.version, int)  # type: ignore[attr-defined]
            assert "pair" in record.getMessage() and str(record.version) in record.getMessage()  # type: ignore[attr-defined]


def test_applied_changes_are_logged_by_field_name_never_by_value(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="hotparams")
    bus = hotparams.connect(redis_url)
    bus.register("chat", ChatParams)
    with bus.watch("chat", ChatParams, metrics=Metrics(CollectorRegistry())) as live:
        v = bus.set("chat", {"api_key": "sk-NEVER-LOGGED", "temperature": 1.25})
        assert live.wait_for(v)
        bus.set_variant("chat", "vip", {"api_key": "sk-VARIANT-SECRET"}, users=["ann"])
        assert wait_until(lambda: live.for_user("ann").variant == "vip")
    bus.close()
    applied = [r for r in caplog.records if r.__dict__.get("event") == "applied"]
    assert applied[-2].fields == ["api_key", "temperature"]  # type: ignore[attr-defined]
    assert applied[-1].variants == ["vip"]  # type: ignore[attr-defined]
    assert "sk-NEVER-LOGGED" not in caplog.text and "sk-VARIANT-SECRET" not in caplog.text
    assert "1.25" not in caplog.text


def test_default_metrics_are_made_once_on_the_default_registry() -> None:
    assert default_metrics() is default_metrics()
    assert b"hotparams_applied_version" in default_metrics().exposition()
