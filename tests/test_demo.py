"""``hotparams demo`` runs to completion on each embedded Redis (redis-server,
fakeredis's TCP server) and on the Redis at HOTPARAMS_URL, and leaves no
process and no temporary file behind, also when it is stopped midway."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hotparams
from hotparams.server import redis_server_binary

from .conftest import need

BIN = Path(sys.executable).parent
HOTPARAMS = str(BIN / "hotparams")
ROOT = Path(__file__).resolve().parent.parent
ROTATED_KEY = "sk-demo-rotated-1234"  # what the demo writes; it must never be printed


def environment(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTPARAMS_")}
    env.update(TMPDIR=str(tmp), COLUMNS="100", **extra)
    return env


def group_members(pgid: int) -> list[str]:
    """Processes still in the process group ``pgid`` (the demo and all it started)."""
    left = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            left.append(f"{stat.parent.name}: {text[: text.rindex(')') + 1]}")
    return left


def run_demo(tmp_path: Path, *args: str, **env: str) -> str:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen(
        [HOTPARAMS, "demo", "--pace", "0", *args],  # no lingering after each change
        cwd=tmp_path,  # not the repository: the demo finds its fleet itself
        env=environment(tmp, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, out
    assert_clean(proc.pid, tmp, out)
    assert ROTATED_KEY not in out
    return out


def assert_clean(pgid: int, tmp: Path, out: str) -> None:
    deadline = time.monotonic() + 5
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert group_members(pgid) == [], out
    for pid in re.findall(r"\(pid (\d+)\)", out):
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    assert list(tmp.iterdir()) == [], out


def assert_full_run(out: str) -> None:
    for version in range(2, 7):
        assert f"3/3 on v{version}" in out, out
    assert "refused: invalid parameters for 'demo-chat': temperature" in out
    assert "variants: warm 50%" in out
    assert "#2" in out and "#3" in out  # the client was rebuilt on each key change only
    assert out.count(" exit 0 ") == 3, out
    assert "Redis stopped, temporary files removed" in out


@pytest.mark.slow
def test_the_demo_runs_on_a_private_redis_server(tmp_path: Path) -> None:
    need(redis_server_binary() is not None, "redis-server (on PATH)")
    out = run_demo(tmp_path, HOTPARAMS_DEMO_EMBEDDED="redis-server")
    assert "a private redis-server" in out
    assert "(workers' reports)" in out
    assert_full_run(out)


@pytest.mark.slow
def test_the_demo_falls_back_to_fakeredis_without_a_redis_server(tmp_path: Path) -> None:
    out = run_demo(tmp_path, PATH=str(BIN))  # no redis-server on this PATH
    assert "fakeredis's TCP server" in out
    assert_full_run(out)


@pytest.mark.slow
def test_the_demo_uses_the_redis_at_hotparams_url(tmp_path: Path, redis_url: str) -> None:
    out = run_demo(tmp_path, "--workers", "2", HOTPARAMS_URL=redis_url)
    assert f"the Redis at {redis_url}" in out
    assert "2/2 on v6" in out
    assert "namespace 'demo-chat' stays in that Redis" in out
    bus = hotparams.connect(redis_url)
    try:
        assert bus.head("demo-chat").version == 6
        assert bus.workers("demo-chat") == []  # the workers left the fleet when they stopped
    finally:
        bus.close()


@pytest.mark.slow
def test_a_demo_stopped_midway_cleans_up(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen(
        [HOTPARAMS, "demo", "--pace", "5", "--embedded", "fakeredis"],
        env=environment(tmp),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("1. switch the model"):
                break
        assert lines and lines[-1].startswith("1."), "".join(lines)
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out = "".join(lines) + rest
    assert proc.returncode == 130, out
    assert "workers stopped (SIGTERM)" in out
    assert_clean(proc.pid, tmp, out)


def test_an_unknown_embedded_backend_is_a_usage_error() -> None:
    from hotparams.cli import run

    assert run(["demo", "--embedded", "redis-cluster"]) == 2


@pytest.mark.slow
def test_demo_console_serves_the_console_on_the_running_fleet_and_stops_clean(
    tmp_path: Path,
) -> None:
    need(redis_server_binary() is not None, "redis-server (on PATH)")
    from .test_console import csrf_of

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen(
        [HOTPARAMS, "demo", "--console", "--console-port", "0", "--embedded", "redis-server"],
        cwd=tmp_path,
        env=environment(tmp),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "with this token:" in line:
                break
        out = "".join(lines)
        url = re.search(r"console: (http://\S+/)ns/demo-chat", out)
        token = re.search(r"with this token: (\S+)", out)
        assert url and token, out
        base = url.group(1)
        import http.cookiejar
        import json
        import urllib.parse
        import urllib.request

        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        with opener.open(base + "login", timeout=5) as r:
            form = {"csrf": csrf_of(r.read().decode()), "token": token.group(1)}
        with opener.open(base + "login", data=urllib.parse.urlencode(form).encode(), timeout=5):
            pass
        with opener.open(base + "ns/demo-chat/fleet?format=json", timeout=5) as r:
            fleet = json.loads(r.read())
        assert (fleet["total"], fleet["complete"]) == (3, True), fleet
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out = "".join(lines) + rest
    assert proc.returncode == 0, out
    assert "workers stopped (SIGTERM)" in out and out.count(" exit 0 ") == 3, out
    assert_clean(proc.pid, tmp, out)
