"""Read path: what one parameter read costs a request thread.

Every case reads the same float, in the same process, batch by batch, timed
by the thread's CPU time (``time.thread_time_ns``: on a shared machine a
longer batch is more often descheduled, and the wall clock would charge it
the other processes' time; django-constance's cases wait for Redis and are
timed by the wall clock).  A round times one batch of every case (in an
order rotated round by round), so a burst of noise lands on all cases of
that round alike.  A batch is a loop of ``n`` iterations of ``UNROLL``
copies of the read, compiled once per case (each case gets its own code
object, so CPython's inline caches of one case do not disturb another).
Reported per case: the median and p99 over rounds of the mean time per read,
and the median over rounds of the ratio to the floor measured in the same
round.

Cases:

- ``floor``: ``holder.snap.attr``, a plain object holding a plain object;
- ``live``: ``live.current.params.temperature`` (a hotparams ``Live``);
- ``snapshot_via_holder``: ``holder.snap.params.temperature`` where
  ``holder.snap`` is the Live's current snapshot: what the handle itself adds;
- ``plain_3hop``: ``holder.snap.params.attr``, three plain objects (the floor
  with the extra hop ``Snapshot.params`` has);
- ``plain_3hop_getattr``: the same, the last object's class defining
  ``__getattr__`` as pydantic's ``BaseModel`` does;
- ``locked_dict``: ``with lock: values["temperature"]``;
- ``constance_redis``: ``config.TEMPERATURE`` on django-constance's
  ``RedisBackend`` (a GET round trip per read);
- ``constance_cached``: the same on its ``CachingRedisBackend`` (TTL 1 s).

Then again while a separate process writes 1,000 updates per second to both
the hotparams namespace (``FCALL hp_set``) and the constance key.

- ``pydantic_model``: ``holder.snap.params.temperature`` where ``params`` is
  an instance of the model class as pydantic makes it (its ``__getattr__``
  hook; hotparams serves a generated subclass without it, see
  ``hotparams/fastread.py``): what the served model saves.

A/B variants (idle): ``live.for_user(user).params.temperature`` on a
namespace with a 50% variant and a 100-user allow-list, users cycled from a
list of 1,000 ids, next to ``live.current.params.temperature`` and to the
floor in the same loop shape, and ``for_user`` on a namespace without
variants; interleaved round by round like the reads above.  Every
``for_user`` call counts one exposure (sent by the handle's reporter
thread, off the measured path); the run checks that Redis counted every one.
"""

from __future__ import annotations

import atexit
import dataclasses
import dis
import json
import statistics
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hotparams

from . import peers
from .common import CTX, NS, BenchParams, loadavg, pct

UNROLL = 10
CACHE_TTL = 1.0


class Plain:
    """A plain object holding one attribute."""

    def __init__(self, attr: float) -> None:
        self.attr = attr


class PlainGetattr(Plain):
    """A plain object whose class defines ``__getattr__`` (as pydantic's BaseModel does)."""

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)


class Holder:
    def __init__(self, snap: Any) -> None:
        self.snap = snap


class SnapLike:
    def __init__(self, params: Any) -> None:
        self.params = params


Timer = Callable[[int, Any, Any], int]


def make_timer(stmt: str, clock: Callable[[], int] = time.thread_time_ns) -> Timer:
    """``timed(n, h, k)``: nanoseconds for n iterations of UNROLL copies of ``stmt``, by
    ``clock``: this thread's CPU time unless the read waits for the network."""
    body = "\n".join(textwrap.indent(stmt, " " * 8) for _ in range(UNROLL))
    source = (
        "def timed(n, h, k):\n"
        "    t0 = clock()\n"
        "    for _ in range(n):\n"
        f"{body}\n"
        "    return clock() - t0\n"
    )
    scope: dict[str, Any] = {"clock": clock}
    exec(compile(source, f"<read {stmt!r}>", "exec"), scope)
    timed: Timer = scope["timed"]
    return timed


@dataclass
class Case:
    name: str
    label: str
    stmt: str
    h: Any
    k: Any = None
    iterations: int = 5_000  # per batch; each does UNROLL reads
    waits: bool = False  # the read waits for Redis: timed by the wall clock

    def __post_init__(self) -> None:
        clock = time.perf_counter_ns if self.waits else time.thread_time_ns
        self.timer = make_timer(self.stmt, clock)

    def attribute_opcodes(self) -> list[str]:
        """The LOAD_ATTR instructions of one read, as CPython runs them now (specialised or not)."""
        ops = [
            i.opname
            for i in dis.get_instructions(self.timer, adaptive=True)
            if i.opname.startswith("LOAD_ATTR")
        ]
        return ops[: len(ops) // UNROLL]

    def batch_ns_per_read(self, scale: float) -> float:
        n = max(1, int(self.iterations * scale))
        return self.timer(n, self.h, self.k) / (n * UNROLL)


def build_cases(live: hotparams.Live[BenchParams], url: str | None) -> list[Case]:
    """The cases; the constance ones only if ``url`` is given (the ``bench`` extra)."""
    cases = [
        Case(
            "floor",
            "`holder.snap.attr` (plain objects: the floor)",
            "h.snap.attr",
            Holder(Plain(0.7)),
        ),
        Case("live", "`live.current.params.temperature`", "h.current.params.temperature", live),
        Case(
            "snapshot_via_holder",
            "`holder.snap.params.temperature` (the Live's snapshot in a plain holder)",
            "h.snap.params.temperature",
            Holder(live.current),
        ),
        Case(
            "plain_3hop",
            "`holder.snap.params.attr` (three plain objects)",
            "h.snap.params.attr",
            Holder(SnapLike(Plain(0.7))),
        ),
        Case(
            "plain_3hop_getattr",
            "the same, last class defines `__getattr__`",
            "h.snap.params.attr",
            Holder(SnapLike(PlainGetattr(0.7))),
        ),
        Case(
            "locked_dict",
            '`with lock: values["temperature"]`',
            'with h:\n    k["temperature"]',
            threading.Lock(),
            {"temperature": 0.7},
        ),
        Case(
            "pydantic_model",
            "`holder.snap.params.temperature`, `params` of the model class as pydantic makes it",
            "h.snap.params.temperature",
            Holder(dataclasses.replace(live.current, params=BenchParams(**live.current.values))),
        ),
        Case("loop", "(empty loop: overhead per read)", "pass", None),
    ]
    if url is not None:
        rd = peers.config(url, cached=False)
        rd.TEMPERATURE = 0.7  # stored, so a read is one GET (a missing key also writes the default)
        cached = peers.config(url, cached=True, ttl=CACHE_TTL)
        cases += [
            Case(
                "constance_redis",
                "django-constance `config.TEMPERATURE`, RedisBackend (GET per read)",
                "h.TEMPERATURE",
                rd,
                iterations=10,
                waits=True,
            ),
            Case(
                "constance_cached",
                f"django-constance `config.TEMPERATURE`, CachingRedisBackend (TTL {CACHE_TTL:g} s)",
                "h.TEMPERATURE",
                cached,
                iterations=200,
                waits=True,
            ),
        ]
    return cases


def measure(
    cases: list[Case], live: hotparams.Live[BenchParams], rounds: int, scale: float
) -> dict[str, Any]:
    """Interleaved rounds of every case: per case median/p99 ns, paired ratio to the floor."""
    times: dict[str, list[float]] = {c.name: [] for c in cases}
    ratios: dict[str, list[float]] = {c.name: [] for c in cases}
    holder = next(c for c in cases if c.name == "snapshot_via_holder")
    for c in cases:  # warm up: specialise, fill caches, connect
        c.batch_ns_per_read(0.1)
    load_before = loadavg()
    for r in range(rounds):
        holder.h.snap = live.current
        shift = r % len(cases)
        this_round: dict[str, float] = {}
        for c in cases[shift:] + cases[:shift]:
            this_round[c.name] = c.batch_ns_per_read(scale)
        for name, ns in this_round.items():
            times[name].append(ns)
            ratios[name].append(ns / this_round["floor"])
    loop = statistics.median(times["loop"])
    floor = statistics.median(times["floor"])
    out: dict[str, Any] = {"loop_ns": loop, "loadavg": [load_before, loadavg()], "cases": {}}
    for c in cases:
        if c.name == "loop":
            continue
        med = statistics.median(times[c.name])
        out["cases"][c.name] = {
            "ns_p50": med,
            "ns_p99": pct(times[c.name], 0.99),
            "ratio": statistics.median(ratios[c.name]),
            "ratio_p99": pct(times[c.name], 0.99) / pct(times["floor"], 0.99),
            "ratio_net_of_loop": (med - loop) / max(floor - loop, 1e-9),
        }
    return out


# ---------------------------------------------------------------- A/B variants

VNS = "bench-ab"
USERS = [f"user-{i}" for i in range(1000)]


def make_user_timer(stmt: str) -> Timer:
    """``timed(n, h, users)``: nanoseconds for n passes over the users, ``stmt`` once per user."""
    source = (
        "def timed(n, h, k):\n"
        "    t0 = thread_time_ns()\n"
        "    for _ in range(n):\n"
        "        for u in k:\n"
        f"            {stmt}\n"
        "    return thread_time_ns() - t0\n"
    )
    scope: dict[str, Any] = {"thread_time_ns": time.thread_time_ns}
    exec(compile(source, f"<per user {stmt!r}>", "exec"), scope)
    timed: Timer = scope["timed"]
    return timed


def for_user(url: str, rounds: int, scale: float) -> dict[str, Any]:
    """``for_user`` next to ``current`` and the floor, per call, in one loop shape."""
    setup = hotparams.connect(url)
    setup.register(VNS, BenchParams)
    setup.set_variant(VNS, "cool", {"temperature": 0.3}, percent=50)
    setup.set_variant(VNS, "vip", {"model": "gpt-4o"}, users=USERS[::10])
    live = setup.watch(VNS, BenchParams)
    plain = setup.watch(NS, BenchParams)
    counted_before = sum(setup.exposures(VNS).values())
    cases: dict[str, tuple[Timer, Any]] = {
        "floor": (make_user_timer("h.snap.attr"), Holder(Plain(0.7))),
        "current": (make_user_timer("h.current.params.temperature"), live),
        "for_user": (make_user_timer("h.for_user(u).params.temperature"), live),
        "for_user_no_variants": (make_user_timer("h.for_user(u).params.temperature"), plain),
    }
    passes = max(1, int(50 * scale))
    times: dict[str, list[float]] = {name: [] for name in cases}
    ratios: dict[str, list[float]] = {name: [] for name in cases}
    calls = 0
    try:
        for timer, h in cases.values():  # warm up: specialise, fill the users' picks
            timer(passes, h, USERS)
        calls += passes * len(USERS)
        names = list(cases)
        for r in range(rounds):
            this: dict[str, float] = {}
            for name in names[r % len(names) :] + names[: r % len(names)]:
                timer, h = cases[name]
                this[name] = timer(passes, h, USERS) / (passes * len(USERS))
            calls += passes * len(USERS)
            for name, value in this.items():
                times[name].append(value)
                ratios[name].append(value / this["current"])
        split: dict[str, int] = {}
        for user in USERS:
            variant = str(live.for_user(user).variant)
            split[variant] = split.get(variant, 0) + 1
        calls += len(USERS)
    finally:
        live.close()  # sends the exposure counts still pending
        plain.close()
    exposures = sum(setup.exposures(VNS).values()) - counted_before
    setup.close()
    return {
        "users": len(USERS),
        "rounds": rounds,
        "calls_per_batch": passes * len(USERS),
        "cases": {
            name: {
                "ns_p50": statistics.median(times[name]),
                "ns_p99": pct(times[name], 0.99),
                "x_current": statistics.median(ratios[name]),
                "x_floor": statistics.median(
                    [a / b for a, b in zip(times[name], times["floor"], strict=True)]
                ),
            }
            for name in cases
        },
        "split": split,
        "for_user_calls": calls,
        "exposures_counted": exposures,
    }


# ---------------------------------------------------------------- OpenFeature


def flagd_available() -> bool:
    """Whether flagd's OpenFeature provider is installed (the ``bench`` extra)."""
    try:
        import openfeature.contrib.provider.flagd  # noqa: F401
    except ImportError:
        return False
    return True


def _flagd_client(folder: Path) -> Any:
    """An OpenFeature client on flagd's in-process provider, evaluating a flag
    file of its own (``temperature``: 0.7; no network once loaded)."""
    from openfeature import api
    from openfeature.contrib.provider.flagd import FlagdProvider
    from openfeature.contrib.provider.flagd.config import ResolverType
    from openfeature.provider import ProviderStatus

    flags = folder / "flags.json"
    flags.write_text(
        json.dumps(
            {
                "flags": {
                    "temperature": {
                        "state": "ENABLED",
                        "variants": {"default": 0.7, "cool": 0.3},
                        "defaultVariant": "default",
                    }
                }
            }
        )
    )
    provider = FlagdProvider(
        resolver_type=ResolverType.IN_PROCESS, offline_flag_source_path=str(flags)
    )
    api.set_provider(provider, domain="bench-flagd")
    client = api.get_client("bench-flagd")
    deadline = time.monotonic() + 10
    while client.get_provider_status() != ProviderStatus.READY:
        if time.monotonic() > deadline:
            raise RuntimeError("flagd's in-process provider did not get ready")
        time.sleep(0.01)
    return client


def openfeature_reads(url: str, rounds: int, scale: float) -> dict[str, Any]:
    """``client.get_float_value("temperature", 0.7, context)`` through the
    hotparams provider and through flagd's in-process provider, next to
    ``live.for_user(user)`` and ``live.current``, in one loop shape (per
    user of USERS, the user as the context's targeting key)."""
    import tempfile

    from openfeature import api
    from openfeature.evaluation_context import EvaluationContext

    from hotparams.openfeature import HotParamsProvider

    bus = hotparams.connect(url)
    bus.register(NS, BenchParams)
    live = bus.watch(NS, BenchParams)
    api.set_provider(HotParamsProvider(live), domain="bench-hotparams")
    ours = api.get_client("bench-hotparams")
    contexts = [EvaluationContext(targeting_key=u) for u in USERS]
    folder = tempfile.TemporaryDirectory()
    try:
        theirs = _flagd_client(Path(folder.name))
        served = live.current.params.temperature
        assert ours.get_float_value("temperature", 0.0, contexts[0]) == served
        assert theirs.get_float_value("temperature", 0.0, contexts[0]) == 0.7
        cases: dict[str, tuple[Timer, Any]] = {
            "current": (make_user_timer("h.current.params.temperature"), live),
            "for_user": (make_user_timer("h.for_user(u.targeting_key).params.temperature"), live),
            "hotparams": (make_user_timer('h.get_float_value("temperature", 0.7, u)'), ours),
            "flagd": (make_user_timer('h.get_float_value("temperature", 0.7, u)'), theirs),
        }
        passes = max(1, int(5 * scale))
        times: dict[str, list[float]] = {name: [] for name in cases}
        for timer, h in cases.values():  # warm up
            timer(passes, h, contexts)
        names = list(cases)
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                timer, h = cases[name]
                times[name].append(timer(passes, h, contexts) / (passes * len(contexts)))
    finally:
        api.shutdown()
        # flagd's file watcher thread looks at its file once more after the
        # shutdown: the file goes when this process ends
        atexit.register(folder.cleanup)
        live.close()
        bus.close()
    flagd_version = _version_of("openfeature-provider-flagd")
    return {
        "rounds": rounds,
        "calls_per_batch": passes * len(contexts),
        "flagd_provider": flagd_version,
        "sdk": _version_of("openfeature-sdk"),
        "cases": {
            name: {
                "ns_p50": statistics.median(values),
                "ns_p99": pct(values, 0.99),
                "x_flagd": statistics.median(
                    [a / b for a, b in zip(values, times["flagd"], strict=True)]
                ),
            }
            for name, values in times.items()
        },
    }


def _version_of(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def writer(url: str, rate: float, go: Any, stop: Any, result: Any, constance: bool) -> None:
    """Write ``rate`` updates per second (FCALL hp_set, the redis-cli path, and constance's key)."""
    client = hotparams.connect(url).client
    go.wait()
    interval = 1.0 / rate
    start = time.perf_counter()
    sent = 0
    while not stop.is_set():
        due = start + sent * interval
        now = time.perf_counter()
        if now < due:
            time.sleep(due - now)
        value = 0.5 + (sent % 100) / 100
        pipe = client.pipeline(transaction=False)
        pipe.execute_command("FCALL", "hp_set", "1", NS, "temperature", str(value))
        if constance:
            pipe.set(peers.PREFIX + peers.KEY, peers.encoded(value))
        pipe.execute()
        sent += 1
    result.put(sent / (time.perf_counter() - start))


def run(url: str, *, quick: bool, rate: float = 1000.0, scale: float = 1.0) -> dict[str, Any]:
    """Idle, then under ``rate`` updates/s; ``scale`` shrinks the batches (the smoke test)."""
    rounds = 60 if quick else 300
    use_constance = peers.available()
    setup = hotparams.connect(url)
    setup.register(NS, BenchParams)
    setup.close()
    # the writer is forked before this process has a Live (a fork would start its listener anew)
    go, stop, rates = CTX.Event(), CTX.Event(), CTX.Queue()
    proc = CTX.Process(target=writer, args=(url, rate, go, stop, rates, use_constance), daemon=True)
    proc.start()
    bus = hotparams.connect(url)
    live = bus.watch(NS, BenchParams)
    try:
        cases = build_cases(live, url if use_constance else None)
        idle = measure(cases, live, rounds, scale)
        go.set()
        time.sleep(0.5)  # let the stream settle
        before = live.status()
        busy = measure(cases, live, rounds, scale)
        after = live.status()
        stop.set()
        busy["write_rate_per_s"] = rates.get(timeout=30)
        busy["versions_applied"] = after.applied - before.applied
        busy["resyncs"] = after.resyncs - before.resyncs
    finally:
        stop.set()
        go.set()
        proc.join(10)
        live.close()
        bus.close()
    variants = for_user(url, rounds // 3, scale)
    features = openfeature_reads(url, rounds // 10, scale) if flagd_available() else None
    return {
        "unroll": UNROLL,
        "rounds": rounds,
        "labels": {c.name: c.label for c in cases if c.name != "loop"},
        "reads_per_batch": {c.name: max(1, int(c.iterations * scale)) * UNROLL for c in cases},
        "constance_cache_ttl_s": CACHE_TTL if use_constance else None,
        # after the runs: which attribute reads CPython specialised (3.11+: adaptive bytecode)
        "attribute_opcodes": {c.name: c.attribute_opcodes() for c in cases if "." in c.stmt},
        "idle": idle,
        "busy": busy,
        "busy_rate_target": rate,
        "for_user": variants,
        "openfeature": features,
    }
