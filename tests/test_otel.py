"""hotparams.otel with the OpenTelemetry SDK's in-memory exporter and metric
reader: a span per write, a span per applied version, the version gauge.

The SDK's providers are global and set once per process, so the scenario
runs in a process of its own and reports what the exporter saw as JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any, cast

import pytest

from hotparams import otel

ROOT = Path(__file__).resolve().parent.parent

SCENARIO = """
import json, sys, time
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import hotparams
from tests.models import ChatParams

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

bus = hotparams.connect(sys.argv[1])
bus.register("chat", ChatParams)
live = bus.watch("chat", ChatParams, worker_name="otel")
v2 = bus.set("chat", {"temperature": 0.2, "max_tokens": 99}, author="ana", reason="cooler")
v3 = bus.unset("chat", ["max_tokens"], author="bo")
v4 = bus.rollback("chat", 2, author="cy")
try:
    bus.set("chat", {"temperature": 9})
except hotparams.InvalidParams:
    pass
assert live.wait_for(v4)
deadline = time.monotonic() + 5
while time.monotonic() < deadline:
    applied = [s for s in exporter.get_finished_spans() if s.name == "hotparams.apply"]
    if any(s.attributes["hotparams.version"] == v4 for s in applied):
        break
    time.sleep(0.01)
gauge = []
for rm in reader.get_metrics_data().resource_metrics:
    for sm in rm.scope_metrics:
        for m in sm.metrics:
            if m.name == "hotparams.applied_version":
                gauge += [(dict(p.attributes), p.value) for p in m.data.data_points]
spans = [
    {
        "name": s.name,
        "attributes": {k: list(v) if isinstance(v, tuple) else v for k, v in s.attributes.items()},
        "ok": s.status.is_ok,
        "duration_ms": (s.end_time - s.start_time) / 1e6,
    }
    for s in exporter.get_finished_spans()
]
live.close()
bus.close()
print(json.dumps({"versions": [v2, v3, v4], "spans": spans, "gauge": gauge}))
"""


def run_scenario(redis_url: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", SCENARIO, redis_url],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return doc


def test_every_write_is_a_span_with_its_namespace_version_fields_and_author(
    redis_url: str,
) -> None:
    got = run_scenario(redis_url)
    v2, v3, v4 = got["versions"]
    writes = [s for s in got["spans"] if s["name"] == "hotparams.write"]
    assert [
        (
            s["attributes"]["hotparams.op"],
            s["attributes"].get("hotparams.version"),
            s["attributes"]["hotparams.fields"],
            s["attributes"]["hotparams.author"],
            s["ok"],
        )
        for s in writes
    ] == [
        ("set", v2, ["max_tokens", "temperature"], "ana", True),
        ("unset", v3, ["max_tokens"], "bo", True),
        ("rollback", v4, [], "cy", True),
        ("set", None, ["temperature"], writes[-1]["attributes"]["hotparams.author"], False),
    ]
    assert {s["attributes"]["hotparams.namespace"] for s in writes} == {"chat"}
    assert writes[2]["attributes"]["hotparams.target"] == 2


def test_every_applied_version_is_a_span_as_long_as_its_lag_and_the_version_a_gauge(
    redis_url: str,
) -> None:
    got = run_scenario(redis_url)
    v2, v3, v4 = got["versions"]
    applied = [s for s in got["spans"] if s["name"] == "hotparams.apply"]
    versions = [s["attributes"]["hotparams.version"] for s in applied]
    assert versions == sorted(versions) and versions[-1] == v4  # in order, the last one too
    assert set(versions) <= {1, v2, v3, v4}
    for span in applied:
        assert span["attributes"]["hotparams.namespace"] == "chat"
        assert abs(span["duration_ms"] - span["attributes"]["hotparams.lag_ms"]) < 1.0
    assert got["gauge"] == [[{"hotparams.namespace": "chat"}, v4]]


def test_without_opentelemetry_nothing_is_wrapped_or_observed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the API a write is the operation's own generator and a handle
    gets no observer."""
    monkeypatch.setattr(otel, "available", lambda: False)

    def op(namespace: str) -> Generator[int, None, int]:
        yield 1
        return 2

    gen = otel.traced("set")(op)("chat")
    assert gen.gi_code is op.__code__
    assert otel.observer_for(cast(Any, object())) is None
