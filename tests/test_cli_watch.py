"""``hotparams watch``: a live tail, run as a subprocess, stopped with SIGINT."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

import hotparams
from hotparams.server import LocalRedis
from tests.models import ChatParams

ROOT = Path(__file__).resolve().parent.parent
HOTPARAMS = str(Path(sys.executable).parent / "hotparams")
SECRET = "sk-live-WATCHED-SECRET"
REDIS_CLI = "/usr/bin/redis-cli"


class Watcher:
    """``hotparams watch`` in a subprocess, its output lines read by threads."""

    def __init__(self, url: str, *args: str) -> None:
        env = {**os.environ, "HOTPARAMS_URL": url, "COLUMNS": "100"}
        self.proc = subprocess.Popen(
            [HOTPARAMS, "watch", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        self.out: queue.Queue[str] = queue.Queue()
        self.err: queue.Queue[str] = queue.Queue()
        self.err_lines: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.pumps = [
            threading.Thread(target=self._pump, args=(stream, sink), daemon=True)
            for stream, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))
        ]
        for pump in self.pumps:
            pump.start()

    @staticmethod
    def _pump(stream: IO[str], sink: queue.Queue[str]) -> None:
        with stream:
            for line in stream:
                sink.put(line.rstrip("\n"))

    def lines(self, count: int, timeout: float = 10.0) -> list[str]:
        deadline = time.monotonic() + timeout
        got: list[str] = []
        while len(got) < count:
            got.append(self.out.get(timeout=max(0.01, deadline - time.monotonic())))
        return got

    def wait_err(self, text: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            line = self.err.get(timeout=max(0.01, deadline - time.monotonic()))
            self.err_lines.append(line)
            if text in line:
                return line

    def stop(self) -> int:
        """SIGINT, as Ctrl-C sends; returns the exit code."""
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=10)
        for pump in self.pumps:  # drained and closed at the end of the output
            pump.join(timeout=5)
        while not self.err.empty():
            self.err_lines.append(self.err.get())
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pump in self.pumps:
            pump.join(timeout=5)


@pytest.fixture
def watchers() -> Iterator[list[Watcher]]:
    started: list[Watcher] = []
    yield started
    for w in started:
        w.kill()


def changes(doc: dict[str, Any]) -> dict[str, list[Any]]:
    return {k: [v["old"], v["new"]] for k, v in doc["changes"].items()}


def test_watch_prints_each_change_in_order_and_stops_cleanly_on_ctrl_c(
    redis_url: str, watchers: list[Watcher], redis_server: LocalRedis
) -> None:
    bus = hotparams.connect(redis_url)
    bus.register("chat", ChatParams)
    as_json = Watcher(redis_url, "chat", "--json")
    human = Watcher(redis_url, "chat")
    watchers += [as_json, human]
    for w in watchers:
        assert "chat at version 1" in w.wait_err("Ctrl-C to stop")

    bus.set("chat", {"temperature": 0.9, "model": "gpt-4o"}, author="ana", reason="warmer")
    bus.set("chat", {"api_key": SECRET}, author="ana")
    fcall = ["FCALL", "hp_set", "1", "chat", "tone", "friendly"]
    cli = subprocess.run(
        [REDIS_CLI, "-p", str(redis_server.port), *fcall],
        capture_output=True,
        text=True,
        check=True,
    )
    assert cli.stdout.strip() == "4"
    bus.rollback("chat", 2, author="ana")

    docs = [json.loads(line) for line in as_json.lines(4)]
    assert [(d["version"], d["op"], d["author"]) for d in docs] == [
        (2, "set", "ana"),
        (3, "set", "ana"),
        (4, "set", ""),
        (5, "rollback", "ana"),
    ]
    assert changes(docs[0]) == {"model": ["gpt-4o-mini", "gpt-4o"], "temperature": [0.7, 0.9]}
    assert docs[0]["reason"] == "warmer"
    assert changes(docs[1]) == {"api_key": ["******", "******"]}
    assert docs[2]["source"] == "redis-cli"
    assert (docs[3]["target"], changes(docs[3])) == (
        2,
        {"api_key": ["******", "******"], "tone": ["friendly", "plain"]},
    )

    text = [" ".join(line.split()) for line in human.lines(10)]
    assert text[0].startswith("v2 ") and text[0].endswith(
        "set by ana via " + docs[0]["source"] + ' "warmer"'
    )
    assert text[1:3] == ['model "gpt-4o-mini" -> "gpt-4o"', "temperature 0.7 -> 0.9"]
    assert text[4] == "api_key ****** -> ******"
    assert text[5].endswith("set by - via redis-cli")  # redis-cli gave no @author
    assert text[7].endswith("rollback to 2 by ana via " + docs[3]["source"])

    for w in watchers:
        assert w.stop() == 0
        assert w.err_lines[-1] == "[watch] stopped"
        assert not any("Traceback" in line for line in w.err_lines)
    assert all(SECRET not in json.dumps(d) for d in docs)
    assert human.out.empty() and as_json.out.empty()
    bus.close()


@pytest.mark.slow
def test_watch_survives_a_redis_restart_and_follows_the_new_history(
    private_redis: LocalRedis, watchers: list[Watcher]
) -> None:
    bus = hotparams.connect(private_redis.url)
    bus.register("chat", ChatParams)
    w = Watcher(private_redis.url, "chat", "--json", "--probe-every", "0.5")
    watchers.append(w)
    w.wait_err("Ctrl-C to stop")
    bus.set("chat", {"temperature": 1.0})
    first = json.loads(w.lines(1)[0])
    assert (first["version"], first["epoch"]) == (2, bus.head("chat").epoch)

    private_redis.restart()  # no persistence: keys and functions are gone
    w.wait_err("connection lost")
    w.wait_err("does not exist")
    bus.register("chat", ChatParams, author="ops")  # a new history (epoch)
    bus.set("chat", {"temperature": 1.5}, author="ops")
    w.wait_err("new history")

    docs = [json.loads(line) for line in w.lines(2)]
    assert [(d["version"], d["op"]) for d in docs] == [(1, "init"), (2, "set")]
    assert docs[0]["epoch"] == docs[1]["epoch"] == bus.head("chat").epoch != first["epoch"]
    assert changes(docs[1]) == {"temperature": [0.7, 1.5]}
    assert w.stop() == 0
    bus.close()
