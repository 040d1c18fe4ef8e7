"""BENCHMARKS.md and the summary table, rendered from a result file (never by hand)."""

from __future__ import annotations

import math
from typing import Any

READ_TARGET = 1.5
FOR_USER_TARGET = 3.0
PROPAGATION_TARGET = 1.5
PROPAGATION_WORKERS = 16
WRITE_TARGET = 0.9
#: Bus.set_many against a bare pipeline of the same calls
PIPELINE_TARGET = 0.85
#: issue 17: one `hotparams get` call, ms
STARTUP_TARGET_MS = 250
#: issue 17: the pytest phase of scripts/test, s
SUITE_TARGET_S = 120
#: a worker's CPU per applied version against a bare subscriber's per message
APPLY_CPU_TARGET = 1.5


# ---------------------------------------------------------------- formatting


def _nan(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def ns(x: float) -> str:
    if _nan(x):
        return "-"
    if x >= 1e6:
        return f"{x / 1e6:.2f} ms"
    if x >= 1e3:
        return f"{x / 1e3:.1f} µs"
    return f"{x:.1f} ns"


def ms(x: float) -> str:
    if _nan(x):
        return "-"
    return f"{x:.2f} ms" if x < 100 else f"{x:.0f} ms"


def times(x: float) -> str:
    if _nan(x):
        return "-"
    if x >= 100:
        return f"{x:,.0f}x"
    return f"{x:.2f}x"


def size(x: float) -> str:
    if _nan(x):
        return "-"
    if abs(x) >= 1000 * 1024:
        return f"{x / 1024 / 1024:.1f} MiB"
    if abs(x) >= 1024:
        return f"{x / 1024:.1f} KiB"
    return f"{x:.0f} B"


def rate(x: float) -> str:
    return "-" if _nan(x) else f"{x:,.0f}"


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def yes(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**missed**")


# ---------------------------------------------------------------- targets


def _fleet(results: dict[str, Any], k: int) -> dict[str, Any] | None:
    for f in results.get("propagation", {}).get("fleets", []):
        if f["workers"] == k:
            return dict(f)
    return None


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    read = results.get("read")
    if read:
        idle, busy = read["idle"]["cases"], read["busy"]["cases"]
        out.append(
            {
                "name": "read",
                "target": f"`live.current.params.x` ≤ {READ_TARGET:g}x a plain attribute read",
                "measured": (
                    f"{times(idle['live']['ratio'])} idle ({ns(idle['live']['ns_p50'])} vs "
                    f"{ns(idle['floor']['ns_p50'])}); {times(busy['live']['ratio'])} under "
                    f"{rate(read['busy']['write_rate_per_s'])} updates/s"
                ),
                "met": idle["live"]["ratio"] <= READ_TARGET
                and busy["live"]["ratio"] <= READ_TARGET,
            }
        )
    fu = (read or {}).get("for_user")
    if fu:
        c = fu["cases"]
        out.append(
            {
                "name": "for_user",
                "target": f"`live.for_user(user)` ≤ {FOR_USER_TARGET:g}x `live.current`",
                "measured": (
                    f"{times(c['for_user']['x_current'])} ({ns(c['for_user']['ns_p50'])} vs "
                    f"{ns(c['current']['ns_p50'])}, `.params.temperature` read in both)"
                ),
                "met": c["for_user"]["x_current"] <= FOR_USER_TARGET,
            }
        )
    for k in (PROPAGATION_WORKERS, 64):
        fleet = _fleet(results, k)
        if not fleet:
            continue
        out.append(
            {
                "name": "propagation" if k == PROPAGATION_WORKERS else f"propagation-{k}",
                "target": (
                    f"{k} workers: p99 publish-to-applied ≤ "
                    f"{PROPAGATION_TARGET:g}x the bare pub/sub fan-out of the same run"
                ),
                "measured": (
                    f"{times(fleet['ratio_per_worker_p99'])} "
                    f"({ms(fleet['live_per_worker_ms']['p99'])} vs "
                    f"{ms(fleet['bare_per_worker_ms']['p99'])}); p50 "
                    f"{times(fleet['ratio_per_worker_p50'])}"
                ),
                "met": fleet["ratio_per_worker_p99"] <= PROPAGATION_TARGET,
            }
        )
    fleet = _fleet(results, PROPAGATION_WORKERS)
    cpu = (fleet or {}).get("worker_cpu_ms_per_update") or {}
    if cpu.get("live") and cpu.get("bare"):
        x = cpu["live"]["p50"] / cpu["bare"]["p50"]
        out.append(
            {
                "name": "apply",
                "target": (
                    f"worker CPU per applied version ≤ {APPLY_CPU_TARGET:g}x a bare "
                    "subscriber's per message"
                ),
                "measured": (
                    f"{times(x)} ({ms(cpu['live']['p50'])} vs {ms(cpu['bare']['p50'])}, "
                    f"median of {PROPAGATION_WORKERS} workers)"
                ),
                "met": x <= APPLY_CPU_TARGET,
            }
        )
    sc = results.get("scale") or {}
    if sc.get("bare"):
        f, b = sc["fleet"], sc["bare"]
        cpu = f["redis_cpu_ms_per_update"] / b["redis_cpu_ms_per_publish"]
        idle = f["idle_load"].get("requests_per_s", float("nan")) / f["processes"]
        out += [
            {
                "name": "scale-latency",
                "target": f"{f['handles']:,} handles: p99 publish-to-applied ≤ 100 ms",
                "measured": (
                    f"{ms(f['per_handle_ms']['p99'])} (bare {ms(b['per_subscriber_ms']['p99'])})"
                ),
                "met": f["per_handle_ms"]["p99"] <= 100,
            },
            {
                "name": "scale-cpu",
                "target": "Redis CPU per change ≤ 2x the bare fan-out to as many subscribers",
                "measured": (
                    f"{times(cpu)} ({f['redis_cpu_ms_per_update']:.1f} ms vs "
                    f"{b['redis_cpu_ms_per_publish']:.1f} ms)"
                ),
                "met": cpu <= 2,
            },
            {
                "name": "scale-idle",
                "target": "idle Redis load ≤ 0.2 requests/s per process",
                "measured": (
                    f"{idle:.1f} requests/s per process "
                    f"({f['handles'] // f['processes']} handles each)"
                ),
                "met": idle <= 0.2,
            },
        ]
        fr = sc.get("from_replicas")
        if fr:
            p, r = fr["primary"], fr["replicas"]
            out.append(
                {
                    "name": "scale-replicas",
                    "target": (
                        f"fan-out from {fr['replica_count']} replicas against 1 primary alone, "
                        "same subscriber count: latency and the primary's CPU (measured)"
                    ),
                    "measured": (
                        f"p99 {ms(r['per_handle_ms']['p99'])} vs {ms(p['per_handle_ms']['p99'])}; "
                        f"master CPU {r['redis_cpu_ms_per_update']:.1f} ms vs "
                        f"{p['redis_cpu_ms_per_update']:.1f} ms per update"
                    ),
                    "met": True,
                }
            )
    write = results.get("write")
    if write:
        c = write["cases"]
        out.append(
            {
                "name": "write",
                "target": f"`Bus.set` ≥ {WRITE_TARGET:g}x a bare FCALL",
                "measured": (
                    f"{times(c['bus_set']['ratio_to_bare'])} "
                    f"({rate(c['bus_set']['changes_per_s'])} vs "
                    f"{rate(c['bare_fcall']['changes_per_s'])} changes/s); `set_many` "
                    f"{times(c['bus_set_many']['ratio_to_bare'])} of a bare pipeline"
                ),
                "met": c["bus_set"]["ratio_to_bare"] >= WRITE_TARGET,
            }
        )
        out.append(
            {
                "name": "pipeline",
                "target": f"`Bus.set_many` ≥ {PIPELINE_TARGET:g}x a bare pipeline",
                "measured": (
                    f"{times(c['bus_set_many']['ratio_to_bare'])} "
                    f"({rate(c['bus_set_many']['changes_per_s'])} vs "
                    f"{rate(c['bare_pipeline']['changes_per_s'])} changes/s)"
                ),
                "met": c["bus_set_many"]["ratio_to_bare"] >= PIPELINE_TARGET,
            }
        )
    st = results.get("startup")
    if st:
        c = st["cases"]["hotparams_get"]
        out.append(
            {
                "name": "startup",
                "target": f"`hotparams get` ≤ {STARTUP_TARGET_MS:g} ms",
                "measured": (
                    f"p50 {c['ms_p50']:.0f} ms (bare redis-py read "
                    f"{st['cases']['bare_redis']['ms_p50']:.0f} ms, `python -c pass` "
                    f"{st['cases']['python']['ms_p50']:.0f} ms)"
                ),
                "met": c["ms_p50"] <= STARTUP_TARGET_MS,
            }
        )
    su = results.get("suite")
    if su:
        n = su["counts"].get("passed", 0)
        out.append(
            {
                "name": "suite",
                "target": f"the pytest phase of `scripts/test` ≤ {SUITE_TARGET_S:g} s",
                "measured": (
                    f"{su['pytest_seconds']:.0f} s, {n:,} tests passed"
                    + (f", {su['counts']['failed']} failed" if su["counts"].get("failed") else "")
                    + f" ({su['workers']} workers on {su['cores']} cores)"
                ),
                "met": su["pytest_seconds"] <= SUITE_TARGET_S and su["returncode"] == 0,
            }
        )
    return out


def startup_why(st: dict[str, Any]) -> str:
    c = st["cases"]
    imports = st.get("imports_ms") or {}
    listed = ", ".join(f"{name} {ms_:.0f} ms" for name, ms_ in imports.items())
    return (
        f"`hotparams get` takes {c['hotparams_get']['ms_p50']:.0f} ms (p50 of "
        f"{c['hotparams_get']['runs']} runs) where a bare redis-py client reading the same "
        f"hash takes {c['bare_redis']['ms_p50']:.0f} ms and the interpreter alone "
        f"{c['python']['ms_p50']:.0f} ms. Cumulative import times in one run "
        f"(`python -X importtime`): {listed}. `import redis` is most of the bare client's "
        "time above the interpreter: redis-py 8 imports its asyncio client, its maintenance "
        "notifications and its observability module with it"
        + (
            ", which loads the OpenTelemetry SDK (installed here, by the dev extra)"
            if st.get("otel_sdk_installed")
            else ""
        )
        + "; pydantic (the settings and the models), typer and the CLI's modules come on top. "
        + f"What is above the bare client is hotparams' own: "
        f"{c['hotparams_get']['ms_p50'] - c['bare_redis']['ms_p50']:.0f} ms (its CLI "
        "modules, the typer app, the settings, the reply to the table)"
        + (
            f"; the bare client alone is above the target ({c['bare_redis']['ms_p50']:.0f} ms "
            f"against {STARTUP_TARGET_MS} ms): no CLI that imports redis-py gets under it here"
            if c["bare_redis"]["ms_p50"] > STARTUP_TARGET_MS
            else ""
        )
    )


def suite_why(su: dict[str, Any]) -> str:
    slow = "; ".join(su.get("slowest", [])[:3])
    return (
        f"the pytest phase took {su['pytest_seconds']:.0f} s in {su['workers']} workers on "
        f"{su['cores']} cores, {su['cpu_seconds']:.0f} s of CPU ({su['last_line']}); "
        f"slowest: {slow}"
    )


def read_why(read: dict[str, Any]) -> str:
    c = read["idle"]["cases"]
    live, floor = c["live"], c["floor"]
    via, p3, p3g = c["snapshot_via_holder"], c["plain_3hop"], c["plain_3hop_getattr"]
    model = c.get("pydantic_model")
    ops = read.get("attribute_opcodes") or {}

    def opcodes(name: str) -> str:
        return ", ".join(f"`{op}`" for op in ops.get(name, [])) or "?"

    pydantic = (
        f" The same read of an instance of the model class as pydantic makes it costs "
        f"{ns(model['ns_p50'])} ({times(model['ratio'])} the floor; bytecode "
        f"{opcodes('pydantic_model')})."
        if model
        else ""
    )
    return (
        f"`live.current.params.temperature` costs {ns(live['ns_p50'])} per read, "
        f"{times(live['ratio'])} the floor `holder.snap.attr` ({ns(floor['ns_p50'])}); the same "
        f"snapshot through a plain holder costs {ns(via['ns_p50'])}, three plain objects "
        f"(`holder.snap.params.attr`: the floor plus the hop to `params`) {ns(p3['ns_p50'])} "
        f"({times(p3['ratio'])} the floor), and the same three objects, the last one's class "
        f"defining `__getattr__`, {ns(p3g['ns_p50'])} ({times(p3g['ratio'])}). pydantic's "
        "`BaseModel` defines `__getattr__`, so on CPython 3.11 its type's attribute hook is not "
        "the generic one and attribute reads on its instances are not specialised; hotparams "
        "serves a generated subclass of the model that gets the generic hook back when the "
        "model needs none of what `__getattr__` does (private attributes, extra fields; see "
        "`hotparams/fastread.py`)." + pydantic + " CPython's bytecode after the run: "
        f"`live.current.params.temperature` ran as {opcodes('live')}, the plain three-object "
        f"chain as {opcodes('plain_3hop')}, the chain with `__getattr__` as "
        f"{opcodes('plain_3hop_getattr')} (an instruction without a specialised suffix such as "
        "`_INSTANCE_VALUE`, `_SLOT` or `_WITH_HINT` is a read CPython did not specialise)."
    )


def for_user_why(fu: dict[str, Any]) -> str:
    c = fu["cases"]
    return (
        f"`live.for_user(user).params.temperature` costs {ns(c['for_user']['ns_p50'])} per call "
        f"against {ns(c['current']['ns_p50'])} for `live.current.params.temperature` in the "
        f"same loop ({times(c['for_user']['x_current'])}). After a user's first call for a "
        "version, `for_user` is one Python method call, one dict lookup of the user's pick "
        "(their snapshot and their variant's exposure counter) and one `next()` on that "
        "counter: CPython 3.11 spends about 20 ns on the call of a method that returns at "
        "once, 15 ns on a lookup among 1,000 users and 20-25 ns on the count (micro-"
        "benchmarks of each step on this machine). The count is part of the contract (one "
        "exposure per call, exact in Redis)."
    )


def propagation_why(results: dict[str, Any]) -> str:
    k = _fleet(results, PROPAGATION_WORKERS)
    if not k:
        return ""
    n = k["workers"]
    cores = results["meta"]["machine"]["cores"] or 1
    cpu = k["worker_cpu_ms_per_update"]
    live_cpu, bare_cpu = cpu["live"]["p50"], cpu["bare"]["p50"]
    reports = k["redis_calls_per_update"].get("fcall", 1.0) - 1  # bus.set's own FCALL left out
    blocks = k.get("ratio_per_worker_p99_blocks") or []
    spread = (
        f" Per block of {k['updates'] // max(1, len(blocks))} updates the p99 ratio ranged "
        f"{times(min(blocks))} to {times(max(blocks))}."
        if blocks
        else ""
    )
    return (
        f"Each Live worker used {live_cpu:.2f} ms of CPU per update (median of the {n} "
        f"workers' process CPU time over the update phase / updates) against {bare_cpu:.2f} ms "
        "for a bare subscriber (both include the benchmark's own report of its timestamp "
        "through a multiprocessing queue). Applying an event is decoding it, validating the "
        "values with the model, building the snapshot, swapping it, the callback thread and the "
        f"fleet report (Redis saw {reports:.1f} FCALLs per update besides the one of `bus.set`: "
        f"the workers' debounced `hp_report`s). With {n} workers on {cores} cores, one update "
        f"costs the Live workers {n * live_cpu:.1f} ms of CPU against {n * bare_cpu:.1f} ms for "
        f"the bare ones, to share {cores} cores with Redis and the publisher: the last Live "
        f"worker applies at p50 {ms(k['live_last_worker_ms']['p50'])} against "
        f"{ms(k['bare_last_worker_ms']['p50'])} for the last bare subscriber. On the write side "
        f"`bus.set` takes p50 {ms(k['bus_set_ms']['p50'])} against "
        f"{ms(k['publish_ms']['p50'])} for a bare `SPUBLISH` (validation by the model, then the "
        "Lua function checks, versions and audits before it publishes)."
        + spread
        + " The p99 of both kinds carries the noise of the shared machine."
    )


def write_why(write: dict[str, Any]) -> str:
    c = write["cases"]
    s, b = c["bus_set"], c["bare_fcall"]
    server = s["server_us_per_change"] - b["server_us_per_change"]
    client = (s["client_us_per_change_p50"] - s["server_us_per_change"]) - (
        b["client_us_per_change_p50"] - b["server_us_per_change"]
    )
    return (
        f"`Bus.set` takes {s['client_us_per_change_p50']:.0f} µs per change (p50) against "
        f"{b['client_us_per_change_p50']:.0f} µs for the bare FCALL. Redis spends "
        f"{s['server_us_per_change']:.0f} µs vs {b['server_us_per_change']:.0f} µs of that "
        "(INFO commandstats): "
        + (
            f"{server:+.0f} µs in Redis, because `Bus.set` also sends its request id "
            "(`@rid`), which the function records for exactly-once retries, and the marker "
            "of a model-validated write; the bare FCALL sends neither. "
            if server > 5
            else "about the same in Redis. "
        )
        + f"{client:+.0f} µs are the client's: validation by the model merged with the "
        "version it applies to (and the model's checks), encoding, the operation layers."
    )


# ---------------------------------------------------------------- sections


def summary(results: dict[str, Any]) -> str:
    """The short table (README): one line per comparison, ratios and absolutes."""
    rows = _read_rows(results.get("read"))
    rows += _rest_rows(results)
    return table(["what", "hotparams", "next to", "ratio"], rows)


def _read_rows(read: dict[str, Any] | None) -> list[list[str]]:
    rows: list[list[str]] = []
    if read:
        c = read["idle"]["cases"]
        rows.append(
            [
                "read a parameter (idle)",
                f"`live.current.params.x`: {ns(c['live']['ns_p50'])}",
                f"plain attribute {ns(c['floor']['ns_p50'])}",
                times(c["live"]["ratio"]),
            ]
        )
        for name, label in (
            ("locked_dict", "locked dict"),
            ("constance_cached", "django-constance cached (TTL 1 s)"),
            ("constance_redis", "django-constance Redis (GET per read)"),
        ):
            if name in c:
                rows.append(
                    [
                        "",
                        "",
                        f"{label} {ns(c[name]['ns_p50'])}",
                        f"{times(c[name]['ratio'])} floor, "
                        f"{times(c[name]['ns_p50'] / c['live']['ns_p50'])} Live",
                    ]
                )
    fu = (read or {}).get("for_user")
    if fu:
        c = fu["cases"]
        rows.append(
            [
                "a user's A/B snapshot",
                f"`live.for_user(user)`: {ns(c['for_user']['ns_p50'])}",
                f"`live.current` {ns(c['current']['ns_p50'])} (same loop)",
                times(c["for_user"]["x_current"]),
            ]
        )
    of = (read or {}).get("openfeature")
    if of:
        c = of["cases"]
        rows.append(
            [
                "an OpenFeature evaluation",
                f"hotparams' provider {ns(c['hotparams']['ns_p50'])}",
                f"flagd in-process {ns(c['flagd']['ns_p50'])}",
                times(c["hotparams"]["x_flagd"]),
            ]
        )
    return rows


def _rest_rows(results: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []
    for f in results.get("propagation", {}).get("fleets", []):
        rows.append(
            [
                f"propagation, {f['workers']} worker process{'es' if f['workers'] > 1 else ''}",
                f"p50 {ms(f['live_per_worker_ms']['p50'])}, "
                f"p99 {ms(f['live_per_worker_ms']['p99'])}",
                f"bare pub/sub p50 {ms(f['bare_per_worker_ms']['p50'])}, "
                f"p99 {ms(f['bare_per_worker_ms']['p99'])}",
                f"p50 {times(f['ratio_per_worker_p50'])}, p99 {times(f['ratio_per_worker_p99'])}",
            ]
        )
    for f in results.get("propagation", {}).get("fleets", []):
        load = f.get("idle_load")
        if load:
            rows.append(
                [
                    f"idle Redis load, {_n(f['workers'], 'worker')}",
                    f"{load['requests_per_s']:.1f} requests/s, "
                    f"{load['redis_cpu_percent']:.2f} % Redis CPU",
                    "",
                    "",
                ]
            )
    for p in results.get("propagation", {}).get("polling", []):
        load = p["idle_load"] or {}
        st = p["staleness_ms"]
        rows.append(
            [
                "",
                "",
                f"{p['pollers']} pollers at {p['interval_s']:g} s: "
                f"{rate(load.get('requests_per_s', float('nan')))} requests/s, "
                f"{load.get('redis_cpu_percent', float('nan')):.2f} % Redis CPU; "
                f"staleness p50 {ms(st['p50'])}, p99 {ms(st['p99'])}",
                "",
            ]
        )
    sc = results.get("scale")
    if sc:
        f = sc["fleet"]
        m = sc["memory"]
        rows.append(
            [
                f"{f['handles']} AsyncLive handles ({f['processes']} processes)",
                f"p50 {ms(f['per_handle_ms']['p50'])}, p99 {ms(f['per_handle_ms']['p99'])}",
                f"Redis {size(f['redis_memory_per_handle_bytes'])}/handle, "
                f"{f['redis_cpu_ms_per_update']:.1f} ms CPU/update",
                "",
            ]
        )
        rows.append(
            [
                "Redis memory",
                f"{size(m['per_namespace_bytes'])}/namespace, "
                f"{size(m['per_version_bytes'])}/version",
                "",
                "",
            ]
        )
    write = results.get("write")
    if write:
        c = write["cases"]
        rows.append(
            [
                "write, sequential",
                f"`Bus.set` {rate(c['bus_set']['changes_per_s'])}/s",
                f"bare FCALL {rate(c['bare_fcall']['changes_per_s'])}/s",
                times(c["bus_set"]["ratio_to_bare"]),
            ]
        )
        rows.append(
            [
                "write, pipelined x100",
                f"`Bus.set_many` {rate(c['bus_set_many']['changes_per_s'])}/s",
                f"bare pipeline {rate(c['bare_pipeline']['changes_per_s'])}/s",
                times(c["bus_set_many"]["ratio_to_bare"]),
            ]
        )
    st = results.get("startup")
    if st:
        c = st["cases"]
        rows.append(
            [
                "a CLI call",
                f"`hotparams get` {c['hotparams_get']['ms_p50']:.0f} ms",
                f"bare redis-py read {c['bare_redis']['ms_p50']:.0f} ms",
                times(c["hotparams_get"]["ms_p50"] / c["bare_redis"]["ms_p50"]),
            ]
        )
    return rows


def _startup(st: dict[str, Any]) -> str:
    labels = {
        "python": "`python -c pass` (the interpreter)",
        "bare_redis": "`python -c` importing redis-py and reading the head hash",
        "hotparams_get": "`hotparams get bench` (the console script)",
    }
    rows = [
        [labels[name], f"{c['ms_p50']:.0f} ms", f"{c['ms_p90']:.0f} ms", f"{c['ms_min']:.0f} ms"]
        for name, c in st["cases"].items()
    ]
    imports = ", ".join(f"{k} {v:.0f} ms" for k, v in (st.get("imports_ms") or {}).items())
    return (
        table(["process", "p50", "p90", "min"], rows)
        + f"\n\nEach a fresh process, {st['rounds']} rounds in a rotated order. "
        f"Cumulative import times of one `hotparams get` (`-X importtime`): {imports}."
    )


def _openfeature(of: dict[str, Any]) -> str:
    labels = {
        "current": "`live.current.params.temperature`",
        "for_user": "`live.for_user(user).params.temperature`",
        "hotparams": "OpenFeature `client.get_float_value(...)`, hotparams' provider",
        "flagd": "OpenFeature `client.get_float_value(...)`, flagd's in-process provider",
    }
    rows = [
        [
            labels[name],
            ns(c["ns_p50"]),
            ns(c["ns_p99"]),
            times(c["x_flagd"]) if name in ("hotparams", "flagd") else "",
        ]
        for name, c in of["cases"].items()
    ]
    return (
        "OpenFeature, one evaluation per user of the same 1,000 (the user as the "
        "evaluation context's targeting key), next to flagd's provider evaluating a "
        f"flag file in process (openfeature-provider-flagd {of['flagd_provider']}, "
        f"openfeature-sdk {of['sdk']}; {of['rounds']} interleaved rounds of "
        f"{of['calls_per_batch']:,} calls):\n\n"
        + table(["read", "p50", "p99", "x flagd"], rows)
        + "\n\nBoth providers answer from memory; most of an evaluation is the SDK's "
        "own work around the provider's (hooks, merging the contexts, the details object)."
    )


def _machine(results: dict[str, Any]) -> str:
    meta = results["meta"]
    m = meta["machine"]
    rows = [
        ["CPU", f"{m['cpu_model']}, {m['cores']} cores"],
        ["memory", f"{m['memory_gib']} GiB"],
        ["OS", m["platform"]],
        [
            "versions",
            f"Python {m['python']}, Redis {meta.get('redis', '?')}, redis-py {m['redis_py']}, "
            f"pydantic {m['pydantic']}, Django {m['django']}, django-constance "
            f"{m['django_constance']}",
        ],
        [
            "commit",
            f"`{m['git_commit']}`"
            + (
                f" (with uncommitted changes to {', '.join(m['uncommitted'])})"
                if m.get("uncommitted")
                else ""
            ),
        ],
        ["command", f"`.venv/bin/{meta['command']}` ({meta['mode']}, {meta['total_seconds']} s)"],
        ["date", meta["date"]],
        [
            "load average (1/5/15 min)",
            f"{_load(meta['loadavg_start'])} at the start, {_load(meta['loadavg_end'])} at the end",
        ],
    ]
    return table(["", ""], rows)


def _load(values: list[float]) -> str:
    return " / ".join(f"{x:.2f}" for x in values) if values else "?"


def _read(read: dict[str, Any]) -> str:
    idle, busy = read["idle"], read["busy"]
    rows = []
    for name, label in read["labels"].items():
        i, b = idle["cases"][name], busy["cases"][name]
        rows.append(
            [
                label,
                ns(i["ns_p50"]),
                ns(i["ns_p99"]),
                times(i["ratio"]),
                ns(b["ns_p50"]),
                ns(b["ns_p99"]),
                times(b["ratio"]),
            ]
        )
    head = ["read", "idle p50", "idle p99", "x floor", "busy p50", "busy p99", "x floor"]
    return (
        table(head, rows)
        + "\n\nTime per read (the reading thread's CPU time; the wall clock for constance's "
        "cases, which wait for Redis): "
        f"median and p99 over {read['rounds']} rounds of the mean of a batch "
        f"({read['reads_per_batch']['floor']:,} reads for the in-process cases, "
        f"{read['reads_per_batch'].get('constance_cached', 0):,} for constance's cached backend, "
        f"{read['reads_per_batch'].get('constance_redis', 0):,} for its Redis backend); "
        "`x floor` is the median over rounds of the ratio to the floor measured in the same "
        f"round. The loop itself costs {ns(idle['loop_ns'])} per read (included). Busy: a separate "
        f"process wrote {rate(busy['write_rate_per_s'])} updates/s to both hotparams and "
        f"constance; the Live handle applied {busy['versions_applied']:,} versions during the "
        f"busy rounds ({busy['resyncs']} re-reads)."
    )


def _for_user(fu: dict[str, Any]) -> str:
    labels = {
        "floor": "`holder.snap.attr` (the floor)",
        "current": "`live.current.params.temperature`",
        "for_user": "`live.for_user(user).params.temperature` (2 variants)",
        "for_user_no_variants": "`live.for_user(user).params.temperature` (no variants)",
    }
    rows = [
        [
            label,
            ns(fu["cases"][name]["ns_p50"]),
            ns(fu["cases"][name]["ns_p99"]),
            times(fu["cases"][name]["x_current"]),
            times(fu["cases"][name]["x_floor"]),
        ]
        for name, label in labels.items()
    ]
    split = ", ".join(f"{k} {v}" for k, v in sorted(fu["split"].items()))
    return (
        "A/B variants: one call per user, users cycled from a list of "
        f"{fu['users']:,} ids (a 50% variant and a 100-user allow-list), {fu['rounds']} "
        f"interleaved rounds of {fu['calls_per_batch']:,} calls per case:\n\n"
        + table(["read", "p50", "p99", "x current", "x floor"], rows)
        + f"\n\nSplit of the {fu['users']:,} users: {split}. Exposures counted in Redis: "
        f"{fu['exposures_counted']:,} of {fu['for_user_calls']:,} calls."
    )


def _propagation(prop: dict[str, Any]) -> str:
    rows = []
    for f in prop["fleets"]:
        lw, bw = f["live_per_worker_ms"], f["bare_per_worker_ms"]
        ll, bl = f["live_last_worker_ms"], f["bare_last_worker_ms"]
        missing = f["missing"]["live"] + f["missing"]["bare"]
        rows.append(
            [
                str(f["workers"]),
                f"{ms(lw['p50'])} / {ms(lw['p99'])}",
                f"{ms(bw['p50'])} / {ms(bw['p99'])}",
                f"{times(f['ratio_per_worker_p50'])} / {times(f['ratio_per_worker_p99'])}",
                f"{ms(ll['p50'])} / {ms(ll['p99'])}",
                f"{ms(bl['p50'])} / {ms(bl['p99'])}",
                f"{ms(f['live_callback_per_worker_ms']['p50'])}",
                f"{ms(f['bus_set_ms']['p50'])} / {ms(f['publish_ms']['p50'])}",
                f"{f['worker_cpu_ms_per_update']['live']['p50']:.2f} / "
                f"{f['worker_cpu_ms_per_update']['bare']['p50']:.2f}",
                f"{f['updates']} ({missing} missing)",
            ]
        )
    head = [
        "workers",
        "hotparams p50 / p99",
        "bare pub/sub p50 / p99",
        "ratio p50 / p99",
        "hotparams last worker p50 / p99",
        "bare last worker p50 / p99",
        "hotparams callback p50",
        "`bus.set` / `SPUBLISH` p50",
        "worker CPU ms/update, hotparams / bare",
        "updates",
    ]
    loads = []
    for f in prop["fleets"]:
        load = f.get("idle_load")
        if load:
            loads.append(
                [
                    f"{_n(f['workers'], 'Live worker')} + {_n(f['workers'], 'bare subscriber')}",
                    f"{load.get('requests_per_s', float('nan')):.1f}",
                    f"{load['commands_per_s']:.1f}",
                    _by_command(load),
                    f"{load['redis_cpu_percent']:.2f} %",
                ]
            )
    polls = []
    for p in prop["polling"]:
        load = p.get("idle_load") or {}
        st, last = p["staleness_ms"], p["last_poller_ms"]
        polls.append(
            [
                f"{p['interval_s']:g} s",
                p["implementation"],
                f"{ms(st['p50'])} / {ms(st['p99'])} / {ms(st['max'])}",
                f"{ms(last['p50'])}",
                f"{p['writes']} x {p['pollers']} ({p['missing']} missing)",
            ]
        )
        if load:
            loads.append(
                [
                    f"{p['pollers']} pollers at {p['interval_s']:g} s",
                    f"{load.get('requests_per_s', float('nan')):.1f}",
                    f"{load['commands_per_s']:.1f}",
                    _by_command(load),
                    f"{load['redis_cpu_percent']:.2f} %",
                ]
            )
    calls = [
        [
            str(f["workers"]),
            ", ".join(
                f"{cmd} {n:.1f}" for cmd, n in f["redis_calls_per_update"].items() if n >= 0.05
            ),
            ", ".join(times(x) for x in f.get("ratio_per_worker_p99_blocks", [])),
        ]
        for f in prop["fleets"]
    ]
    lags = [
        [
            str(f["workers"]),
            f"{ms(lag['convergence_p50_median'])} / {ms(lag['convergence_p99_median'])}",
            f"{ms(lag['pooled']['p50'])} / {ms(lag['pooled']['p99'])}",
            f"{lag['updates']} ({lag['incomplete']} not reported by all)",
        ]
        for f in prop["fleets"]
        if (lag := f.get("reported_lag_ms"))
    ]
    reported = (
        "\n\nThe lag the workers report themselves (`applied_ms - committed_ms`, commit time by "
        "Redis's clock) as `bus.convergence` shows it, once every worker reported an update "
        "(more updates after the timed ones):\n\n"
        + table(
            ["workers", "`bus.convergence` p50 / p99", "every report p50 / p99", "updates"],
            lags,
        )
        if lags
        else ""
    )
    return (
        "Publish-to-applied latency per worker (from the call of `bus.set` / `SPUBLISH` to the "
        "swap of `current` / the bare subscriber's receipt), and for the last worker of each "
        "update:\n\n"
        + table(head, rows)
        + reported
        + "\n\nRedis commands per update (both kinds together: `bus.set`'s FCALL, the workers' "
        "fleet reports, one bare `SPUBLISH`), and the p99 ratio of consecutive blocks of updates "
        "(its spread):\n\n"
        + table(["workers", "Redis calls per update", "p99 ratio per block"], calls)
        + "\n\nPolling peers: staleness from a write to each poller seeing it\n\n"
        + table(
            ["interval", "poller", "staleness p50 / p99 / max", "last poller p50", "samples"], polls
        )
        + "\n\nRedis load of idle fleets (INFO commandstats over a window with no writes, "
        f"longer than the Live handles' {prop['reconcile_interval_s']:g} s reconcile interval "
        "where Live handles run):\n\n"
        + table(
            ["fleet", "requests/s", "commands/s", "by command (/s)", "Redis CPU"],
            loads,
        )
        + "\n\nrequests/s counts the commands clients sent (FCALL, FCALL_RO, PING, GET, ...); "
        "commands/s also counts those the Lua functions ran (INFO counts both)."
    )


def _by_command(load: dict[str, Any]) -> str:
    by = load.get("by_command_per_s") or {}
    parts = [f"{k} {v:.1f}" for k, v in sorted(by.items(), key=lambda kv: -kv[1]) if v > 0]
    return ", ".join(parts) or "-"


def scale_projection(sc: dict[str, Any]) -> str:
    """What the measured costs say of a fleet of 10,000 processes x 100 namespaces."""
    f, b = sc["fleet"], sc.get("bare")
    if not b:
        return ""
    n, p = f["handles"], f["processes"]
    per_sub = b["redis_cpu_ms_per_publish"] / n  # Redis CPU per subscriber per message
    # hotparams: the fan-out goes to one connection per process; the rest is
    # the handles' reports (and the odd re-read), per handle
    per_report = max(0.0, f["redis_cpu_ms_per_update"] - p * per_sub) / n
    idle = f["idle_load"].get("by_command_per_s") or {}
    procs, spaces = 10_000, 100
    change_ms = procs * (per_sub + per_report)  # one namespace changes: every process follows it
    interval = 5.0
    idle_per_process = (1 + 2 * spaces) / interval  # a PING per shard, a head and a report each
    return (
        f"On paper, from these figures: Redis spends {per_sub * 1000:.1f} µs of CPU per "
        f"subscribed connection per message and about {per_report * 1000:.1f} µs per fleet "
        "report (its share of an `hp_reports` call: the report's checks, HSET, ZADD). "
        f"A fleet of {procs:,} processes each following {spaces} namespaces on a cluster of "
        f"N shards holds one subscription per process and shard: {procs:,} connections per "
        "shard, whatever the namespaces. A change of one namespace reaches its "
        f"{procs:,} followers for about {change_ms:.0f} ms of CPU on the primary of its "
        f"shard ({procs * per_sub:.0f} ms of fan-out, {procs * per_report:.0f} ms of "
        "reports: one per process, since a process has one handle per namespace), whatever "
        "N: a shard carries only its own namespaces' events, so N shards take N changes at "
        "once, but not one change faster. At rest each process sends per reconcile "
        f"interval ({interval:g} s) a PING per shard, and per namespace a head read and a "
        f"heartbeat: {idle_per_process:.0f} requests/s per process, "
        f"{procs * idle_per_process:,.0f}/s for the fleet, spread over the N shards. That is "
        "where it stops scaling: the reports and head reads are per namespace (a Redis "
        "function reaches one slot, so one call cannot cover namespaces of several "
        "slots), and the per-change report cost grows with the followers. With Sentinel, "
        "`follow_replicas` moves the subscriptions and head reads to R replicas, dividing "
        "the fan-out (10,000 deliveries a change) by R; the master keeps the writes and "
        "the reports (measured above on 4 processes, where the fan-out is small; not built "
        f"for a Cluster). Measured at rest here: {sum(idle.values()):.1f} commands/s for {p} "
        f"processes of {n // p} handles."
    )


def scale_why(sc: dict[str, Any], name: str = "scale-cpu") -> str:
    f = sc["fleet"]
    calls = f.get("redis_calls_per_update", {})
    per = f["handles"] // max(1, f["processes"])
    if name == "scale-latency":
        return (
            f"each process applies the version for its {per} handles on 2 cores shared by "
            f"{f['processes']} such processes and Redis: the snapshot is built once per process "
            "(shared by its handles), but each handle still parses the event, swaps its "
            "reference, wakes its waiters and files a report; the last handle of a process "
            "waits for all the others before it"
        )
    if name == "scale-idle":
        return (
            "a process sends per reconcile interval (5 s) one PING on its subscription, one "
            "head read per namespace it follows and its heartbeats (one `hp_reports` call "
            f"per 64 handles of a namespace: {-(-per // 64)} here): at least 3 requests per "
            "interval, 0.6/s, for one handle of one namespace; 0.2/s would need the probe, "
            "the head read and the heartbeat in one request (a subscribed RESP2 connection "
            "takes only PING and (un)subscribe) or an interval of 15 s"
        )
    return (
        f"a process holds one subscription for its handles and files their reports together "
        f"(per change Redis ran {calls.get('fcall', 0):.0f} FCALLs: `hp_reports` calls of up "
        f"to 64 reports, each report with its checks, HSET and ZADD, and the write itself), "
        "so the fan-out costs one delivery per process; what remains above the bare "
        "fan-out is the reports: one per handle (each is a worker of the fleet), about "
        f"{_per_report_us(sc):.0f} µs of Redis CPU each (the difference over the handles), "
        "most of it the Lua checks that a report is strict JSON and UTF-8 (so every reader "
        "can decode what a raw writer files), its decoding by cjson and the stamp of "
        "Redis's time"
    )


def _per_report_us(sc: dict[str, Any]) -> float:
    """Redis CPU per handle's report of a change: what the fleet's change cost
    above the bare fan-out, over the handles."""
    f, b = sc["fleet"], sc.get("bare") or {}
    extra_ms = f["redis_cpu_ms_per_update"] - b.get("redis_cpu_ms_per_publish", 0.0)
    return 1000 * extra_ms / max(1, f["handles"])


def _versus_bare(sc: dict[str, Any]) -> str:
    f, b = sc["fleet"], sc["bare"]
    cpu = f["redis_cpu_ms_per_update"] / b["redis_cpu_ms_per_publish"]
    p99 = f["per_handle_ms"]["p99"] / b["per_subscriber_ms"]["p99"]
    return f"Redis CPU {times(cpu)}, p99 {times(p99)}"


def _scale(sc: dict[str, Any]) -> str:
    f, m = sc["fleet"], sc["memory"]
    rows = [
        ["handles / processes", f"{f['handles']} / {f['processes']}"],
        ["time to subscribe them all", f"{f['subscribe_seconds']:.1f} s"],
        [
            "publish-to-applied per handle p50 / p99",
            f"{ms(f['per_handle_ms']['p50'])} / {ms(f['per_handle_ms']['p99'])}",
        ],
        [
            "last handle of an update p50 / p99",
            f"{ms(f['last_handle_ms']['p50'])} / {ms(f['last_handle_ms']['p99'])}",
        ],
        ["updates (missing applies)", f"{f['updates']} ({f['missing']})"],
        *(
            [
                [
                    "the floor: as many bare subscriptions, SPUBLISH p50 / p99",
                    f"{ms(sc['bare']['per_subscriber_ms']['p50'])} / "
                    f"{ms(sc['bare']['per_subscriber_ms']['p99'])}; Redis CPU per message "
                    f"{sc['bare']['redis_cpu_ms_per_publish']:.2f} ms "
                    f"(hotparams: {_versus_bare(sc)})",
                ]
            ]
            if sc.get("bare")
            else []
        ),
        [
            "Redis memory of the subscribed fleet",
            f"{size(f['redis_memory_fleet_bytes'])} "
            f"({size(f['redis_memory_per_handle_bytes'])} per handle; connected clients "
            f"{f['connected_clients'][0]:.0f} -> {f['connected_clients'][1]:.0f})",
        ],
        [
            "Redis idle load of the fleet",
            f"{f['idle_load'].get('requests_per_s', float('nan')):.1f} requests/s "
            f"({f['idle_load']['commands_per_s']:.1f} commands/s with those run by functions), "
            f"{f['idle_load']['redis_cpu_percent']:.2f} % CPU",
        ],
        [
            "Redis CPU per update (fan-out to every handle)",
            f"{f['redis_cpu_ms_per_update']:.2f} ms",
        ],
        [
            "Redis calls per update",
            ", ".join(
                f"{c} {n:.1f}" for c, n in f.get("redis_calls_per_update", {}).items() if n >= 0.05
            ),
        ],
    ]
    mem = [
        [
            f"per namespace ({m['namespaces']} registered, {m['fields']} fields, version 1 only)",
            size(m["per_namespace_bytes"]),
            f"{size(m['per_namespace_memory_usage_bytes'])} (MEMORY USAGE of its keys)",
        ],
        [
            f"per retained version ({m['versions']} changes of one field, all retained)",
            size(m["per_version_bytes"]),
            f"version hash {size(m['version_hash_memory_usage_bytes'])} + audit entry "
            f"{size(m['audit_entry_bytes'])}",
        ],
    ]
    return (
        table(["", ""], rows)
        + "\n\nRedis memory (`used_memory` deltas):\n\n"
        + table(["what", "used_memory delta", "breakdown"], mem)
        + "\n\nA namespace at the default settings keeps up to 100 versions and about 10,000 "
        "audit entries: roughly "
        + size(
            m["per_namespace_bytes"]
            + 99 * m["version_hash_memory_usage_bytes"]
            + 10_000 * m["audit_entry_bytes"]
        )
        + " once that many changes were made (from the numbers above).\n\n"
        "The handles of a process share one subscription (and read through the pool of "
        "their `AsyncBus`), so redis-py's asyncio pool, which allows 100 connections unless "
        "told otherwise and raises `MaxConnectionsError` beyond, no longer bounds the handles "
        "of a bus (`tests/test_shared_subscription.py` runs 130 on the default pool). The "
        "benchmark still enlarges each process's pool to 4 x its handles + 10 for the "
        "reconnect storms."
        + ("\n\n" + _from_replicas(sc["from_replicas"]) if sc.get("from_replicas") else "")
        + ("\n\n" + scale_projection(sc) if sc.get("bare") else "")
    )


def _from_replicas(fr: dict[str, Any]) -> str:
    """The same fleet on Sentinel, following the master alone, then the replicas."""
    rows = []
    n = fr["replica_count"]
    for case, label in (("primary", "the master alone"), ("replicas", f"{n} replicas")):
        f = fr[case]
        others = ", ".join(f"{c:.2f}" for c in f.get("others_cpu_ms_per_update", []))
        rows.append(
            [
                label,
                f"{ms(f['per_handle_ms']['p50'])} / {ms(f['per_handle_ms']['p99'])}",
                f"{f['redis_cpu_ms_per_update']:.2f} ms",
                f"{others} ms",
                f"{f['missing']}",
            ]
        )
    p, r = fr["primary"], fr["replicas"]
    ratio = r["redis_cpu_ms_per_update"] / max(1e-9, p["redis_cpu_ms_per_update"])
    return (
        f"Fan-out from replicas (`follow_replicas=True` on a `redis+sentinel://` URL: a "
        f"master, {n} replicas, 3 sentinels on this host), the same "
        f"{p['handles']:,} handles in {p['processes']} processes, {p['updates']} updates:\n\n"
        + table(
            [
                "handles follow",
                "publish-to-applied p50 / p99",
                "master CPU per update",
                "each replica's CPU per update",
                "missing",
            ],
            rows,
        )
        + f"\n\nFollowing the replicas, the master spends {times(ratio)} the CPU per update "
        "it spends when it carries the fan-out itself: the subscriptions and the probes' "
        "head reads move to the replicas; the writes and the fleet reports (most of the "
        "cost, see above) stay on the master. With one subscription per process, the "
        "fan-out the replicas take over is one delivery per process (here "
        f"{p['processes']}), so they buy little at this size; they divide a fan-out to "
        "thousands of processes (see the projection below)."
    )


def _write(write: dict[str, Any]) -> str:
    rows = []
    for c in write["cases"].values():
        rows.append(
            [
                c["label"],
                rate(c["changes_per_s"]),
                times(c["ratio_to_bare"]),
                f"{c['call_ms_p50']:.3f} / {c['call_ms_p99']:.3f}",
                f"{c['client_us_per_change_p50']:.0f}",
                f"{c['server_us_per_change']:.1f}",
            ]
        )
    head = [
        "case",
        "changes/s",
        "x bare",
        "call p50 / p99 (ms)",
        "µs/change (client)",
        "µs/FCALL (Redis)",
    ]
    return (
        table(head, rows)
        + f"\n\n{write['rounds']} rounds of {write['changes_per_round']:,} changes per case; "
        "changes/s is the median over rounds, `x bare` the median of the per-round ratio to the "
        "bare twin; Redis's time per FCALL is `usec_per_call` of INFO commandstats."
    )


def _why(target: dict[str, Any], results: dict[str, Any]) -> str:
    name = target["name"]
    if name == "read":
        return read_why(results["read"])
    if name == "for_user":
        return for_user_why(results["read"]["for_user"])
    if name.startswith("propagation") or name == "apply":
        return propagation_why(results)
    if name.startswith("scale"):
        return scale_why(results["scale"], name)
    if name == "startup":
        return startup_why(results["startup"])
    if name == "suite":
        return suite_why(results["suite"])
    return write_why(results["write"])


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    parts = [
        "# Benchmarks",
        "",
        "Generated by `scripts/bench` from `scripts/bench/results/"
        + ("full.json" if meta["mode"] == "full" else "last.json")
        + "`: do not edit by hand, run it again. Every comparison ran side by side in this "
        "one invocation, each section on its own private `redis-server`; ratios compare "
        "numbers measured in the same round.",
        "",
        "## Machine and run",
        "",
        _machine(results),
        "",
        "Timings on 2 cores are noisy: read absolute numbers with the load average above "
        "in mind and prefer the ratios, which compare cases measured in the same round.",
        "",
        "## Targets",
        "",
    ]
    rows = [[t["target"], t["measured"], yes(t["met"])] for t in targets(results)]
    parts += [table(["target", "measured", ""], rows), ""]
    told: dict[str, str] = {}  # a reason given once, named after that
    for t in targets(results):
        if t["met"]:
            continue
        why = _why(t, results)
        if why in told:
            parts += [f"Why the {t['name']} target is missed: as the {told[why]} target.", ""]
            continue
        told[why] = t["name"]
        parts += [f"Why the {t['name']} target is missed (measured): {why}", ""]
    if "read" in results and not any(
        t["name"] == "read" and not t["met"] for t in targets(results)
    ):
        parts += [read_why(results["read"]), ""]
    parts += ["## Summary", "", summary(results), ""]
    if "read" in results:
        parts += ["## Read path", "", _read(results["read"]), ""]
        if results["read"].get("for_user"):
            parts += [_for_user(results["read"]["for_user"]), ""]
        if results["read"].get("openfeature"):
            parts += [_openfeature(results["read"]["openfeature"]), ""]
    if "propagation" in results:
        parts += ["## Propagation", "", _propagation(results["propagation"]), ""]
    if "scale" in results:
        parts += ["## Scale", "", _scale(results["scale"]), ""]
    if "startup" in results:
        parts += ["## Start-up", "", _startup(results["startup"]), ""]
    if "write" in results:
        parts += ["## Write path", "", _write(results["write"]), ""]
    parts += [
        "## How it is measured",
        "",
        "See the docstrings of `scripts/bench/reads.py`, `propagation.py`, `scale.py` and "
        "`writes.py`. In short: reads are timed in batches (unrolled loops compiled per case, "
        "by the thread's CPU time), "
        "interleaved round by round; latencies are wall-clock (`time.time()`) on one host from "
        "the publisher's call to the worker's swap of `current` (the handle's `_install` is "
        "wrapped for the timestamp) or the bare subscriber's receipt; Redis's load, CPU and "
        "memory come from its own INFO counters. django-constance is the real package, "
        "configured in-process.",
        "",
    ]
    return "\n".join(parts)
