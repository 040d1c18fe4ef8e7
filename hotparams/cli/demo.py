"""``hotparams demo``: a fleet of chat workers on this machine, a series of
live changes, and each worker converging on each one, in the terminal.

It runs on the Redis at ``--url`` / ``HOTPARAMS_URL`` when one is given, else
on an embedded one (see :mod:`hotparams.demo`), ends by itself and leaves no
process or temporary file behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Group
from rich.live import Live as RichLive
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from ..bus import Bus, connect
from ..demo import (
    DemoError,
    Embedded,
    Fleet,
    WorkerView,
    fleet_model,
    merge_reports,
    start_backend,
    terminate_as_interrupt,
)
from ..errors import HotParamsError
from ..fleet import Convergence, convergence
from ..snapshot import Change
from .context import State, state_of
from .render import changes_table, variants_summary

__all__ = ["demo"]

#: how long one change may take to reach every worker before the demo gives up
CONVERGE_TIMEOUT = 10.0
MODELS = ("claude-sonnet", "gpt-4o", "gpt-4o-mini")


@dataclass
class Outcome:
    title: str
    version: int
    conv: Convergence | None
    took_ms: float | None


class Demo:
    """The script: changes, each followed until every worker runs it."""

    def __init__(self, state: State, bus: Bus, fleet: Fleet, namespace: str, pace: float) -> None:
        self.out = state.out
        self.bus = bus
        self.fleet = fleet
        self.namespace = namespace
        self.pace = pace
        self.outcomes: list[Outcome] = []

    # ------------------------------------------------------------ measuring

    def measure(self, target: int) -> tuple[list[WorkerView], Convergence | None]:
        """Each worker's view, with its fleet report where there is one."""
        views = self.fleet.views()
        pids = {v.pid for v in views}
        try:
            head = self.bus.head(self.namespace)
            reports = [r for r in self.bus.workers(self.namespace) if r.pid in pids]
        except HotParamsError:
            return views, None
        conv = convergence(self.namespace, target, head.epoch, reports, head) if reports else None
        return merge_reports(views, reports), conv

    def table(self, views: list[WorkerView], target: int) -> Table:
        t = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
        for name, justify in [
            ("worker", "left"),
            ("version", "left"),
            ("model", "left"),
            ("temp", "right"),
            ("client", "right"),
            ("lag", "right"),
            (f"requests (v{target})", "left"),
        ]:
            t.add_column(name, justify=justify)  # type: ignore[arg-type]
        for v in views:
            on = v.version >= target
            mark = Text(f"v{v.version} ✓" if on else f"v{v.version} …", "green" if on else "yellow")
            lag = _ms(v.lag_ms) if on else ""
            served = v.requests_at(target)
            ordered = sorted(served.items(), key=lambda item: item[0] or "")  # the base first
            split = " · ".join(f"{name or 'base'} {n}" for name, n in ordered)
            t.add_row(
                v.name,
                mark,
                v.model,
                f"{v.temperature:g}" if v.temperature is not None else "",
                f"#{v.client}",
                lag,
                split or "0",
            )
        return t

    def summary_line(self, views: list[WorkerView], conv: Convergence | None, target: int) -> Text:
        on = sum(v.version >= target for v in views)
        style = "bold green" if on == len(views) else "bold"
        line = Text(f"{on}/{len(views)} on v{target}", style)
        if conv is not None and conv.lag_p50_ms is not None:
            line.append(
                f"   lag p50 {_ms(conv.lag_p50_ms)}  p99 {_ms(conv.lag_p99_ms)}  "
                f"max {_ms(conv.lag_max_ms)}  (workers' reports)"
            )
        elif on == len(views):
            lags = [v.lag_ms for v in views if v.lag_ms is not None]
            if lags:
                line.append(f"   lag max {_ms(max(lags))}  (workers' logs)")
        return line

    # ------------------------------------------------------------ the steps

    def follow(self, title: str, version: int) -> None:
        """Show the fleet until every worker runs ``version``, then for ``pace`` s more."""
        started = time.monotonic()
        done_at: float | None = None
        views, conv = self.measure(version)
        with RichLive(console=self.out, refresh_per_second=12, transient=False) as live:
            while True:
                views, conv = self.measure(version)
                live.update(
                    Group(self.table(views, version), self.summary_line(views, conv, version))
                )
                complete = all(v.version >= version for v in views) and (
                    conv is None or conv.complete
                )
                now = time.monotonic()
                if complete and done_at is None:
                    done_at = now
                if done_at is not None and now - done_at >= self.pace:
                    break
                if now - started > CONVERGE_TIMEOUT:
                    raise DemoError(f"not every worker applied version {version} within 10 s")
                problem = self.fleet.failed()
                if problem:
                    raise DemoError(problem)
                time.sleep(0.05)
        self.out.print()
        took = (
            conv.lag_max_ms
            if conv is not None
            else max((v.lag_ms for v in views if v.lag_ms is not None), default=None)
        )
        self.outcomes.append(Outcome(title, version, conv, took))

    def step(self, number: int, title: str, write: Callable[[], int], note: str = "") -> int:
        before = self.bus.head(self.namespace).version
        version = write()
        self.out.print()
        self.out.print(
            Text.assemble((f"{number}. {title}", "bold cyan"), f"   v{before} -> v{version}")
        )
        change = self.change_of(version)
        if change is not None and change.changes:
            self.out.print(changes_table(change.changes))
        if change is not None and change.variants is not None:
            self.out.print(Padding(variants_summary(change.variants), (0, 0, 0, 2), expand=False))
        if note:
            self.out.print(Text(f"  {note}", "dim"))
        self.follow(title, version)
        return version

    def change_of(self, version: int) -> Change | None:
        for change in self.bus.history(self.namespace, limit=5):
            if change.version == version:
                return change
        return None

    def refused(self, number: int, title: str, values: dict[str, Any]) -> None:
        before = self.bus.head(self.namespace).version
        self.out.print()
        self.out.print(Text(f"{number}. {title}", "bold cyan"))
        try:
            self.bus.set(self.namespace, values, author="demo", reason=title)
        except HotParamsError as exc:
            self.out.print(Text(f"  refused: {exc}", "red"))
        after = self.bus.head(self.namespace).version
        self.out.print(f"  still version {after}: nothing was written, no worker was disturbed")
        assert after == before

    def run(self) -> None:
        ns, bus = self.namespace, self.bus
        start = bus.get(ns)
        model = next(m for m in MODELS if m != start.values.get("model"))
        temperature = 0.3 if start.values.get("temperature") != 0.3 else 0.5
        self.step(
            1,
            "switch the model",
            lambda: bus.set(ns, {"model": model}, author="demo", reason="switch the model"),
            "the model goes with each request: no client is rebuilt",
        )
        self.step(
            2,
            "tweak the temperature",
            lambda: bus.set(ns, {"temperature": temperature}, author="demo", reason="cooler"),
        )
        self.refused(3, "a bad value is refused", {"temperature": 5})
        self.step(
            4,
            "A/B test: half the users get a warmer gpt-4o",
            lambda: bus.set_variant(
                ns, "warm", {"model": "gpt-4o", "temperature": 0.9}, percent=50, author="demo"
            ),
            "each request takes the snapshot of its user: base or variant 'warm'",
        )
        self.step(
            5,
            "rotate the API key",
            lambda: bus.set(ns, {"api_key": "sk-demo-rotated-1234"}, author="demo"),
            "a connection field: each worker rebuilds its LLM client (client #2)",
        )
        self.step(
            6,
            f"roll back to version {start.version}",
            lambda: bus.rollback(ns, start.version, author="demo", reason="back to the start"),
            "a rollback is a new version: the old values (no variant, the old key) come back",
        )

    def summary(self) -> Table:
        t = Table(title="every change, on every worker", box=box.SIMPLE_HEAD, title_justify="left")
        t.add_column("change")
        t.add_column("version", justify="right")
        t.add_column("workers", justify="right")
        t.add_column("lag p50", justify="right")
        t.add_column("lag p99", justify="right")
        t.add_column("all on it", justify="right")
        for o in self.outcomes:
            conv = o.conv
            n = len(self.fleet.workers)
            t.add_row(
                o.title,
                str(o.version),
                f"{conv.on_target}/{conv.workers}" if conv else f"{n}/{n}",
                _ms(conv.lag_p50_ms if conv else None),
                _ms(conv.lag_p99_ms if conv else None),
                _ms(o.took_ms),
            )
        return t


def _with_console(script: Demo, url: str, port: int) -> None:
    """Serve the console on the demo fleet and show the workers until Ctrl-C."""
    from ..console.server import ConsoleServer, login_user

    user = login_user()
    bus = connect(url)
    models = [(script.namespace, fleet_model())]  # its validator is Python-only
    server = ConsoleServer(bus, [user], port=port, models=models).start()
    out = script.out
    try:
        out.print(Text(f"console: {server.url}ns/{script.namespace}", "bold"))
        out.print(f"sign in as {user.name} (admin) with this token: {user.token}", soft_wrap=True)
        out.print("change a parameter there and watch each worker apply it; Ctrl-C stops")
        with RichLive(console=out, refresh_per_second=4, transient=False) as live:
            while True:
                target = script.bus.head(script.namespace).version
                views, conv = script.measure(target)
                summary = script.summary_line(views, conv, target)
                live.update(Group(script.table(views, target), summary))
                problem = script.fleet.failed()
                if problem:
                    raise DemoError(problem)
                time.sleep(0.25)
    except KeyboardInterrupt:
        out.print("stopping: the console, then the workers")
    finally:
        server.close()
        bus.close()


def _ms(value: float | None) -> str:
    """A lag: reports carry whole milliseconds (commit and apply times in ms)."""
    if value is None:
        return ""
    if value < 1:
        return "<1 ms"
    return f"{value:.0f} ms" if value == int(value) else f"{value:.1f} ms"


def _url_given(ctx: typer.Context, state: State) -> str | None:
    parent = ctx.parent
    source = parent.get_parameter_source("url") if parent is not None else None
    if source is not None and source.name == "DEFAULT":
        return None
    return state.url


def demo(
    ctx: typer.Context,
    workers: Annotated[
        int, typer.Option("--workers", min=1, max=8, help="Chat worker processes to start.")
    ] = 3,
    embedded: Annotated[
        str,
        typer.Option(
            "--embedded",
            envvar="HOTPARAMS_DEMO_EMBEDDED",
            help="Without --url/HOTPARAMS_URL: auto (redis-server if on PATH, else "
            "fakeredis), redis-server or fakeredis.",
        ),
    ] = "auto",
    pace: Annotated[
        float, typer.Option("--pace", min=0, max=10, help="Seconds to watch after each change.")
    ] = 1.5,
    namespace: Annotated[
        str, typer.Option("--namespace", help="The namespace the demo fleet uses.")
    ] = "demo-chat",
    console: Annotated[
        bool,
        typer.Option(
            "--console",
            help="Instead of the scripted changes: keep the fleet running with the operators' "
            "console open on it, and show each worker's values until Ctrl-C.",
        ),
    ] = False,
    console_port: Annotated[
        int, typer.Option("--console-port", min=0, max=65535, help="The console's port.")
    ] = 8600,
) -> None:
    """Start a fleet of chat workers here, change their parameters live, watch them converge."""
    state = state_of(ctx)
    if embedded not in ("auto", "redis-server", "fakeredis"):
        raise typer.BadParameter("auto, redis-server or fakeredis", param_hint="--embedded")
    kind: Embedded = embedded  # type: ignore[assignment]
    out = state.out
    began = time.monotonic()
    with terminate_as_interrupt():
        backend = start_backend(_url_given(ctx, state), kind)
        try:
            out.print(
                Text(f"hotparams demo: {workers} chat workers, namespace '{namespace}'", "bold")
            )
            out.print(f"Redis: {backend.description}")
            _run(state, backend.url, namespace, workers, pace, console_port if console else None)
        finally:
            backend.close()
    took = time.monotonic() - began
    if backend.kind == "url":
        out.print(f"namespace '{namespace}' stays in that Redis: hotparams history {namespace}")
    stopped = "Redis stopped, " if backend.kind != "url" else ""
    out.print(f"{stopped}temporary files removed; the demo took {took:.1f} s")


def _run(
    state: State, url: str, namespace: str, size: int, pace: float, console_port: int | None
) -> None:
    out = state.out
    bus = connect(url, retry_attempts=3, retry_deadline=5.0)
    bus.bind(namespace, fleet_model())
    fleet = Fleet(url, namespace, size)
    try:
        fleet.start()
        if not fleet.wait(lambda vs: all(v.ready for v in vs), 30):
            raise DemoError("the workers did not start within 30 s")
        first = fleet.views()[0]
        pids = ", ".join(f"{v.name} (pid {v.pid})" for v in fleet.views())
        out.print(f"workers: {pids}; each serves a simulated chat request every 50 ms")
        out.print(
            f"all ready at version {first.version}: model {first.model}, "
            f"temperature {first.temperature:g}"
        )
        script = Demo(state, bus, fleet, namespace, pace)
        if console_port is not None:
            _with_console(script, url, console_port)
        else:
            script.run()
            out.print()
            out.print(script.summary())
    finally:
        views = fleet.stop()
        bus.close()
        stopped = ", ".join(
            f"{v.name} exit {v.exit_code} ({sum(v.served.values())} requests)" for v in views
        )
        out.print(f"workers stopped (SIGTERM): {stopped}")
    if any(v.exit_code != 0 for v in views):
        raise DemoError("a worker did not stop cleanly")
