"""``hotparams status`` and ``--wait`` of the write verbs, with worker reports
written as a Live handle writes them (``hp_report``) by fake workers."""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Iterator

import pytest

import hotparams
from hotparams.fleet import WorkerReport, report_op
from tests.models import ChatParams
from tests.test_cli import dump_all, run_cli

SECRET = "sk-fleet-TOPSECRET-9"


@pytest.fixture
def store(redis_url: str) -> Iterator[hotparams.Bus]:
    b = hotparams.connect(redis_url)
    b.register("chat", ChatParams, author="setup")
    yield b
    b.close()


def report(bus: hotparams.Bus, worker: str, version: int, *, ttl: float = 60, **kw: object) -> None:
    """What a Live handle sends when it applies ``version`` (or on a heartbeat)."""
    now = int(time.time() * 1000)
    fields: dict[str, object] = {"confirmed_ms": now, "applied_ms": now, **kw}
    epoch = str(fields.pop("epoch", bus.head("chat").epoch))
    bus.run(report_op("chat", WorkerReport(worker, "chat", version, epoch, **fields), ttl))  # type: ignore[arg-type]


class Fleet:
    """Fake workers that apply each new version ``delay`` seconds after it
    is committed and report it; others stay where they are."""

    def __init__(self, url: str, workers: list[str], delay: float) -> None:
        self.bus = hotparams.connect(url)
        self.workers = workers
        self.delay = delay
        self.stop = threading.Event()
        self.applied = self.bus.head("chat").version
        for worker in workers:
            report(self.bus, worker, self.applied, lag_ms=1.0)
        self.thread = threading.Thread(target=self._follow, daemon=True)
        self.thread.start()

    def _follow(self) -> None:
        while not self.stop.wait(0.02):
            head = self.bus.head("chat")
            if head.version != self.applied:
                time.sleep(self.delay)
                for worker in self.workers:
                    report(self.bus, worker, head.version, lag_ms=self.delay * 1000)
                self.applied = head.version

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.bus.close()


@pytest.fixture
def fleet(store: hotparams.Bus, redis_url: str) -> Iterator[Fleet]:
    f = Fleet(redis_url, ["w1", "w2"], delay=0.3)
    yield f
    f.close()


def _lines(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.splitlines()]


def test_status_shows_each_worker_highlights_laggards_and_masks_secrets(
    store: hotparams.Bus, redis_url: str
) -> None:
    v = store.set("chat", {"api_key": SECRET})
    started = time.time()
    report(store, "web-1:4242", v, host="web-1", pid=4242, lag_ms=4.0)
    report(store, "api-7", v, host="web-2", pid=77, name="api", lag_ms=8.0)
    report(
        store, "web-3:977", v - 1, host="web-3", pid=977, connected=False, lag_ms=12.0,
        confirmed_ms=int(time.time() * 1000) - 95_000,
        last_error=f"AUTH {SECRET} refused",
    )  # fmt: skip
    report(store, "old:1", v + 5, epoch="another-history", lag_ms=2.0)
    report(store, "gone:1", v, ttl=0.05)  # expires before the CLI reads
    time.sleep(0.1)
    text = run_cli(redis_url, "status", "chat")
    doc = run_cli(redis_url, "status", "chat", "--json")
    for r in (text, doc):
        assert (r.code, r.err) == (0, "")
        assert SECRET not in r.out
    # the ages the CLI may print: from the reports to its output (a loaded machine is slow)
    took = math.ceil(time.time() - started) + 1
    now = "|".join(str(s) for s in range(took + 1))
    rows = [re.sub(rf"\b({now}) s ago", "<now>", row) for row in _lines(text.out)]
    head = store.head("chat")
    assert rows[0].startswith(f"chat version {v} epoch {head.epoch} committed ")
    assert rows[1].split() == ["worker", "version", "connected", "lag", "confirmed", "error"]
    assert f"api-7 (web-2:77 api) {v} yes 8 ms <now>" in rows
    assert f"web-1:4242 {v} yes 4 ms <now>" in rows
    assert f"old:1 {v + 5} (other history) yes 2 ms <now>" in rows
    then = "|".join(str(s) for s in range(95, 95 + took + 1))
    web3 = re.compile(rf"web-3:977 {v - 1} \(behind\) no 12 ms ({then}) s ago AUTH \*{{6}} refused")
    assert any(web3.fullmatch(row) for row in rows), "\n".join(rows)
    assert not any("gone:1" in row for row in rows)
    assert rows[-1] == f"2/4 workers on v{v}, p50 6 ms, p99 8 ms"

    status = doc.json()
    assert (status["version"], status["epoch"]) == (v, head.epoch)
    assert {w["id"]: w["on_target"] for w in status["workers"]} == {
        "api-7": True,
        "old:1": False,
        "web-1:4242": True,
        "web-3:977": False,
    }
    web3 = next(w for w in status["workers"] if w["id"] == "web-3:977")
    assert (web3["connected"], web3["version"], web3["host"], web3["pid"]) == (
        False,
        v - 1,
        "web-3",
        977,
    )
    assert web3["last_error"] == "AUTH ****** refused"
    assert status["convergence"] == {
        "target": v,
        "workers": 4,
        "on_target": 2,
        "behind": ["web-3:977", "old:1"],
        "disconnected": ["web-3:977"],
        "lag_p50_ms": 6.0,
        "lag_p99_ms": 8.0,
        "lag_max_ms": 8.0,
        "complete": False,
    }

    # no live worker: said so; an unknown namespace: exit 6
    store.client.delete("hp:{chat}:workers", "hp:{chat}:workers:info")
    rows = _lines(run_cli(redis_url, "status", "chat").out)
    assert rows[1:] == ["no live workers report on chat"]
    missing = run_cli(redis_url, "status", "nope")
    assert (missing.code, missing.out) == (6, "")
    assert missing.err == "hotparams: error: namespace 'nope' does not exist (register it first)\n"


def test_wait_returns_once_every_live_worker_runs_the_new_version(
    store: hotparams.Bus, redis_url: str, fleet: Fleet
) -> None:
    runs = [
        ["set", "chat", "temperature=0.9", "--wait"],
        ["unset", "chat", "temperature", "--wait", "--json"],
        ["rollback", "chat", "2", "--wait"],
        ["variant", "set", "chat", "cool", "tone=friendly", "--percent", "5", "--wait"],
        ["variant", "remove", "chat", "cool", "--wait", "--json"],
    ]
    for version, argv in enumerate(runs, start=2):
        started = time.monotonic()
        r = run_cli(redis_url, *argv)
        took = time.monotonic() - started
        assert (r.code, r.err) == (0, ""), argv
        assert took >= fleet.delay, argv  # it really waited for the workers
        assert store.head("chat").version == version
        if "--json" in argv:
            wait = r.json()["wait"]
            assert (wait["complete"], wait["workers"], wait["on_target"]) == (True, 2, 2)
            assert (wait["target"], wait["behind"], wait["timeout_s"]) == (version, [], 10.0)
            assert fleet.delay <= wait["waited_s"] < 5
        else:
            last = _lines(r.out)[-1]
            assert last.startswith(
                f"chat: 2/2 workers on v{version}, p50 300 ms, p99 300 ms (after "
            )


def test_wait_times_out_with_exit_7_naming_the_laggards(
    store: hotparams.Bus, redis_url: str, fleet: Fleet
) -> None:
    report(store, "stuck:9", 1, connected=False, last_error="partitioned")
    started = time.monotonic()
    r = run_cli(redis_url, "set", "chat", "tone=friendly", "--wait", "--timeout", "1")
    assert r.code == 7
    assert time.monotonic() - started >= 1  # it waited (how long exactly: --json, below)
    assert _lines(r.out) == ["chat: version 1 -> 2", 'tone "plain" -> "friendly"']
    assert r.err == (
        "hotparams: error: not every worker applied version 2 of 'chat' within 1 s: "
        "1 of 3 behind: stuck:9 (v1, disconnected)\n"
    )
    assert store.head("chat").version == 2  # the change itself is made
    r = run_cli(redis_url, "set", "chat", "tone=plain", "--wait", "--timeout", "0.5", "--json")
    assert r.code == 7
    wait = r.json()["wait"]
    assert (wait["complete"], wait["workers"], wait["on_target"]) == (False, 3, 2)
    assert 0.5 <= wait["waited_s"] < 1.5 and wait["timeout_s"] == 0.5
    assert (wait["behind"], wait["disconnected"]) == (["stuck:9"], ["stuck:9"])
    assert r.err.count("\n") == 1 and "stuck:9 (v1, disconnected)" in r.err


def test_wait_with_no_live_worker_succeeds_and_says_there_is_nothing_to_wait_for(
    store: hotparams.Bus, redis_url: str
) -> None:
    report(store, "killed:1", 1, ttl=0.05)  # a dead worker's report expires by itself
    time.sleep(0.1)
    r = run_cli(redis_url, "set", "chat", "tone=friendly", "--wait")
    assert (r.code, r.err) == (0, "")
    assert (
        _lines(r.out)[-1] == "chat: no live workers report on this namespace: nothing to wait for"
    )
    before = dump_all(store.client)
    r = run_cli(redis_url, "set", "chat", "tone=friendly", "--wait", "--json")
    assert r.code == 0
    doc = r.json()
    assert (doc["changed"], doc["wait"]["workers"], doc["wait"]["complete"]) == (False, 0, True)
    assert dump_all(store.client) == before  # nothing changed, nothing written
