"""The fleet's web app (workers/web.py) under a real gunicorn with --preload
and three workers, against a real redis-server: every worker serves a change
made through the admin API, and each request keeps one version throughout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import hotparams
from hotparams.server import free_port
from tests.helpers import wait_until
from tests.test_cli import run_cli
from workers.params import ChatParams

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "gunicorn-admin-token-" + "g" * 16
WORKERS = 3


@dataclass
class Web:
    base: str
    proc: subprocess.Popen[bytes]

    def call(
        self,
        path: str,
        body: Any = None,
        *,
        method: str = "GET",
        headers: dict[str, str] | None = None,
    ) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            req.add_header(name, value)
        with urllib.request.urlopen(req, timeout=10) as response:
            return json.loads(response.read())


@pytest.fixture
def web(redis_url: str, tmp_path: Path) -> Iterator[Web]:
    port = free_port()
    env = {
        **os.environ,
        "HOTPARAMS_URL": redis_url,
        "HOTPARAMS_ADMIN_TOKEN": TOKEN,
        "BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": str(WORKERS),
        "PYTHONPATH": str(ROOT),
    }
    log = (tmp_path / "gunicorn.log").open("wb")
    proc = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "gunicorn"), "--config", "workers/gunicorn.conf.py"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield Web(f"http://127.0.0.1:{port}", proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    assert proc.returncode == 0, (tmp_path / "gunicorn.log").read_text()[-3000:]


def sample(web: Web, pool: ThreadPoolExecutor) -> list[dict[str, Any]]:
    """Concurrent chat requests that keep a worker busy 30 ms, so they spread over all."""
    body = {"message": "which worker?", "latency_ms": 30}
    return list(
        pool.map(lambda _: web.call("/api/chat?user=zed", body, method="POST"), range(3 * WORKERS))
    )


def scrape(web: Web) -> dict[str, float]:
    """One scrape of ``/metrics`` (one worker answers): sample -> value for "chat"."""
    with urllib.request.urlopen(web.base + "/metrics", timeout=10) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("namespace") == "chat" and set(s.labels) <= {"namespace", "le"}:
                key = s.name + (f"[{s.labels['le']}]" if "le" in s.labels else "")
                out[key] = s.value
    return out


@pytest.mark.slow
def test_gunicorn_lists_exactly_its_workers_aggregates_their_metrics_and_sigterm_leaves_none(
    web: Web, redis_url: str
) -> None:
    bus = hotparams.connect(redis_url)
    bus.bind("chat", ChatParams)  # its model validator is Python-only: write with the model
    try:
        # the master made the app (--preload) but is no worker: 3 listed, never 4
        assert wait_until(lambda: len(bus.workers("chat")) == WORKERS, 30), bus.workers("chat")
        pids = {w.pid for w in bus.workers("chat")}
        assert len(pids) == WORKERS and web.proc.pid not in pids
        status = run_cli(redis_url, "status", "chat", "--json")
        assert status.code == 0, status.err
        assert {w["pid"] for w in status.json()["workers"]} == pids

        # one scrape (of whichever worker answers) aggregates every worker
        assert wait_until(lambda: scrape(web).get("hotparams_connected") == WORKERS, 10)
        bus.bind("chat", ChatParams)  # its model validator is Python: write with the model
        version = bus.set("chat", {"temperature": 0.3}, author="test")
        assert wait_until(lambda: bus.convergence("chat", version).complete, 10)
        assert wait_until(lambda: scrape(web).get("hotparams_applied_version") == version, 10)
        metrics = scrape(web)
        assert metrics["hotparams_connected"] == WORKERS
        assert metrics["hotparams_apply_lag_seconds_count"] >= WORKERS  # v2 in each worker

        # a graceful stop: every worker leaves the fleet, none lingers for its TTL
        sent = time.monotonic()
        web.proc.send_signal(signal.SIGTERM)
        assert wait_until(lambda: bus.workers("chat") == [], 1.0, interval=0.01), [
            (w.pid, w.connected) for w in bus.workers("chat")
        ]
        left_after = time.monotonic() - sent
        assert left_after < 1.0
        web.proc.wait(15)
        assert bus.workers("chat") == []
    finally:
        bus.close()


@pytest.mark.slow
def test_every_gunicorn_worker_serves_a_change_and_each_request_keeps_one_version(
    web: Web,
) -> None:
    pool = ThreadPoolExecutor(3 * WORKERS)
    try:
        deadline = time.monotonic() + 30
        seen: dict[int, dict[str, Any]] = {}
        while len(seen) < WORKERS:  # every worker answers (requests spread over them)
            assert time.monotonic() < deadline, f"workers did not answer: {sorted(seen)}"
            try:
                seen.update({r["pid"]: r for r in sample(web, pool)})
            except OSError:
                time.sleep(0.2)
        assert web.proc.pid not in seen and {r["version"] for r in seen.values()} == {1}

        # slow chat requests (800 ms of simulated LLM) in flight while a change lands;
        # on a loaded machine they may all start after it: then try again with another
        admin = {"Authorization": f"Bearer {TOKEN}"}
        spanned = False
        version = 1
        for temperature in (0.4, 0.5, 0.6):
            slow = [
                pool.submit(
                    web.call, "/api/chat", {"message": "hi", "latency_ms": 800}, method="POST"
                )
                for _ in range(WORKERS)
            ]
            time.sleep(0.3)
            change = web.call(
                "/hotparams/chat",
                {"values": {"model": "claude-sonnet", "temperature": temperature}},
                method="PATCH",
                headers=admin,
            )
            assert change["version"] == version + 1
            replies = [f.result(timeout=20) for f in slow]
            assert all(r["version"] == r["version_after_reply"] for r in replies), replies
            spanned = any(r["version"] == version for r in replies)
            version = change["version"]
            if spanned:
                break
        assert spanned, "no request was in flight while a change landed"

        fresh: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + 20
        while set(fresh) != set(seen):
            assert time.monotonic() < deadline, f"not every worker converged: {sorted(fresh)}"
            for r in sample(web, pool):
                if r["version"] == version:
                    assert r["model"] == "claude-sonnet"
                    fresh[r["pid"]] = r
        shown = web.call("/api/params")  # secrets masked
        assert shown["version"] == version and shown["values"]["api_key"] == "******"
    finally:
        pool.shutdown()


def test_reading_the_gunicorn_config_outside_gunicorn_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A tool that runs the config file (a test, a linter) is no gunicorn
    master: its live handles still follow, its metrics stay per process."""
    import runpy

    import hotparams.live

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    settings = runpy.run_path(str(ROOT / "workers" / "gunicorn.conf.py"))
    assert callable(settings["worker_exit"]) and callable(settings["child_exit"])
    assert hotparams.live._fork_server is None
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
