"""The machinery of ``hotparams demo``: a Redis to run on, and a fleet of
chat worker processes whose progress the demo follows.

A Redis: the one at ``HOTPARAMS_URL`` when given, else an embedded one that
needs no install: a private ``redis-server`` (:class:`~hotparams.server.LocalRedis`)
when one is on PATH, else fakeredis's TCP server in a thread of this process.

The fleet: ``python -m hotparams.demo.worker --log json`` processes (the
chat worker shipped in the package, which the example fleet's
``workers/chat_worker.py`` runs too), each logging one JSON event per line on
stdout; a reader thread per worker folds those into a :class:`WorkerView`.
Which version each worker runs, and with what lag, comes from the
workers' own fleet reports (:meth:`hotparams.Bus.workers`) when they are
there, else from those events.  Everything started is stopped, and every
temporary file removed, by :meth:`Fleet.stop` and :meth:`Backend.close`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Literal

from ..errors import DemoError
from ..fleet import WorkerReport
from ..server import LocalRedis, free_port, redis_server_binary

__all__ = [
    "Backend",
    "DemoError",
    "Embedded",
    "Fleet",
    "WorkerView",
    "fleet_model",
    "start_backend",
]

Embedded = Literal["auto", "redis-server", "fakeredis"]

#: how long a stopped worker may take before it is killed
STOP_TIMEOUT = 10.0


# ---------------------------------------------------------------- Redis


@dataclass
class Backend:
    """The Redis the demo runs on; ``close()`` stops what the demo started."""

    url: str
    description: str
    kind: Literal["url", "redis-server", "fakeredis"]
    _close: Callable[[], None] = field(default=lambda: None, repr=False)

    def close(self) -> None:
        close, self._close = self._close, lambda: None
        close()


def start_backend(url: str | None, embedded: Embedded = "auto") -> Backend:
    """The Redis at ``url``, else an embedded one (``embedded`` chooses which)."""
    if url:
        from ..config import redact_url

        return Backend(url, f"the Redis at {redact_url(url)} (HOTPARAMS_URL)", "url")
    if embedded == "redis-server" or (embedded == "auto" and redis_server_binary()):
        if redis_server_binary() is None:
            raise DemoError("redis-server is not on PATH (try --embedded fakeredis)")
        server = LocalRedis().start()
        return Backend(
            server.url,
            f"a private redis-server on 127.0.0.1:{server.port}, started for the demo",
            "redis-server",
            server.close,
        )
    return _fakeredis_backend()


def _fakeredis_backend() -> Backend:
    # optional dependencies (the "demo" extra): fakeredis, and lupa for its Lua
    if importlib.util.find_spec("fakeredis") is None or importlib.util.find_spec("lupa") is None:
        raise DemoError(
            "no redis-server on PATH and fakeredis[lua] is not installed: "
            "pip install 'hotparams[demo]', install redis-server, or set HOTPARAMS_URL"
        )
    import fakeredis

    port = free_port()
    server = fakeredis.TcpFakeServer(("127.0.0.1", port), server_type="redis")
    thread = threading.Thread(target=server.serve_forever, name="demo-fakeredis", daemon=True)
    thread.start()

    def close() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return Backend(
        f"redis://127.0.0.1:{port}/0",
        f"fakeredis's TCP server on 127.0.0.1:{port}, in this process (no redis-server on PATH)",
        "fakeredis",
        close,
    )


# ---------------------------------------------------------------- the fleet


def fleet_model() -> type[Any]:
    """The fleet's parameter model (:mod:`hotparams.demo.params`), for the
    demo's writes: its model validator is Python-only, so the demo writes
    with the model, as a service's admin would (Redis refuses raw writers
    there)."""
    from .params import ChatParams

    return ChatParams


@dataclass
class WorkerView:
    """What the demo knows of one worker process."""

    name: str
    pid: int
    ready: bool = False
    version: int = 0
    lag_ms: float | None = None
    lag_from: str = ""
    model: str = ""
    temperature: float | None = None
    client: int = 0
    rebuilds: int = 0
    #: requests served, by (version, variant or None for the base)
    served: Counter[tuple[int, str | None]] = field(default_factory=Counter)
    exit_code: int | None = None

    def requests_at(self, version: int) -> Counter[str | None]:
        out: Counter[str | None] = Counter()
        for (v, variant), n in self.served.items():
            if v == version:
                out[variant] += n
        return out


class _Worker:
    def __init__(self, name: str, proc: subprocess.Popen[str], errors: IO[str]) -> None:
        self.name = name
        self.proc = proc
        self.errors = errors
        self.lock = threading.Lock()
        self.view = WorkerView(name, proc.pid)
        self.reader = threading.Thread(target=self._read, name=f"demo-{name}", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                with self.lock:
                    self.view = _fold(self.view, event)

    def current(self) -> WorkerView:
        with self.lock:
            return replace(self.view, served=Counter(self.view.served))


def _fold(view: WorkerView, event: dict[str, Any]) -> WorkerView:
    """One JSON event of a worker (see hotparams/demo/worker.py) into its view."""
    kind = event.get("event")
    if kind in ("ready", "applied"):
        return replace(
            view,
            ready=True,
            version=max(view.version, int(event.get("version", 0))),
            lag_ms=event.get("lag_ms", view.lag_ms),
            lag_from="its log",
            model=str(event.get("model", view.model)),
            temperature=event.get("temperature", view.temperature),
            client=int(event.get("client", view.client)),
        )
    if kind == "client_rebuilt":
        return replace(view, client=int(event.get("client", 0)), rebuilds=view.rebuilds + 1)
    if kind == "request":
        view.served[(int(event.get("version", 0)), event.get("variant"))] += 1
    return view


class Fleet:
    """Chat worker processes of one namespace, started and stopped together."""

    def __init__(self, url: str, namespace: str, size: int, *, interval: float = 0.05) -> None:
        self.url = url
        self.namespace = namespace
        self.size = size
        self.interval = interval
        self.tmp = Path(tempfile.mkdtemp(prefix="hotparams-demo-"))
        self.workers: list[_Worker] = []

    def start(self) -> None:
        # the URL (which may hold a password) goes by environment, never
        # argv: any user of the host sees a process's arguments in ps
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "HOTPARAMS_URL": self.url}
        for i in range(1, self.size + 1):
            name = f"chat-{i}"
            errors = (self.tmp / f"{name}.err").open("w+")
            argv = [
                sys.executable,
                "-m",
                "hotparams.demo.worker",
                *("--namespace", self.namespace, "--name", name),
                *("--log", "json", "--interval", str(self.interval), "--reconcile", "1"),
                "--exit-with-parent",
            ]
            proc = subprocess.Popen(
                argv,
                cwd=self.tmp,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
                bufsize=1,
            )
            self.workers.append(_Worker(name, proc, errors))

    def views(self) -> list[WorkerView]:
        return [w.current() for w in self.workers]

    def failed(self) -> str | None:
        """A one-line account of a worker that exited, if one did."""
        for w in self.workers:
            code = w.proc.poll()
            if code is not None:
                w.errors.seek(0)
                tail = " ".join(w.errors.read().strip().splitlines()[-1:])
                return f"{w.name} (pid {w.proc.pid}) exited with {code}: {tail or 'no output'}"
        return None

    def wait(self, predicate: Callable[[list[WorkerView]], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.views()):
                return True
            problem = self.failed()
            if problem:
                raise DemoError(problem)
            time.sleep(0.02)
        return predicate(self.views())

    def stop(self) -> list[WorkerView]:
        """SIGTERM every worker, then SIGKILL one that outlives ``STOP_TIMEOUT``."""
        for w in self.workers:
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for w in self.workers:
            try:
                w.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
            w.reader.join(5)
            if w.proc.stdout is not None:
                w.proc.stdout.close()
            w.errors.close()
        views = [replace(w.current(), exit_code=w.proc.returncode) for w in self.workers]
        shutil.rmtree(self.tmp, ignore_errors=True)
        return views

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def merge_reports(views: list[WorkerView], reports: list[WorkerReport]) -> list[WorkerView]:
    """Each worker's version and lag from its fleet report, where it sent one
    at least as new as its log."""
    by_pid = {r.pid: r for r in reports}
    out = []
    for view in views:
        report = by_pid.get(view.pid)
        if report is not None and report.version >= view.version:
            view = replace(view, version=report.version, lag_ms=report.lag_ms, lag_from="report")
        out.append(view)
    return out


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt here, so that cleanup runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
